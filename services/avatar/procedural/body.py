"""The body below the head, dressed, in the VRM T-pose: torso, neck, arms, hands, legs, feet.

Every vertex carries a region tag (``REGION_*``) that says which chain of joints
skins it; ``rig.Weigher`` turns region and position into joint weights.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from .geometry import (
    Geometry,
    Vec3,
    add,
    grid,
    lathe,
    normalize,
    ring_angles,
    scale,
    segments_for,
    smoothstep,
    split_faces,
    sub,
    torus_path,
    tube,
)
from .rig import Skeleton, finger_bones
from .styles import Proportions

CLOTHING, COLLAR, NECK = "clothing", "collar", "neck"
TROUSERS, SHOES, HANDS = "trousers", "shoes", "hands"
_DOME = 0.3  # share of the torso parameter spent on the shoulders

# Region tags: which joint chain skins a vertex (see ``rig.Weigher``).
REGION_TORSO = 0
REGION_ARM = (1, 2)  # left, right
REGION_LEG = (3, 4)
REGION_FOOT = (5, 6)
REGION_HAND = (7, 8)
REGION_THUMB = (9, 10)
REGION_INDEX = (11, 12)
REGION_MIDDLE = (13, 14)
FINGER_REGIONS = {"Thumb": REGION_THUMB, "Index": REGION_INDEX, "Middle": REGION_MIDDLE}

# Torso below the shoulder line: (drop in body units, half width and depth as
# multiples of the shoulder half width and chest half depth, superellipse exponent).
_LOWER = (
    (0.0, 1.0, 1.0, 3.2),
    (0.07, 0.83, 1.03, 3.0),
    (0.18, 0.76, 1.04, 2.8),
    (0.33, 0.66, 0.9, 2.6),
    (0.45, 0.74, 0.96, 2.6),
    (0.53, 0.76, 0.98, 2.6),
    (0.58, 0.66, 0.9, 2.4),
    (0.62, 0.34, 0.62, 2.2),
)
_TORSO_DROP = _LOWER[-1][0]
_BELT = 0.40  # where the shirt meets the trousers, below the shoulder line (body units)


def _lower_section(drop: float) -> tuple[float, float, float]:
    for (y0, w0, d0, n0), (y1, w1, d1, n1) in itertools.pairwise(_LOWER):
        if drop <= y1:
            t = (drop - y0) / (y1 - y0)
            t = 0.5 - 0.5 * math.cos(math.pi * t)
            return w0 + (w1 - w0) * t, d0 + (d1 - d0) * t, n0 + (n1 - n0) * t
    _, w, d, n = _LOWER[-1]
    return w, d, n


class TorsoShape:
    """The torso as a stack of rounded-rectangle sections from the neck to the crotch.

    ``s`` runs from 0 at the neck opening to 1 at the crotch; ``a`` is the
    azimuth (0 forward, pi/2 the avatar's left).
    """

    def __init__(self, p: Proportions) -> None:
        self.p = p
        self.neck_r = p.neck_r * 1.02
        self.drop = p.torso_top_y - p.shoulder_y

    def section(self, s: float) -> tuple[float, float, float, float]:
        """Half width, half depth, height and superellipse exponent at ``s``."""
        p = self.p
        if s <= _DOME:
            # Trapezius and shoulder: a Bezier from the neck out and down to the arm.
            t = s / _DOME
            u = 1.0 - t
            b1, b2, b3 = 3 * u * u * t, 3 * u * t * t, t * t * t
            reach = p.shoulder_w - self.neck_r
            w = self.neck_r + reach * (b1 * 0.55 + b2 + b3)
            y = p.torso_top_y - self.drop * (b1 * 0.25 + b2 * 0.42 + b3)
            neck_d = self.neck_r * 1.02
            d = neck_d + (p.chest_d - neck_d) * math.sin(0.5 * math.pi * t) ** 0.6
            return w, d, y, 2.0 + 1.2 * t
        drop = (s - _DOME) / (1.0 - _DOME) * _TORSO_DROP
        fw, fd, n = _lower_section(drop)
        # Broad bodies are broad at the shoulders more than at the hips.
        hips = smoothstep(0.2, 0.45, drop)
        fw *= 1.0 + hips * (0.7 + 0.3 * p.width) / p.width - hips
        return p.shoulder_w * fw, p.chest_d * fd, p.shoulder_y - drop * p.body, n

    def point(self, s: float, a: float) -> Vec3:
        w, d, y, n = self.section(s)
        sa, ca = math.sin(a), math.cos(a)
        # superellipse: |x/w|^n + |z/d|^n = 1
        x = w * math.copysign(abs(sa) ** (2.0 / n), sa)
        z = d * math.copysign(abs(ca) ** (2.0 / n), ca)
        # The upper back is rounder and the chest a little forward.
        z -= 0.012 * (1.0 - abs(ca)) * (1.0 if ca > 0 else 0.0)
        return (x, y, z)


@dataclass
class Body:
    parts: dict[str, Geometry]
    torso: TorsoShape


def _tagged(geom: Geometry, tag: int) -> Geometry:
    geom.tags = [tag] * len(geom.positions)
    return geom


def _mirror(geom: Geometry, tag: int) -> Geometry:
    """The avatar's right-side copy of a left-side part (x negated, winding kept outward)."""
    out = Geometry(
        positions=[(-q[0], q[1], q[2]) for q in geom.positions],
        indices=list(geom.indices),
        normals=None,
        tags=[tag] * len(geom.positions),
        aux=list(geom.aux),
    )
    out.flip()
    return out.compute_normals()


def _sweep(
    path: list[Vec3],
    radii: list[tuple[float, float]],
    sides: int,
    reference: Vec3,
    *,
    cap_start: bool = False,
    tip: float = 0.0,
) -> Geometry:
    """A tube along ``path``; a positive ``tip`` closes the end with a rounded point."""
    end_pole = None
    if tip > 0.0:
        d = normalize(sub(path[-1], path[-2]))
        end_pole = add(path[-1], scale(d, tip))
    geom = tube(path, radii, sides, reference=reference, cap_start=cap_start, end_pole=end_pole)
    if geom.signed_volume(path[len(path) // 2]) < 0.0:
        geom.flip()
    return geom.compute_normals()


def _profile(
    stations: list[tuple[float, float, float]], count: int
) -> list[tuple[float, float, float]]:
    """Resample ``(t, a, b)`` stations at ``count`` even steps plus the stations themselves.

    Keeping the stations as rows puts geometry where the shape (and a joint) bends.
    """
    t0, t1 = stations[0][0], stations[-1][0]
    ts = {round(t0 + (t1 - t0) * i / (count - 1), 9) for i in range(count)}
    ts.update(round(t, 9) for t, _, _ in stations)
    ordered = sorted(ts, reverse=t1 < t0)
    out = []
    for t in ordered:
        for (ta, a0, b0), (tb, a1, b1) in itertools.pairwise(stations):
            if (tb - t) * (tb - ta) >= 0.0 or (tb, a1, b1) == stations[-1]:
                u = 0.0 if tb == ta else min(1.0, max(0.0, (t - ta) / (tb - ta)))
                u = 0.5 - 0.5 * math.cos(math.pi * u)
                out.append((t, a0 + (a1 - a0) * u, b0 + (b1 - b0) * u))
                break
    # Drop rows closer than a third of a step to the one before (the end row always stays).
    step = abs(t1 - t0) / (count - 1)
    kept = [out[0]]
    for row in out[1:-1]:
        if abs(row[0] - kept[-1][0]) > step / 3.0:
            kept.append(row)
    if abs(out[-1][0] - kept[-1][0]) <= step / 3.0 and len(kept) > 1:
        kept.pop()
    kept.append(out[-1])
    return kept


def _arm(sk: Skeleton, detail: float) -> dict[str, Geometry]:
    """The left sleeve and hand (arm along +X, palm down, thumb forward)."""
    b = sk.body
    r = sk.arm_radius
    sides = segments_for(16, detail, 6, even=True)
    upper = sk.at("leftUpperArm")
    elbow = sk.at("leftLowerArm")[0]
    wrist = sk.at("leftHand")[0]
    y, z = upper[1], upper[2]
    stations = [
        (upper[0] - 0.012 * b, 1.06 * r, 1.08 * r),
        (upper[0] + 0.03 * b, 1.04 * r, 1.02 * r),
        (upper[0] + 0.14 * b, 0.94 * r, 0.9 * r),
        (elbow - 0.01 * b, 0.82 * r, 0.8 * r),
        (elbow + 0.025 * b, 0.83 * r, 0.8 * r),
        (elbow + 0.07 * b, 0.86 * r, 0.8 * r),
        (wrist - 0.03 * b, 0.7 * r, 0.74 * r),
        (wrist + 0.005 * b, 0.74 * r, 0.78 * r),
    ]
    prof = _profile(stations, segments_for(16, detail, 5))
    sleeve = _sweep(
        [(t, y, z) for t, _, _ in prof],
        [(a, c) for _, a, c in prof],
        sides,
        (0.0, 0.0, 1.0),
    )
    _tagged(sleeve, REGION_ARM[0])

    ht, hw = sk.hand_thick, sk.hand_width
    knuckle = sk.at("leftIndexProximal")[0]
    hy = y - 0.003 * b
    hsides = segments_for(14, detail, 4, even=True)
    palm_st = [
        (wrist - 0.03 * b, 0.55 * r, 0.6 * r),
        (wrist + 0.01 * b, 0.8 * ht, 0.62 * hw),
        (wrist + 0.045 * b, 1.0 * ht, 0.95 * hw),
        (knuckle - 0.005 * b, 0.95 * ht, 1.0 * hw),
        (knuckle + 0.012 * b, 0.7 * ht, 0.9 * hw),
    ]
    prof = _profile(palm_st, segments_for(9, detail, 4))
    palm = _sweep(
        [(t, hy, z) for t, _, _ in prof],
        [(a, c) for _, a, c in prof],
        hsides,
        (0.0, 0.0, 1.0),
        cap_start=True,
        tip=0.006 * b,
    )
    hand = _tagged(palm, REGION_HAND[0])

    fsides = segments_for(8, detail, 4)
    frows = segments_for(3, detail, 1)
    fr = sk.finger_radius
    for finger, widths in (("Index", (fr, fr)), ("Middle", (0.95 * fr, 0.68 * hw))):
        bones = [sk.at(name) for name in finger_bones("left", finger)]
        start = (bones[0][0] - 0.02 * b, bones[0][1], bones[0][2])
        tip_x = bones[2][0] + 0.017 * b
        path: list[Vec3] = [start]
        knots = [start, *bones, (tip_x, bones[2][1], bones[2][2])]
        for a, c in itertools.pairwise(knots):
            for i in range(1, frows + 1):
                path.append(add(a, scale(sub(c, a), i / frows)))
        n = len(path)
        radii = [
            (widths[0] * (1.0 - 0.2 * i / n), widths[1] * (1.0 - 0.15 * i / n)) for i in range(n)
        ]
        geom = _sweep(path, radii, fsides, (0.0, 0.0, 1.0), tip=0.6 * widths[0])
        hand.extend(_tagged(geom, FINGER_REGIONS[finger][0]))

    thumb = [sk.at(name) for name in finger_bones("left", "Thumb")]
    d = normalize(sub(thumb[2], thumb[1]))
    start = sub(thumb[0], scale(d, 0.012 * b))
    tip = add(thumb[2], scale(d, 0.022 * b))
    knots = [start, *thumb, tip]
    path = [start]
    for a, c in itertools.pairwise(knots):
        for i in range(1, frows + 1):
            path.append(add(a, scale(sub(c, a), i / frows)))
    n = len(path)
    tr = 1.15 * fr
    radii = [(tr * (1.15 - 0.3 * i / n), tr * (1.25 - 0.35 * i / n)) for i in range(n)]
    geom = _sweep(path, radii, fsides, (0.0, 1.0, 0.0), tip=0.6 * tr)
    hand.extend(_tagged(geom, REGION_THUMB[0]))
    return {CLOTHING: sleeve, HANDS: hand}


def _leg(sk: Skeleton, detail: float) -> dict[str, Geometry]:
    """The left trouser leg and shoe."""
    b = sk.body
    r = sk.leg_radius
    hip = sk.at("leftUpperLeg")
    knee = sk.at("leftLowerLeg")
    ankle = sk.at("leftFoot")
    sides = segments_for(18, detail, 6, even=True)
    stations = [
        (hip[1] + 0.07 * b, 1.08 * r, 1.1 * r),
        (hip[1] - 0.06 * b, 1.0 * r, 1.02 * r),
        (knee[1] + 0.12 * b, 0.8 * r, 0.8 * r),
        (knee[1] + 0.04 * b, 0.72 * r, 0.73 * r),
        (knee[1], 0.68 * r, 0.7 * r),
        (knee[1] - 0.04 * b, 0.68 * r, 0.7 * r),
        (knee[1] - 0.12 * b, 0.72 * r, 0.74 * r),
        (ankle[1] + 0.06 * b, 0.56 * r, 0.56 * r),
        (ankle[1] - 0.005 * b, 0.6 * r, 0.6 * r),
    ]
    prof = _profile(stations, segments_for(20, detail, 6))

    def centre(y: float) -> Vec3:
        if y >= knee[1]:
            t = (hip[1] - y) / (hip[1] - knee[1])
            return (hip[0] + (knee[0] - hip[0]) * t, y, hip[2] + (knee[2] - hip[2]) * t)
        t = (knee[1] - y) / (knee[1] - ankle[1])
        return (knee[0] + (ankle[0] - knee[0]) * t, y, knee[2] + (ankle[2] - knee[2]) * t)

    trousers = _sweep(
        [centre(t) for t, _, _ in prof],
        [(c, a) for _, a, c in prof],
        sides,
        (1.0, 0.0, 0.0),
    )
    _tagged(trousers, REGION_LEG[0])

    # The shoe: a rounded box along +Z from the heel to the toe, sole on the floor.
    floor = sk.floor_y
    toes = sk.at("leftToes")
    heel_z = ankle[2] - 0.055 * b
    toe_z = toes[2] + 0.075 * b
    sw = 0.047 * b
    stations = [
        (heel_z, 0.036 * b, 0.8 * sw),
        (heel_z + 0.03 * b, 0.047 * b, 0.9 * sw),
        (ankle[2] + 0.03 * b, 0.05 * b, 0.95 * sw),
        (toes[2], 0.034 * b, 1.0 * sw),
        (toe_z - 0.015 * b, 0.022 * b, 0.85 * sw),
    ]
    prof = _profile(stations, segments_for(10, detail, 5))
    x = ankle[0]
    path = [(x, floor + h, zz) for zz, h, _ in prof]
    shoe = _sweep(
        path,
        [(h, w) for _, h, w in prof],
        segments_for(14, detail, 6, even=True),
        (1.0, 0.0, 0.0),
        cap_start=True,
        tip=0.012 * b,
    )
    # Flatten the sole onto the floor.
    shoe.positions = [
        (q[0], floor if q[1] < floor + 0.004 * b else q[1], q[2]) for q in shoe.positions
    ]
    shoe.compute_normals()
    _tagged(shoe, REGION_FOOT[0])
    return {TROUSERS: trousers, SHOES: shoe}


def build_body(p: Proportions, sk: Skeleton, detail: float) -> Body:
    torso = TorsoShape(p)
    seg = segments_for(44, detail, 12, even=True)
    levels = segments_for(30, detail, 8)
    angles = ring_angles(seg)
    # Denser rows in the shoulder dome, where the silhouette curves.
    dome_rows = max(4, levels // 3)
    ss = [_DOME * (i / dome_rows) ** 1.35 for i in range(dome_rows)]
    lower_rows = levels - dome_rows
    ss += [_DOME + (1.0 - _DOME) * i / lower_rows for i in range(lower_rows + 1)]
    rows = [[torso.point(s, a) for a in angles] for s in ss]
    bottom = rows[-1]
    torso_geom = grid(rows, end_pole=(0.0, bottom[0][1] - 0.02 * p.body, 0.0))
    torso_geom.compute_normals()
    _tagged(torso_geom, REGION_TORSO)
    # The shirt down to the belt, the trousers below it.
    belt = p.shoulder_y - _BELT * p.body
    pos, idx = torso_geom.positions, torso_geom.indices
    labels = [
        1 if pos[idx[i]][1] + pos[idx[i + 1]][1] + pos[idx[i + 2]][1] < 3.0 * belt else 0
        for i in range(0, len(idx), 3)
    ]
    halves = split_faces(torso_geom, labels, (0, 1))
    clothing, trousers_top = halves[0], halves[1]

    # Neck: an open tube from inside the torso to inside the head.
    neck_seg = segments_for(24, detail, 8)
    cx, cz = 0.0, -0.008 * p.k
    profile = []
    n_rows = segments_for(5, detail, 2)
    for i in range(n_rows + 1):
        t = i / n_rows
        y = p.neck_top_y + (p.neck_bottom_y - p.neck_top_y) * t
        profile.append((p.neck_r * (0.94 + 0.06 * t), y))
    neck = lathe(profile, neck_seg, center=(cx, 0.0, cz), z_ratio=0.95)
    neck.compute_normals()

    # A rolled collar around the neckline.
    collar_seg = segments_for(40, detail, 8)
    minor = 0.0065 * max(p.k, 1.0) ** 0.3
    y_collar = p.torso_top_y - 0.004
    path = torus_path(
        (0.0, y_collar, 0.0),
        torso.neck_r + minor * 0.6,
        (torso.neck_r + minor * 0.6) * 1.02,
        collar_seg,
        y_of=lambda a: -0.010 * max(0.0, math.cos(a)) ** 2,
    )
    collar = tube(
        path,
        [(minor, minor * 1.2)] * len(path),
        segments_for(8, detail, 3),
        reference=(0.0, 1.0, 0.0),
        closed=True,
    )
    collar.compute_normals()

    parts: dict[str, Geometry] = {
        CLOTHING: clothing,
        TROUSERS: trousers_top,
        COLLAR: collar,
        NECK: neck,
    }
    for side in (0, 1):
        for key, geom in (*_arm(sk, detail).items(), *_leg(sk, detail).items()):
            if side == 1:
                left_tag = geom.tags[0] if geom.tags else 0
                regions = (REGION_ARM, REGION_LEG, REGION_FOOT, REGION_HAND, REGION_THUMB,
                           REGION_INDEX, REGION_MIDDLE)  # fmt: skip
                tags = [next(r[1] for r in regions if r[0] == t) for t in geom.tags]
                geom = _mirror(geom, left_tag)
                geom.tags = tags
            if key in parts:
                parts[key].extend(geom)
            else:
                parts[key] = geom
    return Body(parts=parts, torso=torso)

"""Neck, shoulders and the top of the torso, dressed."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .geometry import Geometry, Vec3, grid, lathe, ring_angles, segments_for, torus_path, tube
from .styles import Proportions

CLOTHING, COLLAR, NECK = "clothing", "collar", "neck"
_DOME = 0.5  # share of the rows spent on the shoulders


class TorsoShape:
    """The bust as a stack of rounded-rectangle sections from the neck to the cut.

    ``s`` runs from 0 at the neck opening to 1 at the bottom edge; ``a`` is the
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
        q = (s - _DOME) / (1.0 - _DOME)
        w = p.shoulder_w * (1.0 - 0.06 * q)
        d = p.chest_d * (1.0 + 0.04 * math.sin(math.pi * q))
        y = p.shoulder_y - (p.shoulder_y - p.bust_bottom_y) * q
        return w, d, y, 3.2

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


def build_body(p: Proportions, detail: float) -> Body:
    torso = TorsoShape(p)
    seg = segments_for(44, detail, 14, even=True)
    levels = segments_for(18, detail, 7)
    angles = ring_angles(seg)
    # Denser rows in the shoulder dome, where the silhouette curves.
    ss = [(i / levels) ** 1.35 for i in range(levels + 1)]
    rows = [[torso.point(s, a) for a in angles] for s in ss]
    clothing = grid(rows)
    clothing.compute_normals()
    bottom = rows[-1]
    cap_rows = [bottom, [(q[0] * 0.5, q[1], q[2] * 0.5) for q in bottom]]
    cap = grid(cap_rows, end_pole=(0.0, bottom[0][1], 0.0))
    cap.compute_normals()
    clothing.extend(cap)

    # Neck: an open tube from inside the torso to inside the head.
    neck_seg = segments_for(24, detail, 10)
    cx, cz = 0.0, -0.008 * p.k
    profile = []
    n_rows = segments_for(5, detail, 3)
    for i in range(n_rows + 1):
        t = i / n_rows
        y = p.neck_top_y + (p.neck_bottom_y - p.neck_top_y) * t
        profile.append((p.neck_r * (0.94 + 0.06 * t), y))
    neck = lathe(profile, neck_seg, center=(cx, 0.0, cz), z_ratio=0.95)
    neck.compute_normals()

    # A rolled collar around the neckline.
    collar_seg = segments_for(40, detail, 12)
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
        segments_for(8, detail, 4),
        reference=(0.0, 1.0, 0.0),
        closed=True,
    )
    collar.compute_normals()
    return Body(parts={CLOTHING: clothing, COLLAR: collar, NECK: neck}, torso=torso)

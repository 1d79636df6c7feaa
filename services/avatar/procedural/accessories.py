"""Accessories: glasses, hat, earrings, headband, necklace (and a robot's antenna)."""

from __future__ import annotations

import math

from .body import TorsoShape
from .geometry import (
    Geometry,
    Vec3,
    add,
    ellipsoid,
    lathe,
    normalize,
    scale,
    segments_for,
    sub,
    tube,
)
from .head import FaceAnchors, HeadShape

METAL, FABRIC = "accent_metal", "accent_fabric"


def _add(parts: dict[str, Geometry], key: str, geom: Geometry) -> None:
    if geom.normals is None:
        geom.compute_normals()
    if key in parts:
        parts[key].extend(geom)
    else:
        parts[key] = geom


def build_head_accessories(
    shape: HeadShape, face: FaceAnchors, accessories: tuple[str, ...], detail: float, *, hair: str
) -> dict[str, Geometry]:
    """Head-worn accessories in world space, keyed by material."""
    p = shape.p
    k = p.k
    c = shape.center
    parts: dict[str, Geometry] = {}
    hair_room = 0.0 if hair == "bald" else p.hair_thick * (2.2 if hair == "curly" else 1.0)

    if "glasses" in accessories:
        _add(parts, METAL, _glasses(shape, face, detail))

    if "headband" in accessories:
        n = segments_for(48, detail, 12)
        path: list[Vec3] = []
        for i in range(n):
            phi = 2.0 * math.pi * i / n
            front = 0.5 + 0.5 * math.cos(phi)
            theta = math.pi * (0.40 - 0.14 * front)
            base = shape.local(theta, phi)
            path.append(add(base, scale(normalize(base), hair_room + 0.003 * k)))
        ups = [normalize(q) for q in path]
        band = tube(
            [add(q, c) for q in path],
            [(0.007 * k, 0.0022 * k)] * n,
            segments_for(8, detail, 4),
            reference=ups,
            closed=True,
        )
        if band.signed_volume(add(c, (0.0, p.ry * 0.5, 0.0))) < 0.0:
            band.flip()
        _add(parts, FABRIC, band)

    if "earrings" in accessories:
        for lobe in face.ear_lobes:
            stud = ellipsoid(
                lobe, (0.0032 * k,) * 3, segments_for(10, detail, 5), segments_for(6, detail, 3)
            )
            _add(parts, METAL, stud)
            n = segments_for(20, detail, 8)
            ring_r = 0.0085 * k
            centre = (lobe[0], lobe[1] - ring_r - 0.002 * k, lobe[2])
            hoop = [
                (
                    centre[0],
                    centre[1] + ring_r * math.cos(2 * math.pi * i / n),
                    centre[2] + ring_r * math.sin(2 * math.pi * i / n),
                )
                for i in range(n)
            ]
            ring = tube(
                hoop,
                [(0.0011 * k, 0.0011 * k)] * n,
                segments_for(6, detail, 3),
                reference=(1.0, 0.0, 0.0),
                closed=True,
            )
            if ring.signed_volume(centre) < 0.0:
                ring.flip()
            _add(parts, METAL, ring)

    if "hat" in accessories:
        top_theta = 0.3 * math.pi
        base_local = shape.local(top_theta, 0.0)
        y0 = base_local[1]
        radius = (
            max(
                abs(shape.local(top_theta, 0.5 * math.pi)[0]),
                abs(shape.local(top_theta, 0.0)[2]),
                abs(shape.local(top_theta, math.pi)[2]),
            )
            + hair_room
            + 0.006 * k
        )
        height = 0.085 * k
        seg = segments_for(44, detail, 12)
        centre = (c[0], c[1], c[2] - 0.008 * k)
        crown = lathe(
            [
                (0.0, y0 + height + 0.004 * k),
                (radius * 0.55, y0 + height + 0.002 * k),
                (radius * 0.86, y0 + height - 0.004 * k),
                (radius * 0.97, y0 + height * 0.6),
                (radius, y0 - 0.004 * k),
                (radius * 1.01, y0 - 0.012 * k),
            ],
            seg,
            center=centre,
        )
        _add(parts, FABRIC, crown)
        inner, outer = radius * 0.98, radius + 0.05 * k
        yb = y0 - 0.012 * k
        brim = lathe(
            [
                (inner, yb + 0.0025 * k),
                (outer, yb + 0.0015 * k),
                (outer + 0.0015 * k, yb - 0.001 * k),
                (outer, yb - 0.0025 * k),
                (inner, yb - 0.0015 * k),
                (inner - 0.001 * k, yb),
            ],
            seg,
            center=centre,
            closed_profile=True,
        )
        _add(parts, FABRIC, brim)
        band = lathe(
            [
                (radius * 1.012, y0 + 0.016 * k),
                (radius * 1.016, y0 + 0.004 * k),
                (radius * 1.02, y0 - 0.008 * k),
            ],
            seg,
            center=centre,
        )
        _add(parts, METAL, band)

    if p.style == "robot" and "hat" not in accessories:
        top = shape.local(0.0, 0.0)
        stem = [
            add(c, (0.0, top[1] - 0.01 * k, -0.01 * k)),
            add(c, (0.0, top[1] + 0.035 * k, -0.01 * k)),
        ]
        r = 0.0025 * k
        _add(
            parts,
            METAL,
            tube(
                stem,
                [(r, r), (r, r)],
                segments_for(8, detail, 4),
                reference=(1.0, 0.0, 0.0),
                cap_end=True,
            ),
        )
        ball = ellipsoid(
            stem[1], (0.007 * k,) * 3, segments_for(12, detail, 6), segments_for(8, detail, 4)
        )
        _add(parts, FABRIC, ball)
    return parts


def _glasses(shape: HeadShape, face: FaceAnchors, detail: float) -> Geometry:
    p = shape.p
    k = p.k
    c = shape.center
    out = Geometry(normals=[])
    rim_w = max(p.eye_r * 1.55, 0.014 * k)
    rim_h = max(p.eye_r * p.eye_tall * 1.25, 0.011 * k)
    wire = 0.0013 * k
    n = segments_for(36, detail, 10)
    sides = segments_for(7, detail, 3)
    inner_points: list[Vec3] = []
    outer_points: list[Vec3] = []
    rim_z = 0.0
    for eye in face.eye_centers:
        local = sub(eye, c)
        nose_clear = shape.surface_at(0.0, local[1])[2]
        rim_z = max(rim_z, local[2] + p.eye_r * p.eye_flat + 0.008 * k, nose_clear - 0.012 * k)
    for eye in face.eye_centers:
        local = sub(eye, c)
        centre = (local[0], local[1] + 0.001 * k, rim_z)
        path = [
            (
                centre[0] + rim_w * math.cos(2 * math.pi * i / n),
                centre[1] + rim_h * math.sin(2 * math.pi * i / n),
                centre[2],
            )
            for i in range(n)
        ]
        rim = tube(
            [add(q, c) for q in path],
            [(wire, wire)] * n,
            sides,
            reference=(0.0, 0.0, 1.0),
            closed=True,
        )
        if rim.signed_volume(add(centre, c)) < 0.0:
            rim.flip()
        out.extend(rim.compute_normals())
        sign = 1.0 if local[0] > 0 else -1.0
        inner_points.append((centre[0] - sign * rim_w, centre[1] + rim_h * 0.25, centre[2]))
        outer_points.append((centre[0] + sign * rim_w, centre[1] + rim_h * 0.25, centre[2]))

    # Bridge over the nose.
    a, b = inner_points
    left, right = (a, b) if a[0] < b[0] else (b, a)
    m = segments_for(8, detail, 3)
    bridge_path = []
    for i in range(m + 1):
        t = i / m
        x = left[0] + (right[0] - left[0]) * t
        bridge_path.append(
            add((x, left[1] + 0.003 * k * math.sin(math.pi * t), left[2] + 0.001 * k), c)
        )
    bridge = tube(
        bridge_path,
        [(wire, wire)] * len(bridge_path),
        sides,
        reference=(0.0, 0.0, 1.0),
        cap_start=True,
        cap_end=True,
    )
    out.extend(bridge.compute_normals())

    # Temples: from the rim, around the side of the head, to above the ear.
    for sign, start, ear_top in zip(
        (1.0, -1.0), _by_side(outer_points), face.ear_tops, strict=True
    ):
        y = start[1]
        ear = sub(ear_top, c)
        steps = segments_for(10, detail, 4)
        path = [start]
        theta = shape.theta_for_y(y, sign * 0.5 * math.pi)
        phi0 = abs(shape.phi_for_x(theta, abs(start[0]) + 0.004 * k))
        phi1 = 0.5 * math.pi + 0.25
        for i in range(steps + 1):
            phi = phi0 + (phi1 - phi0) * i / steps
            base = shape.local(theta, sign * phi)
            q = add(base, scale(normalize((base[0], 0.0, base[2])), 0.0035 * k))
            q = (q[0], y + (ear[1] - y) * 0.5 * i / steps, q[2])
            if q[2] < start[2]:
                path.append(q)
        path.append((ear[0] + sign * 0.002 * k, ear[1] - 0.004 * k, ear[2] - 0.01 * k))
        temple = tube(
            [add(q, c) for q in path],
            [(wire, wire)] * len(path),
            sides,
            reference=(0.0, 1.0, 0.0),
            cap_start=True,
            cap_end=True,
        )
        out.extend(temple.compute_normals())
    return out


def _by_side(points: list[Vec3]) -> tuple[Vec3, Vec3]:
    a, b = points
    return (a, b) if a[0] > b[0] else (b, a)


def build_body_accessories(
    torso: TorsoShape, accessories: tuple[str, ...], detail: float, k: float
) -> dict[str, Geometry]:
    parts: dict[str, Geometry] = {}
    if "necklace" in accessories:
        n = segments_for(48, detail, 12)
        path: list[Vec3] = []
        for i in range(n):
            a = 2.0 * math.pi * i / n
            front = max(0.0, math.cos(a)) ** 2
            s = 0.09 + 0.07 * front
            q = torso.point(s, a)
            path.append((q[0] * 1.015, q[1] + 0.0025, q[2] * 1.015 + 0.002))
        chain = tube(
            path,
            [(0.0014, 0.0014)] * n,
            segments_for(6, detail, 3),
            reference=(0.0, 1.0, 0.0),
            closed=True,
        )
        _add(parts, METAL, chain)
        tip = path[0]
        pendant = ellipsoid(
            (tip[0], tip[1] - 0.011 * max(k, 1.0) ** 0.3, tip[2] + 0.004),
            (0.006, 0.009, 0.003),
            segments_for(12, detail, 6),
            segments_for(8, detail, 4),
        )
        _add(parts, METAL, pendant)
    return parts

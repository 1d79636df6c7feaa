"""Hair: a shell over the skull shaped by the hair style, plus buns, tails and spikes."""

from __future__ import annotations

import math
import random

from .geometry import (
    Geometry,
    Vec3,
    add,
    bezier,
    ellipsoid,
    grid,
    lerp,
    normalize,
    scale,
    segments_for,
    smoothstep,
    sub,
    tube,
)
from .head import HeadShape

HAIR, HAIR_TIE = "hair", "hair_tie"

# Hairline (polar angle from the crown, as a fraction of pi) at the front, side and back.
_HAIRLINE = {
    "short": (0.27, 0.45, 0.66),
    "long": (0.26, 0.47, 0.70),
    "ponytail": (0.25, 0.44, 0.64),
    "bun": (0.25, 0.44, 0.64),
    "spiky": (0.24, 0.42, 0.62),
    "curly": (0.28, 0.50, 0.68),
}
_DROP_THETA = 0.56 * math.pi  # below this, long hair falls straight down


def _hairline(style: str, azimuth: float) -> float:
    front, side, back = _HAIRLINE[style]
    a = abs(math.remainder(azimuth, 2.0 * math.pi)) / math.pi  # 0 front .. 1 back
    if a <= 0.5:
        t = 0.5 - 0.5 * math.cos(math.pi * a / 0.5)
        return math.pi * lerp(front, side, t)
    t = 0.5 - 0.5 * math.cos(math.pi * (a - 0.5) / 0.5)
    return math.pi * lerp(side, back, t)


def build_hair(
    shape: HeadShape,
    hair_style: str,
    detail: float,
    *,
    hat: bool,
    shoulder_y: float,
) -> dict[str, Geometry]:
    """Hair for ``hair_style`` (head-independent of LOD except for tessellation)."""
    if hair_style == "bald":
        return {}
    p = shape.p
    rng = random.Random(p.hair_rng_seed)
    thick = p.hair_thick * (2.2 if hair_style == "curly" else 1.0)
    cols = segments_for(60, detail, 16, even=True)
    length_rows = {"long": 30, "curly": 24}.get(hair_style, 18)
    nrows = segments_for(length_rows, detail, 5)

    drop = 0.0
    if hair_style == "long":
        drop = max(0.04, (shape.center[1] + p.ry * math.cos(_DROP_THETA)) - shoulder_y - 0.01)
    elif hair_style == "curly":
        drop = 0.35 * p.ry
    bang_phase = rng.uniform(0.0, 2.0 * math.pi)
    bang_teeth = 9 + rng.randrange(3)
    curl_phases = [rng.uniform(0.0, 2.0 * math.pi) for _ in range(4)]

    def end_param(phi: float) -> float:
        """How far down this meridian the hair reaches, in radians (beyond pi/2 = drop)."""
        end = _hairline(hair_style, phi)
        a = abs(math.remainder(phi, 2.0 * math.pi))
        if drop > 0.0:
            reach = _DROP_THETA + drop / p.ry
            end = lerp(end, reach, smoothstep(0.26 * math.pi, 0.46 * math.pi, a))
        if p.bangs > 0.0 and a < 0.3 * math.pi:
            tooth = abs(((phi * bang_teeth / (2.0 * math.pi) + bang_phase) % 1.0) * 2.0 - 1.0)
            end += (
                p.bangs
                * 0.05
                * math.pi
                * tooth
                * (1.0 - smoothstep(0.18 * math.pi, 0.3 * math.pi, a))
            )
        return end

    def curl(theta: float, phi: float) -> float:
        if hair_style != "curly":
            return 0.0
        c = curl_phases
        return 0.35 * (
            math.sin(7.0 * phi + c[0]) * math.sin(9.0 * theta + c[1])
            + 0.6 * math.sin(11.0 * phi + c[2]) * math.sin(5.0 * theta + c[3])
        )

    def shell_point(tau: float, phi: float) -> Vec3:
        theta = min(tau, _DROP_THETA)
        base = shape.local(theta, phi)
        out = normalize(base)
        t = thick * (1.0 + curl(theta, phi)) * (0.6 + 0.4 * smoothstep(0.0, 0.35 * math.pi, theta))
        pt = add(base, scale(out, t + 0.0015 * p.k))
        if tau > _DROP_THETA:
            fall = (tau - _DROP_THETA) * p.ry
            horiz = normalize((out[0], 0.0, out[2]), fallback=(0.0, 0.0, -1.0))
            pt = add(pt, (horiz[0] * 0.12 * fall, -fall, horiz[2] * 0.12 * fall))
        return pt

    phis = [2.0 * math.pi * c / cols for c in range(cols)]
    ends = [end_param(phi) for phi in phis]
    rows = []
    for r in range(1, nrows + 1):
        f = r / nrows
        rows.append([shell_point(ends[c] * f, phis[c]) for c in range(cols)])
    crown = shell_point(0.0, 0.0)
    shell = grid(rows, start_pole=crown)
    shell.compute_normals()
    hair = shell
    tie = Geometry(normals=[])

    if hair_style == "ponytail":
        root = shape.local(0.42 * math.pi, math.pi)
        out = normalize(root)
        start = add(root, scale(out, -0.01 * p.k))
        ctrl = [
            start,
            add(start, (0.0, 0.012 * p.k, -0.06 * p.k)),
            add(start, (0.0, -0.10 * p.k, -0.085 * p.k)),
            add(start, (0.0, -0.21 * p.k, -0.06 * p.k)),
        ]
        n = segments_for(16, detail, 6)
        path = bezier(ctrl, n + 1)
        r0 = 0.026 * p.k * p.hair_volume
        radii = []
        for i in range(n):
            t = i / n
            radius = r0 * (0.75 + 0.5 * math.sin(math.pi * min(1.0, t * 1.4))) * (1.0 - 0.8 * t**2)
            radii.append((radius, radius * 0.85))
        body = tube(
            path[:-1],
            radii,
            segments_for(12, detail, 6),
            reference=(1.0, 0.0, 0.0),
            end_pole=path[-1],
        )
        body.compute_normals()
        hair.extend(body)
        band_at = max(1, n // 7)
        centre = path[band_at]
        direction = normalize(sub(path[band_at + 1], path[band_at - 1]))
        tie.extend(_ring(centre, direction, radii[band_at][0] * 1.02, 0.0045 * p.k, detail))

    if hair_style == "bun" and not hat:
        root = shape.local(0.2 * math.pi, math.pi)
        out = normalize(root)
        size = 0.038 * p.k * p.hair_volume
        centre = add(root, scale(out, size * 0.62 + thick))
        bun = ellipsoid(
            centre,
            (size, size * 0.85, size),
            segments_for(20, detail, 10),
            segments_for(12, detail, 6),
        )
        hair.extend(bun)
        base = add(root, scale(out, thick + size * 0.05))
        tie.extend(_ring(base, out, size * 0.62, 0.004 * p.k, detail))

    if hair_style == "spiky" and not hat:
        count = segments_for(26, detail, 10)
        sides = segments_for(9, detail, 4)
        golden = math.pi * (3.0 - math.sqrt(5.0))
        for i in range(count):
            f = (i + 0.5) / count
            theta = math.acos(1.0 - f * (1.0 - math.cos(0.42 * math.pi)))
            phi = i * golden + rng.uniform(-0.15, 0.15)
            a = abs(math.remainder(phi, 2.0 * math.pi))
            if a < 0.3 * math.pi and theta > 0.24 * math.pi:
                continue
            base = shell_point(theta, phi)
            normal = normalize(base)
            direction = normalize(add(normal, (0.0, 0.25, -0.45)))
            length = (0.032 + 0.024 * rng.random()) * p.k
            radius = (0.011 + 0.005 * rng.random()) * p.k
            hair.extend(
                _spike(add(base, scale(direction, -0.006 * p.k)), direction, length, radius, sides)
            )

    parts = {HAIR: hair}
    if tie.indices:
        parts[HAIR_TIE] = tie
    return {key: g.translated(shape.center) for key, g in parts.items()}


def _frame(direction: Vec3) -> tuple[Vec3, Vec3]:
    helper = (0.0, 1.0, 0.0) if abs(direction[1]) < 0.9 else (1.0, 0.0, 0.0)
    u = normalize(
        sub(
            helper,
            scale(
                direction,
                helper[0] * direction[0] + helper[1] * direction[1] + helper[2] * direction[2],
            ),
        )
    )
    v = (
        direction[1] * u[2] - direction[2] * u[1],
        direction[2] * u[0] - direction[0] * u[2],
        direction[0] * u[1] - direction[1] * u[0],
    )
    return u, v


def _spike(base: Vec3, direction: Vec3, length: float, radius: float, sides: int) -> Geometry:
    """A cone from ``base`` along ``direction``, open at the base (it sits in the hair)."""
    u, v = _frame(direction)
    ring = []
    for i in range(sides):
        a = 2.0 * math.pi * i / sides
        ring.append(add(base, add(scale(u, radius * math.cos(a)), scale(v, radius * math.sin(a)))))
    mid = [lerp3_(q, add(base, scale(direction, length * 0.45)), 0.45) for q in ring]
    tip = add(base, scale(direction, length))
    # Rows run from the tip towards the base so the cone faces outwards.
    cone = grid([mid, ring], start_pole=tip)
    if cone.signed_volume(add(base, scale(direction, length * 0.3))) < 0.0:
        cone.flip()
    return cone.compute_normals()


def lerp3_(a: Vec3, b: Vec3, t: float) -> Vec3:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def _ring(centre: Vec3, axis: Vec3, major: float, minor: float, detail: float) -> Geometry:
    """A torus around ``axis`` through ``centre``."""
    u, v = _frame(axis)
    n = segments_for(20, detail, 10)
    path = []
    for i in range(n):
        a = 2.0 * math.pi * i / n
        path.append(add(centre, add(scale(u, major * math.cos(a)), scale(v, major * math.sin(a)))))
    ring = tube(path, [(minor, minor)] * n, segments_for(8, detail, 5), reference=axis, closed=True)
    if ring.signed_volume(centre) < 0.0:
        ring.flip()
    return ring.compute_normals()

"""The eye: one mesh (sclera, iris, pupil) placed twice, centred on its pivot."""

from __future__ import annotations

import math

from .geometry import Geometry, Vec3, ellipsoid, grid, normalize, ring_angles, segments_for
from .styles import Proportions

SCLERA, IRIS, PUPIL = "sclera", "iris", "pupil"
EYE_PARTS = (SCLERA, IRIS, PUPIL)


def build_eye(p: Proportions, detail: float) -> dict[str, Geometry]:
    """An eyeball looking along +Z, centred on the origin, split by material."""
    r = p.eye_r
    radii = (r, r * p.eye_tall, r * p.eye_flat)
    seg = segments_for(22, detail, 10, even=True)
    theta_pupil = math.asin(min(0.95, p.pupil))
    theta_iris = math.asin(min(0.97, p.iris))
    n_pupil = segments_for(3, detail, 1)
    n_iris = segments_for(4, detail, 2)
    n_sclera = segments_for(9, detail, 4)
    bands = [
        (PUPIL, 0.0, theta_pupil, n_pupil),
        (IRIS, theta_pupil, theta_iris, n_iris),
        (SCLERA, theta_iris, math.pi, n_sclera),
    ]
    angles = ring_angles(seg)

    def point(theta: float, a: float) -> Vec3:
        st = math.sin(theta)
        return (
            radii[0] * st * math.cos(a),
            radii[1] * st * math.sin(a),
            radii[2] * math.cos(theta),
        )

    parts: dict[str, Geometry] = {}
    for name, start, end, count in bands:
        thetas = [start + (end - start) * i / count for i in range(count + 1)]
        start_pole = None
        end_pole = None
        if start == 0.0:
            start_pole = (0.0, 0.0, radii[2])
            thetas = thetas[1:]
        if end == math.pi:
            end_pole = (0.0, 0.0, -radii[2])
            thetas = thetas[:-1]
        rows = [[point(t, a) for a in angles] for t in thetas]
        part = grid(rows, start_pole=start_pole, end_pole=end_pole)
        part.normals = [
            normalize((q[0] / radii[0] ** 2, q[1] / radii[1] ** 2, q[2] / radii[2] ** 2))
            for q in part.positions
        ]
        parts[name] = part

    if p.style in ("anime", "chibi", "cartoon"):
        # A catch-light: the same spot in both eyes, as if lit from the upper left.
        theta = 0.55 * theta_iris
        a = 0.75 * math.pi / 2.0
        spot = point(theta, a)
        size = r * 0.16
        glint = ellipsoid(
            (spot[0], spot[1], spot[2] + size * 0.2),
            (size, size, size * 0.45),
            segments_for(10, detail, 6),
            segments_for(6, detail, 4),
        )
        parts[SCLERA].extend(glint)
    return parts

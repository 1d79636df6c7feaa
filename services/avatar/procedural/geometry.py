"""Small, dependency-free mesh toolkit: vectors, parametric surfaces, normals.

Coordinates follow glTF: metres, +Y up, the avatar looks along +Z, its left is +X.

Winding convention for every grid built here: with rows running along the first
parameter and columns along the second, the triangle (r, c), (r + 1, c), (r, c + 1)
faces the side that ``d(row) x d(column)`` points to; builders choose their
parameter directions so that this is the outside.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

Vec3 = tuple[float, float, float]

# Per-vertex tags tell the morph-target fields how a vertex belongs to the face.
TAG_FIELD = 0  # moves with the smooth deformation fields (skin)
TAG_UPPER = 1  # upper side of the mouth opening (lip edge, mouth cavity)
TAG_LOWER = 2  # lower side of the mouth opening
TAG_TEETH_UPPER = 3  # rigid with the skull
TAG_TEETH_LOWER = 4  # rigid with the jaw
TAG_BROW = 5  # eyebrow geometry
TAG_STATIC = 6  # never moves (ears)
TAG_LID_UPPER = 7  # upper eyelid; aux is how close to the lid edge (0..1)
TAG_LID_LOWER = 8  # lower eyelid


def add(a: Vec3, b: Vec3) -> Vec3:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def sub(a: Vec3, b: Vec3) -> Vec3:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def scale(a: Vec3, s: float) -> Vec3:
    return (a[0] * s, a[1] * s, a[2] * s)


def dot(a: Vec3, b: Vec3) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def cross(a: Vec3, b: Vec3) -> Vec3:
    return (
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    )


def length(a: Vec3) -> float:
    return math.sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2])


def normalize(a: Vec3, fallback: Vec3 = (0.0, 1.0, 0.0)) -> Vec3:
    n = length(a)
    if n < 1e-12:
        return fallback
    return (a[0] / n, a[1] / n, a[2] / n)


def lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def lerp3(a: Vec3, b: Vec3, t: float) -> Vec3:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x < lo else hi if x > hi else x


def smoothstep(edge0: float, edge1: float, x: float) -> float:
    if edge0 == edge1:
        return 0.0 if x < edge0 else 1.0
    t = clamp((x - edge0) / (edge1 - edge0))
    return t * t * (3.0 - 2.0 * t)


def rotate_x(p: Vec3, angle: float) -> Vec3:
    c, s = math.cos(angle), math.sin(angle)
    return (p[0], p[1] * c - p[2] * s, p[1] * s + p[2] * c)


@dataclass
class Geometry:
    """An indexed triangle list with optional normals and morph tags.

    ``aux`` is a per-vertex scalar whose meaning depends on the tag (for example
    how deep a mouth-cavity vertex sits).
    """

    positions: list[Vec3] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    normals: list[Vec3] | None = None
    tags: list[int] = field(default_factory=list)
    aux: list[float] = field(default_factory=list)

    @property
    def triangle_count(self) -> int:
        return len(self.indices) // 3

    def add_vertex(self, p: Vec3, tag: int = TAG_FIELD, aux: float = 0.0) -> int:
        self.positions.append(p)
        self.tags.append(tag)
        self.aux.append(aux)
        return len(self.positions) - 1

    def add_triangle(self, a: int, b: int, c: int) -> None:
        self.indices.extend((a, b, c))

    def extend(self, other: Geometry) -> None:
        """Append ``other`` (normals are kept only when both sides have them)."""
        offset = len(self.positions)
        had_normals = self.normals is not None or not self.positions
        self.positions.extend(other.positions)
        self.tags.extend(other.tags)
        self.aux.extend(other.aux)
        self.indices.extend(i + offset for i in other.indices)
        if had_normals and other.normals is not None:
            self.normals = (self.normals or []) + list(other.normals)
        else:
            self.normals = None

    def set_tag(self, tag: int) -> Geometry:
        self.tags = [tag] * len(self.positions)
        return self

    def transformed(self, fn: Callable[[Vec3], Vec3]) -> Geometry:
        return Geometry(
            positions=[fn(p) for p in self.positions],
            indices=list(self.indices),
            normals=None,
            tags=list(self.tags),
            aux=list(self.aux),
        )

    def translated(self, offset: Vec3) -> Geometry:
        moved = Geometry(
            positions=[add(p, offset) for p in self.positions],
            indices=list(self.indices),
            normals=list(self.normals) if self.normals is not None else None,
            tags=list(self.tags),
            aux=list(self.aux),
        )
        return moved

    def flip(self) -> Geometry:
        idx = self.indices
        for i in range(0, len(idx), 3):
            idx[i + 1], idx[i + 2] = idx[i + 2], idx[i + 1]
        if self.normals is not None:
            self.normals = [(-n[0], -n[1], -n[2]) for n in self.normals]
        return self

    def compute_normals(self) -> Geometry:
        """Smooth normals: area-weighted face normals summed per vertex."""
        acc = [[0.0, 0.0, 0.0] for _ in self.positions]
        pos = self.positions
        idx = self.indices
        for i in range(0, len(idx), 3):
            a, b, c = idx[i], idx[i + 1], idx[i + 2]
            pa, pb, pc = pos[a], pos[b], pos[c]
            ux, uy, uz = pb[0] - pa[0], pb[1] - pa[1], pb[2] - pa[2]
            vx, vy, vz = pc[0] - pa[0], pc[1] - pa[1], pc[2] - pa[2]
            nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
            for v in (a, b, c):
                s = acc[v]
                s[0] += nx
                s[1] += ny
                s[2] += nz
        self.normals = [normalize((s[0], s[1], s[2])) for s in acc]
        return self

    def signed_volume(self, center: Vec3) -> float:
        """Six times the signed volume seen from ``center`` (positive = faces outward)."""
        total = 0.0
        pos = self.positions
        idx = self.indices
        for i in range(0, len(idx), 3):
            a = sub(pos[idx[i]], center)
            b = sub(pos[idx[i + 1]], center)
            c = sub(pos[idx[i + 2]], center)
            total += dot(a, cross(b, c))
        return total


def flat_shaded(geom: Geometry) -> Geometry:
    """Unweld every triangle so it carries its own face normal (a faceted look)."""
    out = Geometry(normals=[])
    pos = geom.positions
    idx = geom.indices
    normals: list[Vec3] = []
    for i in range(0, len(idx), 3):
        tri = idx[i], idx[i + 1], idx[i + 2]
        n = normalize(cross(sub(pos[tri[1]], pos[tri[0]]), sub(pos[tri[2]], pos[tri[0]])))
        base = len(out.positions)
        for v in tri:
            out.positions.append(pos[v])
            out.tags.append(geom.tags[v])
            out.aux.append(geom.aux[v])
            normals.append(n)
        out.indices.extend((base, base + 1, base + 2))
    out.normals = normals
    return out


def grid(
    rows: Sequence[Sequence[Vec3]],
    *,
    wrap: bool = True,
    start_pole: Vec3 | None = None,
    end_pole: Vec3 | None = None,
) -> Geometry:
    """Triangulate rows of points (all rows the same length).

    ``wrap`` joins the last column to the first; the optional poles close the
    surface before the first and after the last row with triangle fans.
    """
    geom = Geometry()
    ncols = len(rows[0])
    for row in rows:
        if len(row) != ncols:
            raise ValueError("grid rows must have the same length")
        for p in row:
            geom.add_vertex(p)
    span = ncols if wrap else ncols - 1
    for r in range(len(rows) - 1):
        base0 = r * ncols
        base1 = (r + 1) * ncols
        for c in range(span):
            c1 = (c + 1) % ncols
            a, b = base0 + c, base1 + c
            a1, b1 = base0 + c1, base1 + c1
            geom.add_triangle(a, b, a1)
            geom.add_triangle(a1, b, b1)
    if start_pole is not None:
        pole = geom.add_vertex(start_pole)
        for c in range(span):
            geom.add_triangle(pole, c, (c + 1) % ncols)
    if end_pole is not None:
        pole = geom.add_vertex(end_pole)
        base = (len(rows) - 1) * ncols
        for c in range(span):
            geom.add_triangle(base + c, pole, base + (c + 1) % ncols)
    return geom


def ring_angles(n: int) -> list[float]:
    return [2.0 * math.pi * k / n for k in range(n)]


def lathe(
    profile: Sequence[tuple[float, float]],
    segments: int,
    *,
    center: Vec3 = (0.0, 0.0, 0.0),
    z_ratio: float = 1.0,
    closed_profile: bool = False,
) -> Geometry:
    """Revolve ``(radius, y)`` points around the vertical axis through ``center``.

    The profile runs "downwards" on the outside (top to bottom for a dome);
    a radius of zero at either end becomes a pole. ``z_ratio`` squashes the
    revolution into an ellipse. A closed profile makes a torus-like ring.
    """
    angles = ring_angles(segments)
    pts = list(profile)
    start_pole: Vec3 | None = None
    end_pole: Vec3 | None = None
    if not closed_profile and pts[0][0] <= 0.0:
        start_pole = (center[0], center[1] + pts[0][1], center[2])
        pts = pts[1:]
    if not closed_profile and pts[-1][0] <= 0.0:
        end_pole = (center[0], center[1] + pts[-1][1], center[2])
        pts = pts[:-1]
    rows = [
        [
            (
                center[0] + r * math.sin(a),
                center[1] + y,
                center[2] + r * z_ratio * math.cos(a),
            )
            for a in angles
        ]
        for r, y in pts
    ]
    if closed_profile:
        rows.append(rows[0])
        geom = grid(rows, start_pole=None, end_pole=None)
        # The duplicated closing row is merged back onto the first one.
        n = len(rows[0])
        last = (len(rows) - 1) * n
        geom.indices = [i - last if i >= last else i for i in geom.indices]
        del geom.positions[last:]
        del geom.tags[last:]
        del geom.aux[last:]
        return geom
    return grid(rows, start_pole=start_pole, end_pole=end_pole)


def ellipsoid(
    center: Vec3,
    radii: Vec3,
    segments: int,
    rings: int,
) -> Geometry:
    """A UV ellipsoid with poles on the Y axis and analytic normals."""
    rx, ry, rz = radii
    rows: list[list[Vec3]] = []
    for j in range(1, rings):
        theta = math.pi * j / rings
        st, ct = math.sin(theta), math.cos(theta)
        rows.append(
            [
                (
                    center[0] + rx * st * math.sin(a),
                    center[1] + ry * ct,
                    center[2] + rz * st * math.cos(a),
                )
                for a in ring_angles(segments)
            ]
        )
    geom = grid(
        rows,
        start_pole=(center[0], center[1] + ry, center[2]),
        end_pole=(center[0], center[1] - ry, center[2]),
    )
    geom.normals = [
        normalize(
            (
                (p[0] - center[0]) / (rx * rx),
                (p[1] - center[1]) / (ry * ry),
                (p[2] - center[2]) / (rz * rz),
            )
        )
        for p in geom.positions
    ]
    return geom


def tube(
    path: Sequence[Vec3],
    radii: Sequence[tuple[float, float]],
    sides: int,
    *,
    reference: Vec3 | Sequence[Vec3],
    closed: bool = False,
    cap_start: bool = False,
    cap_end: bool = False,
    end_pole: Vec3 | None = None,
) -> Geometry:
    """Sweep an elliptical cross-section along a path.

    ``radii[i]`` gives the (normal, binormal) half-axes at ``path[i]``. The
    binormal is the ``reference`` direction made perpendicular to the path, so
    the sections never twist. ``end_pole`` closes the tube at a tip point.
    """
    n = len(path)
    refs = [reference] * n if isinstance(reference[0], float) else list(reference)
    rows: list[list[Vec3]] = []
    angles = ring_angles(sides)
    for i, p in enumerate(path):
        if closed:
            t = sub(path[(i + 1) % n], path[(i - 1) % n])
        else:
            t = sub(path[min(i + 1, n - 1)], path[max(i - 1, 0)])
        t = normalize(t)
        ref = refs[i]
        assert isinstance(ref, tuple)
        b = normalize(sub(ref, scale(t, dot(ref, t))), fallback=(1.0, 0.0, 0.0))
        nrm = cross(t, b)
        rn, rb = radii[i]
        rows.append(
            [add(p, add(scale(nrm, rn * math.cos(a)), scale(b, rb * math.sin(a)))) for a in angles]
        )
    if closed:
        rows.append(rows[0])
        geom = grid(rows)
        ncols = sides
        last = (len(rows) - 1) * ncols
        geom.indices = [i - last if i >= last else i for i in geom.indices]
        del geom.positions[last:]
        del geom.tags[last:]
        del geom.aux[last:]
        return geom
    start = path[0] if cap_start else None
    end = end_pole if end_pole is not None else (path[-1] if cap_end else None)
    return grid(rows, start_pole=start, end_pole=end)


def torus_path(
    center: Vec3, rx: float, rz: float, count: int, y_of: Callable[[float], float] | None = None
) -> list[Vec3]:
    """Points on a horizontal ellipse around ``center`` (optionally with a y profile)."""
    pts: list[Vec3] = []
    for a in ring_angles(count):
        y = center[1] + (y_of(a) if y_of is not None else 0.0)
        pts.append((center[0] + rx * math.sin(a), y, center[2] + rz * math.cos(a)))
    return pts


def bezier(points: Sequence[Vec3], count: int) -> list[Vec3]:
    """Sample a cubic Bezier curve at ``count`` evenly spaced parameters."""
    p0, p1, p2, p3 = points
    out: list[Vec3] = []
    for i in range(count):
        t = i / (count - 1)
        u = 1.0 - t
        w0, w1, w2, w3 = u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t
        out.append(
            (
                w0 * p0[0] + w1 * p1[0] + w2 * p2[0] + w3 * p3[0],
                w0 * p0[1] + w1 * p1[1] + w2 * p2[1] + w3 * p3[1],
                w0 * p0[2] + w1 * p1[2] + w2 * p2[2] + w3 * p3[2],
            )
        )
    return out


def split_faces(geom: Geometry, labels: Sequence[int], order: Iterable[int]) -> dict[int, Geometry]:
    """Split a geometry into one geometry per face label, in ``order``.

    Shared vertices are copied into every part with their normals, so the parts
    line up without visible seams.
    """
    parts: dict[int, Geometry] = {}
    remaps: dict[int, dict[int, int]] = {}
    for label in order:
        parts[label] = Geometry(normals=[] if geom.normals is not None else None)
        remaps[label] = {}
    for f, label in enumerate(labels):
        part = parts[label]
        remap = remaps[label]
        for k in range(3):
            v = geom.indices[3 * f + k]
            nv = remap.get(v)
            if nv is None:
                nv = part.add_vertex(geom.positions[v], geom.tags[v], geom.aux[v])
                if part.normals is not None and geom.normals is not None:
                    part.normals.append(geom.normals[v])
                remap[v] = nv
            part.indices.append(nv)
    return {k: v for k, v in parts.items() if v.indices}


def segments_for(base: int, detail: float, minimum: int, *, even: bool = False) -> int:
    n = max(minimum, round(base * detail))
    if even and n % 2:
        n += 1
    return n

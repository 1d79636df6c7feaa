"""The head: a deformed sphere with facial features, a mouth that can open, brows, ears."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .geometry import (
    TAG_BROW,
    TAG_FIELD,
    TAG_LID_LOWER,
    TAG_LID_UPPER,
    TAG_LOWER,
    TAG_STATIC,
    TAG_TEETH_LOWER,
    TAG_TEETH_UPPER,
    TAG_UPPER,
    Geometry,
    Vec3,
    add,
    cross,
    ellipsoid,
    grid,
    normalize,
    scale,
    segments_for,
    smoothstep,
    split_faces,
    sub,
    tube,
)
from .styles import Proportions

# Face-part keys, in primitive order.
SKIN, LIPS, MOUTH, TEETH, BROWS = "skin", "lips", "mouth", "teeth", "brows"
FACE_PARTS = (SKIN, LIPS, MOUTH, TEETH, BROWS)
# Eyelid edges (polar angle over pi, from the top for the upper lid and from the
# bottom for the lower one) by whether the eyes are big and stylised; their spread.
LID_EDGES = {False: (0.35, 0.28), True: (0.28, 0.22)}
LID_SPREAD = 0.62 * math.pi
LID_TOP = 0.08 * math.pi  # where a lid starts, from its pole


def _g(d: float, sigma: float) -> float:
    q = d / sigma
    return math.exp(-q * q)


class HeadShape:
    """The head surface as a function of polar angle (from the crown) and azimuth.

    Azimuth 0 looks forward (+Z), azimuth pi/2 is the avatar's left (+X).
    Points are relative to the head centre until ``world`` is applied.
    """

    def __init__(self, p: Proportions) -> None:
        self.p = p
        self.center = p.head_center
        k = p.k
        self._k = k
        self.lip_sigma_u = 0.0032 * k
        self.lip_sigma_l = 0.0036 * k
        self._angles: dict[tuple[float, float], tuple[float, float]] = {}

    def world(self, local: Vec3) -> Vec3:
        return add(local, self.center)

    def features(self, x: float, y: float) -> float:
        """Forward displacement of the face (nose, lips, eye sockets, cheeks)."""
        p = self.p
        k = self._k
        ax = abs(x)
        z = 0.0
        # Nose: grows from the bridge to the tip, then falls away under the tip.
        span = p.nose_bridge_y - p.nose_tip_y
        if p.nose_h > 0.0 and span > 0.0:
            t = (p.nose_bridge_y - y) / span
            if t > 0.0:
                h = p.nose_h * t**1.4 if t <= 1.0 else p.nose_h * _g(t - 1.0, 0.16)
                width = p.nose_w * (0.45 + 0.55 * min(t, 1.15))
                z += h * _g(x, width)
        # Eye sockets and the brow ridge above them.
        z -= (
            p.socket
            * _g(ax - p.eye_x, p.eye_r * 1.35)
            * _g(y - p.eye_y, p.eye_r * p.eye_tall * 1.25)
        )
        brow_y = p.eye_y + p.brow_gap
        z += 0.0022 * k * _g(y - brow_y, 0.007 * k) * _g(ax - p.eye_x, 0.022 * k)
        # Cheeks.
        z += (
            0.0035
            * k
            * _g(ax - p.eye_x - 0.006 * k, 0.014 * k)
            * _g(y - p.eye_y + 0.028 * k, 0.016 * k)
        )
        # The mouth area sits on a gentle muzzle; lips on top, a crease between them.
        my, mw = p.mouth_y, p.mouth_w
        if p.style != "robot":
            z += 0.004 * k * _g(x, 1.6 * mw) * _g(y - my, 0.022 * k)
        if p.lips > 0.0:
            z += p.lips * 0.0032 * k * _g(x, 0.85 * mw) * _g(y - my - 0.0042 * k, self.lip_sigma_u)
            z += p.lips * 0.0038 * k * _g(x, 0.8 * mw) * _g(y - my + 0.0052 * k, self.lip_sigma_l)
        z -= 0.0014 * k * _g(x, mw) * _g(y - my, 0.0016 * k)
        return z

    def local(self, theta: float, phi: float) -> Vec3:
        p = self.p
        st = math.sin(theta)
        u, v, w = st * math.sin(phi), math.cos(theta), st * math.cos(phi)
        mask = smoothstep(0.25, 0.75, w)
        if p.boxy > 0.0:
            n = p.boxy
            s = (abs(u) ** n + abs(v) ** n + abs(w) ** n) ** (-1.0 / n)
            u, v, w = u * s, v * s, w * s
        lower = max(0.0, -v)
        taper = 1.0 - p.jaw * lower * lower * (0.55 + 0.45 * max(0.0, w))
        x = p.rx * u * taper
        y = p.ry * v
        depth = 1.0
        if w < 0.0:
            depth += 0.08 * smoothstep(-0.7, 0.2, v)
        depth -= 0.5 * p.jaw * lower * lower * (1.0 - max(0.0, w))
        z = p.rz * w * depth
        z += p.chin * p.rz * lower**3 * max(0.0, w) ** 2
        if mask > 0.0:
            z += mask * self.features(x, y)
        return (x, y, z)

    def normal(self, theta: float, phi: float) -> Vec3:
        e = 1e-4
        d_theta = sub(self.local(theta + e, phi), self.local(theta - e, phi))
        d_phi = sub(self.local(theta, phi + e), self.local(theta, phi - e))
        return normalize(cross(d_theta, d_phi), fallback=(0.0, 0.0, 1.0))

    def theta_for_y(self, y: float, phi: float = 0.0) -> float:
        lo, hi = 1e-4, math.pi - 1e-4
        for _ in range(32):
            mid = 0.5 * (lo + hi)
            if self.local(mid, phi)[1] > y:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def phi_for_x(self, theta: float, x: float) -> float:
        target = abs(x)
        lo, hi = 0.0, 0.5 * math.pi
        for _ in range(32):
            mid = 0.5 * (lo + hi)
            if self.local(theta, mid)[0] < target:
                lo = mid
            else:
                hi = mid
        return math.copysign(0.5 * (lo + hi), x)

    def angles_at(self, x: float, y: float) -> tuple[float, float]:
        """Angles of the front surface point whose local x and y are given."""
        cached = self._angles.get((x, y))
        if cached is not None:
            return cached
        phi = 0.0
        theta = self.theta_for_y(y)
        for _ in range(3):
            phi = self.phi_for_x(theta, x)
            theta = self.theta_for_y(y, phi)
        self._angles[(x, y)] = (theta, phi)
        return theta, phi

    def surface_at(self, x: float, y: float) -> Vec3:
        theta, phi = self.angles_at(x, y)
        return self.local(theta, phi)


@dataclass(frozen=True, slots=True)
class FaceLandmarks:
    """Head-local reference points the morph fields are built from."""

    mouth_y: float
    mouth_z: float
    slit_w: float  # half width of the mouth opening
    mouth_w: float
    hinge: Vec3
    brow_inner: float  # |x| where the brows start
    brow_outer: float
    brow_y: float
    brow_z: float
    eye_centers: tuple[Vec3, Vec3]  # head-local, left (+X) first
    eye_shape: tuple[float, float] = (1.0, 1.0)  # eye height and depth over its width


@dataclass(frozen=True, slots=True)
class FaceAnchors:
    """World-space points other parts attach to; index 0 is the avatar's left (+X)."""

    eye_centers: tuple[Vec3, Vec3]
    ear_lobes: tuple[Vec3, Vec3]
    ear_tops: tuple[Vec3, Vec3]


@dataclass
class Face:
    parts: dict[str, Geometry]  # world space, keyed by FACE_PARTS
    landmarks: FaceLandmarks
    anchors: FaceAnchors


def _column_angles(segments: int) -> list[float]:
    """Azimuths, denser at the front of the face; symmetric about the front."""
    half = segments // 2

    def warp(s: float) -> float:
        return math.pi * (0.55 * s + 0.45 * s**3)

    out = []
    for k in range(segments):
        if k <= half:
            out.append(warp(k / half))
        else:
            out.append(2.0 * math.pi - warp((segments - k) / half))
    return out


def _row_angles(knots: list[float], weights: list[float], rings: int) -> tuple[list[float], int]:
    """Polar angles for ``rings`` bands split across knot intervals by weight.

    Returns the angles (0 and pi included) and the ring index of ``knots[2]``
    (the mouth line), which always lands exactly on a ring.
    """
    spans = [(knots[i + 1] - knots[i]) * weights[i] for i in range(len(weights))]
    total = sum(spans)
    raw = [rings * s / total for s in spans]
    counts = [max(1, int(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - int(raw[i])), i))
    i = 0
    while sum(counts) < rings:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > rings:
        j = max(range(len(counts)), key=lambda c: (counts[c], -c))
        counts[j] -= 1
    angles = [0.0]
    for seg, n in enumerate(counts):
        a, b = knots[seg], knots[seg + 1]
        for step in range(1, n + 1):
            angles.append(a + (b - a) * step / n)
    return angles, counts[0] + counts[1]


def build_face(shape: HeadShape, budget: int, detail: float) -> Face:
    """Build the face mesh parts with about ``budget`` triangles in all.

    The small parts (teeth, brows, ears, lids) follow ``detail``; the head
    surface takes what is left of the budget.
    """
    p = shape.p
    k = p.k
    theta_mouth = shape.theta_for_y(p.mouth_y)
    my = shape.local(theta_mouth, 0.0)[1]
    teeth = _teeth(shape, my, detail)
    brows, brow_inner, brow_outer, brow_y = _brows(shape, detail)
    ears = Geometry(normals=[])
    ear_seg = segments_for(16, detail, 7)
    for sign in (1.0, -1.0):
        ear, _, _ = _ear(p, _ear_attach(shape, sign), sign, ear_seg)
        ears.extend(ear)
    anchors = face_anchors(shape)
    lids = _eyelids(shape, anchors, detail)
    small = sum(g.triangle_count for g in (teeth, brows, ears, lids))

    head_budget = max(400, budget - small)
    segments = max(24, 2 * round(math.sqrt(head_budget) / 2))
    phis = _column_angles(segments)
    phi_corner = abs(shape.phi_for_x(theta_mouth, p.mouth_w))
    corner = 2
    for c in range(1, segments // 2):
        if phis[c] <= phi_corner * 1.04:
            corner = max(corner, c)
    cavity_triangles = 4 * corner * 7
    rings = max(12, round((head_budget - cavity_triangles) / (2 * segments)) + 1)
    theta_face = shape.theta_for_y(p.eye_y + 0.45 * p.ry)
    theta_chin = shape.theta_for_y(-0.9 * p.ry)
    knots = [0.0, theta_face, theta_mouth, theta_chin, math.pi]
    thetas, j_mouth = _row_angles(knots, [0.7, 1.35, 1.5, 0.55], rings)

    # --- the head surface, with a slit along the mouth line -----------------
    geom = Geometry()
    for j in range(1, rings):
        for phi in phis:
            geom.add_vertex(shape.local(thetas[j], phi))
    top = geom.add_vertex(shape.local(0.0, 0.0))
    bottom = geom.add_vertex(shape.local(math.pi, 0.0))

    def vid(j: int, c: int) -> int:
        return (j - 1) * segments + (c % segments)

    slit_cols = [c % segments for c in range(-corner + 1, corner)]
    lower_copy: dict[int, int] = {}
    for c in slit_cols:
        original = vid(j_mouth, c)
        geom.tags[original] = TAG_UPPER
        lower_copy[original] = geom.add_vertex(geom.positions[original], TAG_LOWER)

    labels: list[int] = []

    def lip_label(corners: tuple[int, ...]) -> int:
        n = float(len(corners))
        cx = sum(geom.positions[v][0] for v in corners) / n
        cy = sum(geom.positions[v][1] for v in corners) / n - my
        cz = sum(geom.positions[v][2] for v in corners) / n
        half = p.mouth_w * 1.06
        if abs(cx) >= half or cz < 0.5 * p.rz:
            return 0
        shape_f = math.sqrt(1.0 - (cx / half) ** 2)
        upper = (0.0075 * k) * shape_f + 0.0008 * k
        lower = (0.0095 * k) * shape_f + 0.0008 * k
        return 1 if -lower < cy < upper else 0

    for j in range(1, rings - 1):
        below_mouth = j == j_mouth
        for c in range(segments):
            a, b = vid(j, c), vid(j + 1, c)
            a1, b1 = vid(j, c + 1), vid(j + 1, c + 1)
            if below_mouth:
                a = lower_copy.get(a, a)
                a1 = lower_copy.get(a1, a1)
            # One label per quad: both halves agree, so a coarse lip edge has no zigzag.
            label = lip_label((a, b, a1, b1))
            for tri in ((a, b, a1), (a1, b, b1)):
                geom.add_triangle(*tri)
                labels.append(label)
    for c in range(segments):
        tri = (top, vid(1, c), vid(1, c + 1))
        geom.add_triangle(*tri)
        labels.append(0)
        tri = (vid(rings - 1, c), bottom, vid(rings - 1, c + 1))
        geom.add_triangle(*tri)
        labels.append(0)
    geom.compute_normals()
    head_parts = split_faces(geom, labels, (0, 1))

    # --- mouth cavity: rings going into the head from the lip edge ---------
    loop: list[tuple[Vec3, int]] = [(geom.positions[vid(j_mouth, -corner)], TAG_FIELD)]
    for c in range(-corner + 1, corner):
        loop.append((geom.positions[vid(j_mouth, c)], TAG_UPPER))
    loop.append((geom.positions[vid(j_mouth, corner)], TAG_FIELD))
    for c in range(corner - 1, -corner, -1):
        loop.append((geom.positions[vid(j_mouth, c)], TAG_LOWER))
    slit_w = abs(geom.positions[vid(j_mouth, corner)][0])
    mouth_z = shape.local(theta_mouth, 0.0)[2]

    cavity = Geometry()
    ring_specs = [  # depth, width factor, half height, how far inside (aux)
        (0.0030 * k, 0.96, 0.0016 * k, 0.1),
        (0.0110 * k, 0.86, 0.0100 * k, 0.4),
        (0.0220 * k, 0.62, 0.0120 * k, 0.65),
    ]
    ring_ids: list[list[int]] = [
        [cavity.add_vertex(pt, tag) for pt, tag in loop],
    ]
    for depth, width, height, inside in ring_specs:
        ids = []
        for pt, tag in loop:
            side = 1.0 if tag == TAG_UPPER else -1.0 if tag == TAG_LOWER else 0.0
            lens = max(0.0, 1.0 - (pt[0] / slit_w) ** 2)
            q = (pt[0] * width, my + side * height * (0.25 + 0.75 * lens), pt[2] - depth)
            ids.append(cavity.add_vertex(q, tag, inside))
        ring_ids.append(ids)
    deep = cavity.add_vertex((0.0, my, mouth_z - 0.030 * k), TAG_FIELD, 0.8)
    n_loop = len(loop)
    cavity_labels: list[int] = []
    for r in range(len(ring_ids) - 1):
        for i in range(n_loop):
            a, b = ring_ids[r][i], ring_ids[r + 1][i]
            a1, b1 = ring_ids[r][(i + 1) % n_loop], ring_ids[r + 1][(i + 1) % n_loop]
            cavity.add_triangle(a, a1, b)
            cavity.add_triangle(a1, b1, b)
            cavity_labels.extend((1 if r == 0 else 2, 1 if r == 0 else 2))
    last = ring_ids[-1]
    for i in range(n_loop):
        cavity.add_triangle(last[i], last[(i + 1) % n_loop], deep)
        cavity_labels.append(2)
    # The cavity must face inwards: it is seen from inside through the lips.
    if cavity.signed_volume((0.0, my, mouth_z - 0.012 * k)) > 0.0:
        cavity.flip()
    cavity.compute_normals()
    cavity_parts = split_faces(cavity, cavity_labels, (1, 2))

    skin = head_parts[0]
    skin.extend(ears)
    skin.extend(lids)
    lips = head_parts.get(1, Geometry(normals=[]))
    lips.extend(cavity_parts.get(1, Geometry(normals=[])))
    parts = {
        SKIN: skin,
        LIPS: lips,
        MOUTH: cavity_parts[2],
        TEETH: teeth,
        BROWS: brows,
    }
    landmarks = FaceLandmarks(
        mouth_y=my,
        mouth_z=mouth_z,
        slit_w=slit_w,
        mouth_w=p.mouth_w,
        hinge=(0.0, p.eye_y - 0.25 * p.ry, -0.15 * p.rz),
        brow_inner=brow_inner,
        brow_outer=brow_outer,
        brow_y=brow_y,
        brow_z=shape.surface_at(p.eye_x, brow_y)[2],
        eye_centers=(
            sub(anchors.eye_centers[0], shape.center),
            sub(anchors.eye_centers[1], shape.center),
        ),
        eye_shape=(p.eye_tall, p.eye_flat),
    )
    world_parts = {key: g.translated(shape.center) for key, g in parts.items() if g.indices}
    return Face(parts=world_parts, landmarks=landmarks, anchors=anchors)


def _ear_attach(shape: HeadShape, sign: float) -> Vec3:
    p = shape.p
    ear_y = 0.5 * (p.eye_y + p.nose_tip_y) + 0.004 * p.k
    theta = shape.theta_for_y(ear_y, sign * 0.5 * math.pi)
    return shape.local(theta, sign * (0.5 * math.pi + 0.14))


def face_anchors(shape: HeadShape) -> FaceAnchors:
    """Where the eyes and ears are: independent of the level of detail."""
    p = shape.p
    eye_centers: list[Vec3] = []
    for sign in (1.0, -1.0):
        surf = shape.surface_at(sign * p.eye_x, p.eye_y)
        depth = p.eye_r * p.eye_flat
        local = (sign * p.eye_x, p.eye_y, surf[2] - depth * (1.0 - p.protrude))
        eye_centers.append(shape.world(local))
    lobes: list[Vec3] = []
    tops: list[Vec3] = []
    for sign in (1.0, -1.0):
        _, lobe, top = _ear(p, _ear_attach(shape, sign), sign, 6)
        lobes.append(shape.world(lobe))
        tops.append(shape.world(top))
    return FaceAnchors(
        eye_centers=(eye_centers[0], eye_centers[1]),
        ear_lobes=(lobes[0], lobes[1]),
        ear_tops=(tops[0], tops[1]),
    )


def _ear(p: Proportions, attach: Vec3, sign: float, segments: int) -> tuple[Geometry, Vec3, Vec3]:
    """One ear at ``attach`` (head-local) on side ``sign``; returns it, its lobe and top."""
    k = p.k
    size = p.ear_size
    if p.ear_type == "bolt":
        x0 = attach[0] - sign * 0.003 * k
        x1 = attach[0] + sign * 0.010 * k
        path = [(min(x0, x1), attach[1], attach[2]), (max(x0, x1), attach[1], attach[2])]
        r = 0.45 * size
        ear = tube(
            path,
            [(r, r), (r, r)],
            segments,
            reference=(0.0, 1.0, 0.0),
            cap_start=True,
            cap_end=True,
        )
        ear.compute_normals()
        lobe = (attach[0] + sign * 0.006 * k, attach[1] - r, attach[2])
        return ear.set_tag(TAG_STATIC), lobe, (attach[0], attach[1] + r, attach[2])

    thick = 0.0065 * k
    if p.ear_type == "round":
        radii = (thick, 0.42 * size, 0.36 * size)
    else:
        radii = (thick, 0.5 * size, 0.31 * size)
    base = ellipsoid((0.0, 0.0, 0.0), radii, segments, max(6, segments * 3 // 4))
    elf = p.ear_type == "elf"
    yaw = sign * 0.35
    tilt = -0.25

    def place(q: Vec3) -> Vec3:
        x, y, z = q
        if elf and y > 0.0:
            t = y / radii[1]
            y *= 1.0 + 1.5 * t * t
            z -= 0.9 * radii[2] * t * t
            narrow = 1.0 - 0.75 * t**3
            x *= narrow
            z *= 1.0 if z < 0 else narrow
        # lean back (about X), then turn outwards (about Y)
        cy, sy = math.cos(tilt), math.sin(tilt)
        y, z = y * cy - z * sy, y * sy + z * cy
        cw, sw = math.cos(yaw), math.sin(yaw)
        x, z = x * cw + z * sw, -x * sw + z * cw
        return (attach[0] + sign * 0.35 * thick + x, attach[1] + y, attach[2] + z)

    ear = base.transformed(place).compute_normals()
    lobe = place((0.0, -0.85 * radii[1], 0.1 * radii[2]))
    top = place((0.0, 0.9 * radii[1], 0.0))
    return ear.set_tag(TAG_STATIC), add(lobe, (sign * 0.5 * thick, 0.0, 0.0)), top


def _eyelids(shape: HeadShape, anchors: FaceAnchors, detail: float) -> Geometry:
    """Upper and lower lids: shells just outside each eyeball, in head-local space."""
    p = shape.p
    wide = p.eye_tall > 1.1  # big stylised eyes show more of the eye, under thinner lids
    f = 1.05 if wide else 1.1
    radii = (p.eye_r * f, p.eye_r * p.eye_tall * f, p.eye_r * p.eye_flat * f)
    cols = segments_for(18, detail, 6, even=True)
    nrows = segments_for(6, detail, 4)  # enough rows to stay clear of the eye when closed
    spread = LID_SPREAD
    lids = Geometry(normals=[])
    for centre_world in anchors.eye_centers:
        c = sub(centre_world, shape.center)
        for tag, edge0, down in (
            (TAG_LID_UPPER, LID_EDGES[wide][0], 1.0),
            (TAG_LID_LOWER, LID_EDGES[wide][1], -1.0),
        ):
            rows: list[list[Vec3]] = []
            weights: list[float] = []
            for r in range(nrows + 2):
                row = []
                for ci in range(cols + 1):
                    psi = -spread + 2.0 * spread * ci / cols
                    edge = math.pi * (edge0 + (0.5 - edge0) * (abs(psi) / spread) ** 2)
                    if r <= nrows:
                        theta = LID_TOP + (edge - LID_TOP) * r / nrows
                        tuck = 1.0
                    else:  # tuck the edge back onto the eyeball: a lid with thickness
                        theta = edge + 0.03 * math.pi
                        tuck = 0.93
                    st = math.sin(theta)
                    q = (
                        c[0] + radii[0] * tuck * st * math.sin(psi),
                        c[1] + down * radii[1] * tuck * math.cos(theta),
                        c[2] + radii[2] * tuck * st * math.cos(psi),
                    )
                    row.append(q)
                rows.append(row)
                weights.append(min(1.0, r / nrows) ** 2)
            lid = grid(rows, wrap=False)
            lid.tags = [tag] * len(lid.positions)
            lid.aux = [weights[i // (cols + 1)] for i in range(len(lid.positions))]
            if lid.signed_volume(c) < 0.0:
                lid.flip()
            lids.extend(lid.compute_normals())
    return lids


def _teeth(shape: HeadShape, my: float, detail: float) -> Geometry:
    """Upper and lower rows of teeth just behind the lips (head-local)."""
    p = shape.p
    k = p.k
    segments = segments_for(14, detail, 4)
    # A coarse face has flatter lips: set the teeth further back so they never show through.
    back = 1.0 + 0.8 * (1.0 - min(1.0, detail / 0.5))
    teeth = Geometry(normals=[])
    for tag, y_off, depth, half_h in (
        (TAG_TEETH_UPPER, 0.0030 * k, 0.0060 * k, 0.0040 * k),
        (TAG_TEETH_LOWER, -0.0040 * k, 0.0068 * k, 0.0034 * k),
    ):
        path: list[Vec3] = []
        for i in range(segments + 1):
            x = p.mouth_w * 0.7 * (-1.0 + 2.0 * i / segments)
            z = shape.surface_at(x, my)[2] - depth * back
            path.append((x, my + y_off, z))
        radii = [(0.0017 * k, half_h)] * len(path)
        bar = tube(
            path,
            radii,
            segments_for(6, detail, 4),
            reference=(0.0, 1.0, 0.0),
            cap_start=True,
            cap_end=True,
        )
        teeth.extend(bar.compute_normals().set_tag(tag))
    return teeth


def _brows(shape: HeadShape, detail: float) -> tuple[Geometry, float, float, float]:
    """Both eyebrows (head-local) and their inner |x|, outer |x| and height."""
    p = shape.p
    k = p.k
    brow_inner = max(0.35 * p.eye_x, p.eye_x - 1.0 * p.eye_r)
    brow_outer = p.eye_x + 1.25 * p.eye_r + 0.004 * k
    brow_y = p.eye_y + p.brow_gap
    points = segments_for(14, detail, 5)
    brows = Geometry(normals=[])
    for sign in (1.0, -1.0):
        path: list[Vec3] = []
        radii: list[tuple[float, float]] = []
        ups: list[Vec3] = []
        for i in range(points + 1):
            t = i / points
            if sign < 0.0:
                t = 1.0 - t  # keep x increasing along the path
            x = sign * (brow_inner + (brow_outer - brow_inner) * t)
            y = brow_y + p.brow_arch * math.sin(math.pi * min(1.0, t * 1.1)) - 0.002 * k * t
            theta, phi = shape.angles_at(x, y)
            n = shape.normal(theta, phi)
            path.append(add(shape.local(theta, phi), scale(n, 0.0008 * k)))
            radii.append((0.0011 * k, p.brow_thick * (1.0 - 0.55 * t * t)))
            up = normalize(cross(n, (1.0, 0.0, 0.0)))
            ups.append((-up[0], -up[1], -up[2]) if up[1] < 0 else up)
        bar = tube(
            path,
            radii,
            segments_for(8, detail, 4),
            reference=ups,
            cap_start=True,
            cap_end=True,
        )
        brows.extend(bar.compute_normals().set_tag(TAG_BROW))
    return brows, brow_inner, brow_outer, brow_y

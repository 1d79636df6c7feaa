"""``generate_glb``: a spec and a level of detail in, a glTF 2.0 binary out."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import pygltflib

from .accessories import FABRIC, METAL, build_body_accessories, build_head_accessories
from .body import (
    CLOTHING,
    COLLAR,
    FINGER_REGIONS,
    HANDS,
    NECK,
    REGION_ARM,
    REGION_FOOT,
    REGION_HAND,
    REGION_LEG,
    SHOES,
    TROUSERS,
    build_body,
)
from .clips import ANIMATED, Clip, build_clips
from .eyes import EYE_PARTS, IRIS, PUPIL, SCLERA, build_eye
from .geometry import Geometry, Vec3, flat_shaded
from .glb import GlbBuilder, triangle_count
from .hair import HAIR, HAIR_TIE, build_hair
from .head import (
    BROWS,
    FACE_PARTS,
    LIPS,
    MOUTH,
    SKIN,
    TEETH,
    Face,
    HeadShape,
    build_face,
    face_anchors,
)
from .morphs import MORPH_TARGET_NAMES, build_morph_targets
from .rig import BONE_INDEX, BONE_NAMES, PARENT, Skeleton, Weigher, Weights, build_skeleton, rigid
from .spec import ProceduralSpec, srgb_to_linear
from .styles import Proportions, proportions
from .vrm import VRM_EXTENSION, vrm_extension

GENERATOR = "arconv-procedural"
LOD_TRIANGLES: tuple[int, ...] = (15000, 8000, 3000)
# Tessellation of everything but the head surface, per LOD (triangles grow with its square).
_LOD_DETAIL = (1.0, 0.74, 0.46)
# At most this share of a LOD's triangles goes to everything but the face.
_MAX_OTHER_SHARE = (0.58, 0.55, 0.48)
_MIN_DETAIL = 0.12
_MIN_FACE_TRIANGLES = 900

ProgressCallback = Callable[[str, float], None]

__all__ = ["GENERATOR", "LOD_TRIANGLES", "ProgressCallback", "generate_glb", "triangle_count"]


@dataclass
class _Parts:
    body: dict[str, Geometry]
    eyes: tuple[dict[str, Geometry], dict[str, Geometry]]  # left, right, in place
    hair: dict[str, Geometry]
    headwear: dict[str, Geometry]

    def triangles(self) -> int:
        total = sum(g.triangle_count for g in self.body.values())
        total += sum(g.triangle_count for eye in self.eyes for g in eye.values())
        total += sum(g.triangle_count for g in self.hair.values())
        total += sum(g.triangle_count for g in self.headwear.values())
        return total


def _face_triangles(face: Face) -> int:
    return sum(g.triangle_count for g in face.parts.values())


def generate_glb(
    spec: ProceduralSpec,
    lod: int = 0,
    progress: ProgressCallback | None = None,
) -> bytes:
    """Build the standing, rigged, animated avatar for ``spec`` at ``lod`` (0, 1 or 2).

    The result is a glTF 2.0 binary (a VRM 1.0 model: the ``VRMC_vrm`` extension)
    with about ``LOD_TRIANGLES[lod]`` triangles, a humanoid skin, the face's morph
    targets and the clips of ``clips.CLIP_NAMES``.
    The same spec and LOD always give the same bytes. ``progress`` is called
    with ``(stage, fraction)`` as the build advances, ending with
    ``("done", 1.0)``.

    Raises ``ValueError`` for an unknown LOD.
    """
    if isinstance(lod, bool) or lod not in range(len(LOD_TRIANGLES)):
        raise ValueError(f"lod must be 0, 1 or 2; got {lod!r}")

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, fraction)

    report("proportions", 0.0)
    target = LOD_TRIANGLES[lod]
    props = proportions(spec)
    shape = HeadShape(props)
    anchors = face_anchors(shape)
    skeleton = build_skeleton(props, anchors.eye_centers)

    report("parts", 0.1)
    detail = _LOD_DETAIL[lod]
    parts = _build_parts(spec, props, shape, skeleton, detail)
    share = _MAX_OTHER_SHARE[lod]
    while parts.triangles() > share * target and detail > _MIN_DETAIL:
        # Triangles grow about with the square of the detail: aim just under the share.
        ratio = math.sqrt(share * target / parts.triangles())
        detail = max(_MIN_DETAIL, detail * min(0.95, 0.97 * ratio))
        parts = _build_parts(spec, props, shape, skeleton, detail)

    report("face", 0.35)
    others = parts.triangles()
    budget = max(_MIN_FACE_TRIANGLES, target - others)
    face = build_face(shape, budget, detail)
    for _ in range(3):
        missing = target - others - _face_triangles(face)
        if abs(missing) <= target * 0.015:
            break
        budget = max(_MIN_FACE_TRIANGLES, budget + missing)
        face = build_face(shape, budget, detail)

    report("morphs", 0.6)
    if props.flat:
        # Faceted look: every triangle gets its own vertices and face normal. The
        # face keeps smooth normals (its boxy shape already reads as hard-edged):
        # unwelding it would triple the vertices every morph target stores.
        parts = _Parts(
            body={key: flat_shaded(g) for key, g in parts.body.items()},
            eyes=parts.eyes,
            hair={key: flat_shaded(g) for key, g in parts.hair.items()},
            headwear={key: flat_shaded(g) for key, g in parts.headwear.items()},
        )
    morphs = build_morph_targets(face.parts, face.landmarks, shape.center, props.k)

    report("encode", 0.8)
    glb = _encode(spec, props, lod, shape, skeleton, face, parts, morphs)
    report("done", 1.0)
    return glb


def _build_parts(
    spec: ProceduralSpec, props: Proportions, shape: HeadShape, sk: Skeleton, detail: float
) -> _Parts:
    body = build_body(props, sk, detail)
    body_parts = dict(body.parts)
    for key, geom in build_body_accessories(body.torso, spec.accessories, detail, props.k).items():
        body_parts[key] = geom
    anchors = face_anchors(shape)
    hair = build_hair(
        shape,
        spec.hair_style,
        detail,
        hat="hat" in spec.accessories,
        shoulder_y=props.torso_top_y,
    )
    headwear = build_head_accessories(
        shape, anchors, spec.accessories, detail, hair=spec.hair_style
    )
    eye = build_eye(props, detail)
    eyes = tuple(
        {key: g.translated(centre) for key, g in eye.items()} for centre in anchors.eye_centers
    )
    return _Parts(body=body_parts, eyes=(eyes[0], eyes[1]), hair=hair, headwear=headwear)


# --- materials --------------------------------------------------------------------


def _mix(a: str, b: tuple[float, float, float], t: float) -> str:
    r, g, bl = (int(a[i : i + 2], 16) / 255.0 for i in (1, 3, 5))
    mixed = (r + (b[0] - r) * t, g + (b[1] - g) * t, bl + (b[2] - bl) * t)
    return "#" + "".join(f"{round(max(0.0, min(1.0, c)) * 255):02x}" for c in mixed)


def _shade(a: str, factor: float) -> str:
    return _mix(a, (0.0, 0.0, 0.0), 1.0 - factor)


def _pbr(
    name: str,
    color: str,
    *,
    metallic: float = 0.0,
    roughness: float = 0.6,
    double_sided: bool = False,
    emissive: str | None = None,
) -> pygltflib.Material:
    rgb = srgb_to_linear(color)
    material = pygltflib.Material(
        name=name,
        pbrMetallicRoughness=pygltflib.PbrMetallicRoughness(
            baseColorFactor=[round(c, 5) for c in rgb] + [1.0],
            metallicFactor=metallic,
            roughnessFactor=roughness,
        ),
        doubleSided=double_sided,
    )
    if emissive is not None:
        material.emissiveFactor = [round(c, 5) for c in srgb_to_linear(emissive)]
    return material


def _materials(spec: ProceduralSpec, p: Proportions) -> dict[str, pygltflib.Material]:
    robot = p.style == "robot"
    skin = _pbr("Skin", spec.skin_color, metallic=p.metal, roughness=p.rough)
    if robot:
        lips = _pbr("MouthTrim", "#4a4e58", metallic=0.8, roughness=0.35)
        mouth = _pbr("MouthInterior", "#060608", roughness=0.9)
        teeth = _pbr("Teeth", "#b8bcc4", metallic=0.9, roughness=0.3)
        brows = _pbr("Brows", spec.accent_color, metallic=0.9, roughness=0.3)
        sclera = _pbr("EyeWhite", "#0b0c10", metallic=0.2, roughness=0.1)
        iris = _pbr("Iris", spec.eye_color, roughness=0.2, emissive=spec.eye_color)
        pupil = _pbr("Pupil", _mix(spec.eye_color, (1.0, 1.0, 1.0), 0.6), roughness=0.2,
                     emissive=_mix(spec.eye_color, (1.0, 1.0, 1.0), 0.6))  # fmt: skip
    else:
        tint = 0.15 if p.lips < 0.5 else 0.38
        lips = _pbr("Lips", _mix(spec.skin_color, (0.72, 0.30, 0.32), tint), roughness=0.45)
        mouth = _pbr("MouthInterior", "#4a1518", roughness=0.7)
        teeth = _pbr("Teeth", "#f0ebe0", roughness=0.3)
        brows = _pbr("Brows", _shade(spec.hair_color, 0.85), roughness=0.8)
        sclera = _pbr("EyeWhite", "#f4f2ee", roughness=0.15)
        iris = _pbr("Iris", spec.eye_color, roughness=0.15)
        pupil = _pbr("Pupil", "#050505", roughness=0.1)
    return {
        SKIN: skin,
        NECK: skin,
        LIPS: lips,
        MOUTH: mouth,
        TEETH: teeth,
        BROWS: brows,
        SCLERA: sclera,
        IRIS: iris,
        PUPIL: pupil,
        HAIR: _pbr(
            "Hair",
            spec.hair_color,
            roughness=0.65,
            double_sided=True,
            metallic=0.5 if robot else 0.0,
        ),
        CLOTHING: _pbr("Clothing", spec.clothing_color, roughness=0.85),
        TROUSERS: _pbr("Trousers", _shade(spec.clothing_color, 0.55), roughness=0.9),
        SHOES: _pbr("Shoes", "#2a2622", roughness=0.5, metallic=0.6 if robot else 0.0),
        HANDS: skin,
        COLLAR: _pbr("Trim", spec.accent_color, roughness=0.8),
        HAIR_TIE: _pbr("Trim", spec.accent_color, roughness=0.8),
        FABRIC: _pbr("Trim", spec.accent_color, roughness=0.8),
        METAL: _pbr("Metal", spec.accent_color, metallic=0.9, roughness=0.3),
    }


# --- skinning ---------------------------------------------------------------------


def _body_weights(weigher: Weigher, tag: int, q: Vec3) -> Weights:
    for side_index, side in enumerate(("left", "right")):
        if tag == REGION_ARM[side_index]:
            return weigher.arm(side, q)
        if tag == REGION_LEG[side_index]:
            return weigher.leg(side, q)
        if tag == REGION_FOOT[side_index]:
            return weigher.foot(side, q)
        if tag == REGION_HAND[side_index]:
            return weigher.arm(side, q)
        for finger, regions in FINGER_REGIONS.items():
            if tag == regions[side_index]:
                return weigher.finger(side, finger, q)
    return weigher.torso(q)


# --- encoding -------------------------------------------------------------------


class _Space:
    """Generator coordinates to file coordinates: soles on y = 0, scaled to the height."""

    def __init__(self, props: Proportions, sk: Skeleton, top_y: float) -> None:
        self.floor = sk.floor_y
        self.scale = props.height / (top_y - sk.floor_y)

    def point(self, v: Vec3) -> Vec3:
        s = self.scale
        return (round(v[0] * s, 6), round((v[1] - self.floor) * s, 6), round(v[2] * s, 6))

    def vector(self, v: Vec3) -> Vec3:
        s = self.scale
        return (round(v[0] * s, 6), round(v[1] * s, 6), round(v[2] * s, 6))


class _Encoder:
    def __init__(self, spec: ProceduralSpec, props: Proportions, space: _Space) -> None:
        self.builder = GlbBuilder()
        self.gltf = self.builder.gltf
        self.library = _materials(spec, props)
        self.space = space
        self._material_ids: dict[str, int] = {}

    def material(self, key: str) -> int:
        material = self.library[key]
        name = material.name or key
        if name not in self._material_ids:
            self.gltf.materials.append(material)
            self._material_ids[name] = len(self.gltf.materials) - 1
        return self._material_ids[name]

    def primitive(self, geom: Geometry, key: str, weights: list[Weights]) -> pygltflib.Primitive:
        if geom.normals is None:
            geom.compute_normals()
        assert geom.normals is not None
        b = self.builder
        positions = [self.space.point(p) for p in geom.positions]
        normals = geom.normals
        joints: list[tuple[int, int, int, int]] = []
        flat_weights: list[float] = []
        for vw in weights:
            padded = list(vw) + [(0, 0.0)] * (4 - len(vw))
            joints.append((padded[0][0], padded[1][0], padded[2][0], padded[3][0]))
            flat_weights.extend(w for _, w in padded)
        return pygltflib.Primitive(
            attributes=pygltflib.Attributes(
                POSITION=b.vec3(positions, bounds=True),
                NORMAL=b.vec3(normals, bounds=False),
                JOINTS_0=b.joints(joints),
                WEIGHTS_0=b.floats(flat_weights, "VEC4", bounds=False),
            ),
            indices=b.indices(geom.indices, len(positions)),
            material=self.material(key),
            mode=4,
        )

    def mesh(
        self,
        name: str,
        parts: Mapping[str, Geometry],
        order: Iterable[str],
        weigh: Callable[[Geometry], list[Weights]],
    ) -> int | None:
        prims = [
            self.primitive(parts[key], key, weigh(parts[key])) for key in order if key in parts
        ]
        if not prims:
            return None
        self.gltf.meshes.append(pygltflib.Mesh(name=name, primitives=prims))
        return len(self.gltf.meshes) - 1

    def node(self, node: pygltflib.Node) -> int:
        self.gltf.nodes.append(node)
        return len(self.gltf.nodes) - 1


def _encode(
    spec: ProceduralSpec,
    props: Proportions,
    lod: int,
    shape: HeadShape,
    sk: Skeleton,
    face: Face,
    parts: _Parts,
    morphs: Mapping[str, Mapping[str, list[tuple[int, Vec3]]]],
) -> bytes:
    crown = shape.world(shape.local(0.0, 0.0))[1]  # the same at every level of detail
    space = _Space(props, sk, crown)
    enc = _Encoder(spec, props, space)
    gltf = enc.gltf
    b = enc.builder
    weigher = Weigher(sk, props)

    # The skeleton: nodes 0..n-1 in BONE_NAMES order, rest rotations all identity.
    world = [space.point(p) for p in sk.positions]
    for i, name in enumerate(BONE_NAMES):
        parent = PARENT[i]
        if parent < 0:
            t = world[i]
        else:
            t = space.vector(tuple(sk.positions[i][c] - sk.positions[parent][c] for c in range(3)))  # type: ignore[arg-type]
        children = [j for j in range(len(BONE_NAMES)) if PARENT[j] == i]
        enc.node(pygltflib.Node(name=name, translation=list(t), children=children))
    inverse_bind: list[float] = []
    for x, y, z in world:
        inverse_bind += [
            1.0,
            0.0,
            0.0,
            0.0,
            0.0,
            1.0,
            0.0,
            0.0,
            0.0,
            0.0,
            1.0,
            0.0,
            -x,
            -y,
            -z,
            1.0,
        ]
    gltf.skins.append(
        pygltflib.Skin(
            name="Humanoid",
            joints=list(range(len(BONE_NAMES))),
            skeleton=BONE_INDEX["hips"],
            inverseBindMatrices=b.floats(inverse_bind, "MAT4", bounds=False, target=None),
        )
    )

    def body_weights(geom: Geometry) -> list[Weights]:
        return [
            _body_weights(weigher, t, q) for t, q in zip(geom.tags, geom.positions, strict=True)
        ]

    def rigid_to(bone: str) -> Callable[[Geometry], list[Weights]]:
        w = rigid(bone)
        return lambda geom: [w] * len(geom.positions)

    order = (CLOTHING, COLLAR, NECK, TROUSERS, SHOES, HANDS, METAL)
    body_mesh = enc.mesh("Body", parts.body, order, body_weights)

    head_weights = rigid_to("head")
    face_keys = [key for key in FACE_PARTS if key in face.parts]
    prims = []
    for key in face_keys:
        geom = face.parts[key]
        prim = enc.primitive(geom, key, head_weights(geom))
        count = len(geom.positions)
        prim.targets = [
            {"POSITION": b.sparse_vec3(count, [(i, space.vector(d)) for i, d in morphs[name][key]])}
            for name in MORPH_TARGET_NAMES
        ]
        prims.append(prim)
    gltf.meshes.append(
        pygltflib.Mesh(
            name="Face",
            primitives=prims,
            weights=[0.0] * len(MORPH_TARGET_NAMES),
            extras={"targetNames": list(MORPH_TARGET_NAMES)},
        )
    )
    face_mesh = len(gltf.meshes) - 1
    eye_meshes = [
        enc.mesh(name, eye, EYE_PARTS, rigid_to(bone))
        for name, eye, bone in zip(
            ("EyeLeft", "EyeRight"), parts.eyes, ("leftEye", "rightEye"), strict=True
        )
    ]
    hair_mesh = enc.mesh("Hair", parts.hair, (HAIR, HAIR_TIE), head_weights)
    headwear_mesh = enc.mesh("Headwear", parts.headwear, (FABRIC, METAL), head_weights)

    roots = [BONE_INDEX["hips"]]
    mesh_nodes: dict[str, int] = {}
    for name, mesh in (
        ("Body", body_mesh),
        ("Face", face_mesh),
        ("EyeLeft", eye_meshes[0]),
        ("EyeRight", eye_meshes[1]),
        ("Hair", hair_mesh),
        ("Headwear", headwear_mesh),
    ):
        if mesh is not None:
            mesh_nodes[name] = enc.node(pygltflib.Node(name=name, mesh=mesh, skin=0))
            roots.append(mesh_nodes[name])

    _animations(b, sk, space, mesh_nodes["Face"])

    head = sk.at("head")
    eyes_mid = tuple(
        0.5 * (a + c) for a, c in zip(sk.at("leftEye"), sk.at("rightEye"), strict=True)
    )
    gltf.extensionsUsed = [VRM_EXTENSION]
    gltf.extensions = {
        VRM_EXTENSION: vrm_extension(
            name=f"arconv {spec.style} avatar",
            bones={name: BONE_INDEX[name] for name in BONE_NAMES},
            face_node=mesh_nodes["Face"],
            look_offset=space.vector((0.0, eyes_mid[1] - head[1], eyes_mid[2] - head[2])),
        )
    }
    gltf.asset = pygltflib.Asset(
        version="2.0",
        generator=GENERATOR,
        extras={
            "style": spec.style,
            "lod": lod,
            "hairStyle": spec.hair_style,
            "bodyType": spec.body_type,
            "accessories": list(spec.accessories),
            "seed": spec.seed,
            "heightMetres": round(props.height, 4),
            "targetTriangles": LOD_TRIANGLES[lod],
        },
    )
    gltf.scenes = [pygltflib.Scene(name="Avatar", nodes=roots)]
    gltf.scene = 0
    return b.to_bytes()


@dataclass(frozen=True)
class _Track:
    node: int  # a bone index, or -1 for the face's morph weights
    path: str
    kind: str
    values: tuple[float, ...]  # flat; two keys (start and end) when constant
    constant: bool


def _add_track(
    tracks: list[_Track], node: int, path: str, kind: str, rows: list[tuple[float, ...]]
) -> None:
    constant = all(r == rows[0] for r in rows)
    keep = [rows[0], rows[0]] if constant else rows
    tracks.append(_Track(node, path, kind, tuple(c for r in keep for c in r), constant))


_track_cache: dict[tuple[Skeleton, float], list[tuple[Clip, list[_Track]]]] = {}


def _tracks(sk: Skeleton, space: _Space) -> list[tuple[Clip, list[_Track]]]:
    """Every clip's channels as flat values; shared by the LODs of one avatar."""
    key = (sk, space.scale)
    cached = _track_cache.get(key)
    if cached is not None:
        return cached
    hips_bind = space.point(sk.at("hips"))
    unit = sk.body * space.scale
    out = []
    for clip in build_clips(sk):
        tracks: list[_Track] = []
        add = partial(_add_track, tracks)
        add(
            BONE_INDEX["hips"],
            "translation",
            "VEC3",
            [tuple(hips_bind[c] + f.hips[c] * unit for c in range(3)) for f in clip.frames],
        )
        for bone in ANIMATED:
            add(BONE_INDEX[bone], "rotation", "VEC4", [f.rotations[bone] for f in clip.frames])
        if clip.morphs:
            rows = [tuple(f.morphs.get(n, 0.0) for n in MORPH_TARGET_NAMES) for f in clip.frames]
            tracks.append(_Track(-1, "weights", "SCALAR", tuple(w for r in rows for w in r), False))
        out.append((clip, tracks))
    if len(_track_cache) > 16:
        _track_cache.clear()
    _track_cache[key] = out
    return out


def _animations(b: GlbBuilder, sk: Skeleton, space: _Space, face_node: int) -> None:
    for clip, tracks in _tracks(sk, space):
        samplers: list[pygltflib.AnimationSampler] = []
        channels: list[pygltflib.AnimationChannel] = []
        times = b.floats(clip.times, "SCALAR", bounds=True, target=None, share=True)
        ends = b.floats([0.0, clip.times[-1]], "SCALAR", bounds=True, target=None, share=True)
        for track in tracks:
            output = b.floats(track.values, track.kind, bounds=False, target=None, share=True)
            samplers.append(
                pygltflib.AnimationSampler(
                    input=ends if track.constant else times, output=output, interpolation="LINEAR"
                )
            )
            node = face_node if track.node < 0 else track.node
            channels.append(
                pygltflib.AnimationChannel(
                    sampler=len(samplers) - 1,
                    target=pygltflib.AnimationChannelTarget(node=node, path=track.path),
                )
            )
        b.gltf.animations.append(
            pygltflib.Animation(name=clip.name, samplers=samplers, channels=channels)
        )

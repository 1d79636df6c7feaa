"""``generate_glb``: a spec and a level of detail in, a glTF 2.0 binary out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .accessories import FABRIC, METAL, build_body_accessories, build_head_accessories
from .body import CLOTHING, COLLAR, NECK, build_body
from .eyes import EYE_PARTS, IRIS, PUPIL, SCLERA, build_eye
from .geometry import Geometry, Vec3, flat_shaded
from .glb import GlbBuilder, JsonObject, triangle_count
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
from .spec import ProceduralSpec, srgb_to_linear
from .styles import Proportions, proportions

GENERATOR = "arconv-procedural"
LOD_TRIANGLES: tuple[int, ...] = (15000, 8000, 3000)
# Tessellation of everything but the head surface, per LOD (triangles grow with its square).
_LOD_DETAIL = (1.0, 0.74, 0.46)
_MAX_OTHER_SHARE = 0.58
_MIN_DETAIL = 0.12
_MIN_FACE_TRIANGLES = 900

ProgressCallback = Callable[[str, float], None]

__all__ = ["GENERATOR", "LOD_TRIANGLES", "ProgressCallback", "generate_glb", "triangle_count"]


@dataclass
class _Parts:
    body: dict[str, Geometry]
    eye: dict[str, Geometry]
    hair: dict[str, Geometry]
    headwear: dict[str, Geometry]

    def triangles(self) -> int:
        total = sum(g.triangle_count for g in self.body.values())
        total += 2 * sum(g.triangle_count for g in self.eye.values())
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
    """Build the avatar bust for ``spec`` at level of detail ``lod`` (0, 1 or 2).

    The result is a glTF 2.0 binary with about ``LOD_TRIANGLES[lod]`` triangles.
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

    report("parts", 0.1)
    detail = _LOD_DETAIL[lod]
    parts = _build_parts(spec, props, shape, detail)
    while parts.triangles() > _MAX_OTHER_SHARE * target and detail > _MIN_DETAIL:
        detail *= 0.85
        parts = _build_parts(spec, props, shape, detail)

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
            eye=parts.eye,
            hair={key: flat_shaded(g) for key, g in parts.hair.items()},
            headwear={key: flat_shaded(g) for key, g in parts.headwear.items()},
        )
    morphs = build_morph_targets(face.parts, face.landmarks, shape.center, props.k)

    report("encode", 0.85)
    glb = _encode(spec, props, lod, face, parts, morphs)
    report("done", 1.0)
    return glb


def _build_parts(
    spec: ProceduralSpec, props: Proportions, shape: HeadShape, detail: float
) -> _Parts:
    body = build_body(props, detail)
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
    return _Parts(body=body_parts, eye=build_eye(props, detail), hair=hair, headwear=headwear)


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
) -> JsonObject:
    rgb = srgb_to_linear(color)
    material: JsonObject = {
        "name": name,
        "pbrMetallicRoughness": {
            "baseColorFactor": [round(c, 5) for c in rgb] + [1.0],
            "metallicFactor": metallic,
            "roughnessFactor": roughness,
        },
    }
    if emissive is not None:
        material["emissiveFactor"] = [round(c, 5) for c in srgb_to_linear(emissive)]
    if double_sided:
        material["doubleSided"] = True
    return material


def _materials(spec: ProceduralSpec, p: Proportions) -> dict[str, JsonObject]:
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
        COLLAR: _pbr("Trim", spec.accent_color, roughness=0.8),
        HAIR_TIE: _pbr("Trim", spec.accent_color, roughness=0.8),
        FABRIC: _pbr("Trim", spec.accent_color, roughness=0.8),
        METAL: _pbr("Metal", spec.accent_color, metallic=0.9, roughness=0.3),
    }


# --- encoding -------------------------------------------------------------------


def _r(v: Vec3, offset: Vec3) -> Vec3:
    return (round(v[0] - offset[0], 6), round(v[1] - offset[1], 6), round(v[2] - offset[2], 6))


class _Encoder:
    def __init__(self, spec: ProceduralSpec, props: Proportions) -> None:
        self.gltf = GlbBuilder()
        self.library = _materials(spec, props)
        self._material_ids: dict[str, int] = {}

    def material(self, key: str) -> int:
        material = self.library[key]
        name = material["name"]
        if name not in self._material_ids:
            self._material_ids[name] = self.gltf.material(material)
        return self._material_ids[name]

    def primitive(self, geom: Geometry, key: str, origin: Vec3) -> JsonObject:
        if geom.normals is None:
            geom.compute_normals()
        assert geom.normals is not None
        zero = (0.0, 0.0, 0.0)
        positions = [_r(p, origin) for p in geom.positions]
        normals = [_r(n, zero) for n in geom.normals]
        return {
            "attributes": {
                "POSITION": self.gltf.vec3(positions, bounds=True),
                "NORMAL": self.gltf.vec3(normals, bounds=False),
            },
            "indices": self.gltf.indices(geom.indices, len(positions)),
            "material": self.material(key),
            "mode": 4,
        }

    def mesh(
        self, name: str, parts: Mapping[str, Geometry], order: Iterable[str], origin: Vec3
    ) -> int | None:
        prims = [self.primitive(parts[key], key, origin) for key in order if key in parts]
        if not prims:
            return None
        return self.gltf.mesh({"name": name, "primitives": prims})


def _encode(
    spec: ProceduralSpec,
    props: Proportions,
    lod: int,
    face: Face,
    parts: _Parts,
    morphs: Mapping[str, Mapping[str, list[tuple[int, Vec3]]]],
) -> bytes:
    enc = _Encoder(spec, props)
    gltf = enc.gltf
    origin = (0.0, 0.0, 0.0)
    pivot = (0.0, round(props.neck_top_y, 6), round(-0.01 * props.k, 6))

    body_mesh = enc.mesh("Body", parts.body, (CLOTHING, COLLAR, NECK, METAL), origin)

    face_keys = [key for key in FACE_PARTS if key in face.parts]
    prims = []
    for key in face_keys:
        prim = enc.primitive(face.parts[key], key, pivot)
        count = len(face.parts[key].positions)
        prim["targets"] = [
            {"POSITION": gltf.sparse_vec3(count, morphs[name][key])} for name in MORPH_TARGET_NAMES
        ]
        prims.append(prim)
    face_mesh = gltf.mesh(
        {
            "name": "Face",
            "primitives": prims,
            "weights": [0.0] * len(MORPH_TARGET_NAMES),
            "extras": {"targetNames": list(MORPH_TARGET_NAMES)},
        }
    )
    # One mesh per eye rather than one mesh placed twice, so that every triangle
    # count (ours, the validator's, a viewer's) agrees.
    eye_meshes = [enc.mesh(name, parts.eye, EYE_PARTS, origin) for name in ("EyeLeft", "EyeRight")]
    hair_mesh = enc.mesh("Hair", parts.hair, (HAIR, HAIR_TIE), pivot)
    headwear_mesh = enc.mesh("Headwear", parts.headwear, (FABRIC, METAL), pivot)

    avatar = gltf.node({"name": "Avatar", "children": []})
    children: list[int] = []
    if body_mesh is not None:
        children.append(gltf.node({"name": "Body", "mesh": body_mesh}))
    head = gltf.node({"name": "Head", "translation": list(pivot), "children": []})
    children.append(head)
    gltf.nodes[avatar]["children"] = children

    head_children = [gltf.node({"name": "Face", "mesh": face_mesh})]
    for name, mesh, centre in zip(
        ("EyeLeft", "EyeRight"), eye_meshes, face.anchors.eye_centers, strict=True
    ):
        if mesh is not None:
            translation = list(_r(centre, pivot))
            head_children.append(
                gltf.node({"name": name, "mesh": mesh, "translation": translation})
            )
    if hair_mesh is not None:
        head_children.append(gltf.node({"name": "Hair", "mesh": hair_mesh}))
    if headwear_mesh is not None:
        head_children.append(gltf.node({"name": "Headwear", "mesh": headwear_mesh}))
    gltf.nodes[head]["children"] = head_children

    asset: JsonObject = {
        "version": "2.0",
        "generator": GENERATOR,
        "extras": {
            "style": spec.style,
            "lod": lod,
            "hairStyle": spec.hair_style,
            "bodyType": spec.body_type,
            "accessories": list(spec.accessories),
            "seed": spec.seed,
            "targetTriangles": LOD_TRIANGLES[lod],
        },
    }
    return gltf.to_bytes(asset, {"name": "Avatar", "nodes": [avatar]})

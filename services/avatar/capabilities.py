"""What a stored model can drive, read from its GLB with pygltflib: skin, clips, morphs, VRM.

Every provider's file goes through `read_capabilities` before it is stored, so a client
learns from `Avatar.capabilities` alone whether a gesture clip can play, whether the face can
lip-sync by morph targets and whether VRM tooling will find a humanoid. A model that lacks
something (a provider's unrigged mesh) is still usable: it says so here.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import pygltflib

from services.avatar.providers.glb import InvalidGlb

VRM_EXTENSION = "VRMC_vrm"
MAX_NAMES = 256
MAX_NAME = 64
_CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Capabilities:
    rigged: bool = False
    clips: tuple[str, ...] = ()
    morph_targets: tuple[str, ...] = ()
    vrm: bool = False
    humanoid_bones: tuple[str, ...] = ()
    expressions: tuple[str, ...] = ()
    joint_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "rigged": self.rigged,
            "clips": list(self.clips),
            "morph_targets": list(self.morph_targets),
            "vrm": self.vrm,
            "humanoid_bones": list(self.humanoid_bones),
            "expressions": list(self.expressions),
            "joint_count": self.joint_count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Capabilities:
        return cls(
            rigged=bool(data.get("rigged", False)),
            clips=tuple(str(x) for x in data.get("clips", ())),
            morph_targets=tuple(str(x) for x in data.get("morph_targets", ())),
            vrm=bool(data.get("vrm", False)),
            humanoid_bones=tuple(str(x) for x in data.get("humanoid_bones", ())),
            expressions=tuple(str(x) for x in data.get("expressions", ())),
            joint_count=int(data.get("joint_count", 0)),
        )


class _Names:
    """Distinct, printable names of at most MAX_NAME characters, at most MAX_NAMES of them."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, name: object) -> None:
        if not isinstance(name, str) or not name or len(self.items) >= MAX_NAMES:
            return
        clean = _CONTROL.sub("", name)[:MAX_NAME]
        if clean and clean not in self.items:
            self.items.append(clean)


def _in_range(index: object, seq: list[Any] | None) -> bool:
    return isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(seq or [])


def _skinned(gltf: pygltflib.GLTF2) -> tuple[bool, int]:
    """Whether a mesh node is bound to a skin with joints, and that skin's joint count."""
    joints = 0
    for node in gltf.nodes or []:
        if not _in_range(node.mesh, gltf.meshes) or not _in_range(node.skin, gltf.skins):
            continue
        skin = gltf.skins[node.skin]
        ids = skin.joints if isinstance(skin.joints, list) else []
        valid = [j for j in ids if _in_range(j, gltf.nodes)]
        joints = max(joints, len(valid))
    return joints > 0, joints


def _vrm(gltf: pygltflib.GLTF2) -> tuple[bool, list[str], list[str]]:
    ext = (gltf.extensions or {}).get(VRM_EXTENSION) if isinstance(gltf.extensions, dict) else None
    if not isinstance(ext, dict):
        return False, [], []
    bones = _Names()
    humanoid = ext.get("humanoid")
    human_bones = humanoid.get("humanBones") if isinstance(humanoid, dict) else None
    if isinstance(human_bones, dict):
        for bone, target in human_bones.items():
            if isinstance(target, dict) and _in_range(target.get("node"), gltf.nodes):
                bones.add(bone)
    expressions = _Names()
    exprs = ext.get("expressions")
    if isinstance(exprs, dict):
        for group in ("preset", "custom"):
            entries = exprs.get(group)
            if isinstance(entries, dict):
                for name, value in entries.items():
                    if isinstance(value, dict):
                        expressions.add(name)
    return True, bones.items, expressions.items


def read_capabilities(data: bytes) -> Capabilities:
    """Reads a GLB (already checked by `inspect_glb`); raises InvalidGlb if pygltflib can't."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pygltflib warns about unknown chunks; we don't care
            gltf = pygltflib.GLTF2.load_from_bytes(data)
    except Exception as exc:  # a malformed file can fail in many ways inside the library
        raise InvalidGlb(f"the glTF library cannot read the model: {type(exc).__name__}") from exc
    if gltf is None:
        raise InvalidGlb("the glTF library found no JSON chunk")
    try:
        rigged, joints = _skinned(gltf)
        clips = _Names()
        for anim in gltf.animations or []:
            if anim.channels:
                clips.add(anim.name)
        morphs = _Names()
        for mesh in gltf.meshes or []:
            extras = mesh.extras if isinstance(mesh.extras, dict) else {}
            names = extras.get("targetNames")
            if isinstance(names, list):
                for name in names:
                    morphs.add(name)
        vrm, bones, expressions = _vrm(gltf)
    except (AttributeError, TypeError, ValueError) as exc:  # wrong JSON types in a provider file
        raise InvalidGlb(f"the model's glTF JSON has unexpected types: {exc}") from exc
    return Capabilities(
        rigged=rigged,
        clips=tuple(clips.items),
        morph_targets=tuple(morphs.items),
        vrm=vrm,
        humanoid_bones=tuple(bones),
        expressions=tuple(expressions),
        joint_count=joints,
    )

"""Procedural avatar generator: a standing, rigged, animated figure as a VRM 1.0 GLB.

Pure Python (no numpy); written and read with pygltflib. A humanoid skin with the
VRM 1.0 bone names, bound in the VRM T-pose; the face mesh carries the 15 Oculus
visemes, the marker emotions and blinks as morph targets (named in
``mesh.extras.targetNames``); clips ``idle``, ``gesture_<g>`` and ``pose_<p>`` for the
marker vocabulary; the ``VRMC_vrm`` extension maps bones and expressions.
"""

from .clips import CLIP_NAMES
from .generator import GENERATOR, LOD_TRIANGLES, ProgressCallback, generate_glb
from .glb import load_glb, triangle_count
from .morphs import BLINK_NAMES, EMOTION_NAMES, MORPH_TARGET_NAMES, VISEME_NAMES
from .rig import BONE_NAMES
from .spec import ACCESSORIES, BODY_TYPES, HAIR_STYLES, STYLES, ProceduralSpec

__all__ = [
    "ACCESSORIES",
    "BLINK_NAMES",
    "BODY_TYPES",
    "BONE_NAMES",
    "CLIP_NAMES",
    "EMOTION_NAMES",
    "GENERATOR",
    "HAIR_STYLES",
    "LOD_TRIANGLES",
    "MORPH_TARGET_NAMES",
    "STYLES",
    "VISEME_NAMES",
    "ProceduralSpec",
    "ProgressCallback",
    "generate_glb",
    "load_glb",
    "triangle_count",
]

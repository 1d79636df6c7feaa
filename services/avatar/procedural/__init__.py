"""Procedural avatar generator: a stylised head-and-shoulders bust as a glTF 2.0 GLB.

Pure Python (no numpy). The face mesh carries the 15 Oculus visemes and the
marker emotions as morph targets, named in ``mesh.extras.targetNames``.
"""

from .generator import GENERATOR, LOD_TRIANGLES, ProgressCallback, generate_glb
from .glb import read_glb_json, triangle_count
from .morphs import EMOTION_NAMES, MORPH_TARGET_NAMES, VISEME_NAMES
from .spec import ACCESSORIES, BODY_TYPES, HAIR_STYLES, STYLES, ProceduralSpec

__all__ = [
    "ACCESSORIES",
    "BODY_TYPES",
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
    "read_glb_json",
    "triangle_count",
]

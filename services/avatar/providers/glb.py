"""Checks that bytes are a plausible glTF 2.0 binary (GLB) and reads what we report about it."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

_MAGIC = b"glTF"
_JSON = 0x4E4F534A
_BIN = 0x004E4942
_TRIANGLES = 4
MAX_JSON_CHUNK = 16 * 1024 * 1024


class InvalidGlb(ValueError):
    """The bytes are not a usable GLB; the message says why."""


@dataclass(frozen=True, slots=True)
class GlbInfo:
    triangle_count: int
    morph_targets: tuple[str, ...]


def _get(seq: Any, index: Any, what: str) -> dict[str, Any]:
    if not isinstance(seq, list) or not isinstance(index, int) or not 0 <= index < len(seq):
        raise InvalidGlb(f"{what} index {index!r} is out of range")
    item = seq[index]
    if not isinstance(item, dict):
        raise InvalidGlb(f"{what} {index} is not an object")
    return item


def glb_json(data: bytes) -> dict[str, Any]:
    """The JSON chunk of a GLB 2.0, parsed; raises InvalidGlb when there is none."""
    if len(data) < 20 or data[:4] != _MAGIC:
        raise InvalidGlb("not a GLB file (bad magic)")
    version, length = struct.unpack_from("<II", data, 4)
    if version != 2:
        raise InvalidGlb(f"GLB version {version}; only glTF 2.0 is accepted")
    if length != len(data):
        raise InvalidGlb(f"GLB header says {length} bytes but the file has {len(data)}")
    chunk_len, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != _JSON or chunk_len > MAX_JSON_CHUNK or 20 + chunk_len > len(data):
        raise InvalidGlb("the first GLB chunk is not a valid JSON chunk")
    try:
        doc = json.loads(data[20 : 20 + chunk_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidGlb(f"the GLB JSON chunk does not parse: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidGlb("the GLB JSON is not an object")
    return doc


def inspect_glb(data: bytes, *, max_bytes: int) -> GlbInfo:
    """Header, chunk layout and JSON of a GLB, its triangle count and morph target names.

    Raises InvalidGlb for anything that is not a GLB 2.0 within `max_bytes`.
    """
    if len(data) > max_bytes:
        raise InvalidGlb(f"model is {len(data)} bytes; the limit is {max_bytes}")
    doc = glb_json(data)
    chunk_len = struct.unpack_from("<I", data, 12)[0]
    asset = doc.get("asset")
    if not isinstance(asset, dict) or asset.get("version") != "2.0":
        raise InvalidGlb("asset.version is not '2.0'")
    pos = 20 + chunk_len
    if pos < len(data):
        if pos + 8 > len(data):
            raise InvalidGlb("truncated GLB chunk header")
        bin_len, bin_type = struct.unpack_from("<II", data, pos)
        if bin_type != _BIN or pos + 8 + bin_len > len(data):
            raise InvalidGlb("the second GLB chunk is not a valid BIN chunk")
    meshes = doc.get("meshes")
    if not isinstance(meshes, list) or not meshes:
        raise InvalidGlb("the model has no meshes")
    accessors = doc.get("accessors", [])
    triangles = 0
    targets: list[str] = []
    for mesh in meshes:
        if not isinstance(mesh, dict) or not isinstance(mesh.get("primitives"), list):
            raise InvalidGlb("a mesh has no primitives")
        for prim in mesh["primitives"]:
            if not isinstance(prim, dict) or prim.get("mode", _TRIANGLES) != _TRIANGLES:
                continue
            attrs = prim.get("attributes")
            if not isinstance(attrs, dict):
                raise InvalidGlb("a primitive has no attributes")
            if "indices" in prim:
                count = _get(accessors, prim["indices"], "accessor").get("count", 0)
            else:
                count = _get(accessors, attrs.get("POSITION"), "accessor").get("count", 0)
            if not isinstance(count, int) or count < 0:
                raise InvalidGlb("an accessor has an invalid count")
            triangles += count // 3
        extras = mesh.get("extras")
        names = extras.get("targetNames") if isinstance(extras, dict) else None
        if isinstance(names, list):
            for name in names:
                if isinstance(name, str) and len(name) <= 64 and name not in targets:
                    targets.append(name)
    if triangles == 0:
        raise InvalidGlb("the model has no triangles")
    return GlbInfo(triangle_count=triangles, morph_targets=tuple(targets))

"""A minimal, deterministic glTF 2.0 binary (GLB) writer and reader helpers."""

from __future__ import annotations

import json
import struct
from array import array
from collections.abc import Sequence
from typing import Any

from .geometry import Vec3

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
FLOAT = 5126
UNSIGNED_SHORT = 5123
UNSIGNED_INT = 5125
TRIANGLES = 4

JsonObject = dict[str, Any]


def _f32(values: Sequence[float]) -> array[float]:
    out = array("f", values)
    if out.itemsize != 4:  # pragma: no cover - every supported platform has 32-bit floats
        raise RuntimeError("array('f') is not 32-bit on this platform")
    return out


def _le(data: array[Any]) -> bytes:
    if struct.pack("=H", 1) != struct.pack("<H", 1):  # pragma: no cover - big-endian hosts
        data = array(data.typecode, data)
        data.byteswap()
    return data.tobytes()


def _min_max(flat: array[float], width: int) -> tuple[list[float], list[float]]:
    """Component-wise bounds of float32 values, as JSON-exact Python floats."""
    lo = [float(flat[i]) for i in range(width)]
    hi = list(lo)
    for i in range(width, len(flat), width):
        for c in range(width):
            v = flat[i + c]
            if v < lo[c]:
                lo[c] = v
            elif v > hi[c]:
                hi[c] = v
    return [float(v) for v in lo], [float(v) for v in hi]


class GlbBuilder:
    """Accumulates buffer views, accessors, meshes and nodes, then packs a GLB."""

    def __init__(self) -> None:
        self._bin = bytearray()
        self.buffer_views: list[JsonObject] = []
        self.accessors: list[JsonObject] = []
        self.materials: list[JsonObject] = []
        self.meshes: list[JsonObject] = []
        self.nodes: list[JsonObject] = []
        self._zero_vec3: dict[int, int] = {}

    def _view(self, data: bytes, target: int | None) -> int:
        while len(self._bin) % 4:
            self._bin.append(0)
        view: JsonObject = {"buffer": 0, "byteOffset": len(self._bin), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self._bin.extend(data)
        self.buffer_views.append(view)
        return len(self.buffer_views) - 1

    def _accessor(self, accessor: JsonObject) -> int:
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def vec3(self, values: Sequence[Vec3], *, bounds: bool) -> int:
        flat = _f32([c for v in values for c in v])
        view = self._view(_le(flat), ARRAY_BUFFER)
        accessor: JsonObject = {
            "bufferView": view,
            "componentType": FLOAT,
            "count": len(values),
            "type": "VEC3",
        }
        if bounds:
            lo, hi = _min_max(flat, 3)
            accessor["min"] = lo
            accessor["max"] = hi
        return self._accessor(accessor)

    def indices(self, values: Sequence[int], vertex_count: int) -> int:
        # 65535 is the primitive-restart value for 16-bit indices: avoid it.
        wide = vertex_count > 65535
        data = array("I" if wide else "H", values)
        if data.itemsize != (4 if wide else 2):  # pragma: no cover
            data = array("L" if wide else "H", values)
        view = self._view(_le(data), ELEMENT_ARRAY_BUFFER)
        return self._accessor(
            {
                "bufferView": view,
                "componentType": UNSIGNED_INT if wide else UNSIGNED_SHORT,
                "count": len(values),
                "type": "SCALAR",
            }
        )

    def sparse_vec3(self, count: int, deltas: Sequence[tuple[int, Vec3]]) -> int:
        """A morph-target accessor: zeros except at the listed (ascending) vertices."""
        if not deltas:
            return self.zero_vec3(count)
        values = _f32([c for _, d in deltas for c in d])
        lo, hi = _min_max(values, 3)
        if len(deltas) < count:  # the untouched vertices are zero
            lo = [min(v, 0.0) for v in lo]
            hi = [max(v, 0.0) for v in hi]
        wide = count > 65535
        idx = array("I" if wide else "H", [i for i, _ in deltas])
        index_view = self._view(_le(idx), None)
        value_view = self._view(_le(values), None)
        return self._accessor(
            {
                "componentType": FLOAT,
                "count": count,
                "type": "VEC3",
                "min": lo,
                "max": hi,
                "sparse": {
                    "count": len(deltas),
                    "indices": {
                        "bufferView": index_view,
                        "componentType": UNSIGNED_INT if wide else UNSIGNED_SHORT,
                    },
                    "values": {"bufferView": value_view},
                },
            }
        )

    def zero_vec3(self, count: int) -> int:
        """An all-zero VEC3 accessor with no storage at all (shared per vertex count)."""
        existing = self._zero_vec3.get(count)
        if existing is not None:
            return existing
        index = self._accessor(
            {
                "componentType": FLOAT,
                "count": count,
                "type": "VEC3",
                "min": [0.0, 0.0, 0.0],
                "max": [0.0, 0.0, 0.0],
            }
        )
        self._zero_vec3[count] = index
        return index

    def material(self, material: JsonObject) -> int:
        self.materials.append(material)
        return len(self.materials) - 1

    def mesh(self, mesh: JsonObject) -> int:
        self.meshes.append(mesh)
        return len(self.meshes) - 1

    def node(self, node: JsonObject) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def to_bytes(self, asset: JsonObject, scene: JsonObject) -> bytes:
        while len(self._bin) % 4:
            self._bin.append(0)
        document: JsonObject = {
            "asset": asset,
            "scene": 0,
            "scenes": [scene],
            "nodes": self.nodes,
            "meshes": self.meshes,
            "materials": self.materials,
            "accessors": self.accessors,
            "bufferViews": self.buffer_views,
            "buffers": [{"byteLength": len(self._bin)}],
        }
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        json_bytes = text.encode("ascii")
        json_bytes += b" " * (-len(json_bytes) % 4)
        total = 12 + 8 + len(json_bytes) + 8 + len(self._bin)
        out = bytearray()
        out += struct.pack("<III", GLB_MAGIC, 2, total)
        out += struct.pack("<II", len(json_bytes), CHUNK_JSON)
        out += json_bytes
        out += struct.pack("<II", len(self._bin), CHUNK_BIN)
        out += self._bin
        return bytes(out)


def read_glb_json(glb: bytes) -> JsonObject:
    """The JSON chunk of a GLB. Raises ``ValueError`` if ``glb`` is not a GLB."""
    if len(glb) < 20:
        raise ValueError("not a GLB: too short")
    magic, version, total = struct.unpack_from("<III", glb, 0)
    if magic != GLB_MAGIC or version != 2:
        raise ValueError("not a glTF 2.0 binary")
    if total > len(glb):
        raise ValueError("truncated GLB")
    length, kind = struct.unpack_from("<II", glb, 12)
    if kind != CHUNK_JSON:
        raise ValueError("GLB does not start with a JSON chunk")
    document = json.loads(glb[20 : 20 + length].decode("utf-8"))
    if not isinstance(document, dict):
        raise ValueError("GLB JSON chunk is not an object")
    return document


def triangle_count(glb: bytes) -> int:
    """Triangles drawn by the default scene of a GLB (instanced meshes count each time)."""
    doc = read_glb_json(glb)
    accessors = doc.get("accessors", [])
    meshes = doc.get("meshes", [])
    nodes = doc.get("nodes", [])
    scenes = doc.get("scenes", [])
    if not scenes:
        return 0

    def mesh_triangles(mesh: JsonObject) -> int:
        total = 0
        for prim in mesh.get("primitives", []):
            if prim.get("mode", TRIANGLES) != TRIANGLES:
                continue
            if "indices" in prim:
                total += int(accessors[prim["indices"]]["count"]) // 3
            else:
                total += int(accessors[prim["attributes"]["POSITION"]]["count"]) // 3
        return total

    total = 0
    stack = list(scenes[doc.get("scene", 0)].get("nodes", []))
    while stack:
        node = nodes[stack.pop()]
        if "mesh" in node:
            total += mesh_triangles(meshes[node["mesh"]])
        stack.extend(node.get("children", []))
    return total

"""Deterministic glTF 2.0 binary (GLB) assembly on pygltflib, and reading helpers."""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from typing import Any

import pygltflib

from .geometry import Vec3

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
FLOAT = 5126
UNSIGNED_BYTE = 5121
UNSIGNED_SHORT = 5123
UNSIGNED_INT = 5125
TRIANGLES = 4

JsonObject = dict[str, Any]


def _le(data: array[Any]) -> bytes:
    if struct.pack("=H", 1) != struct.pack("<H", 1):  # pragma: no cover - big-endian hosts
        data = array(data.typecode, data)
        data.byteswap()
    return data.tobytes()


def _f32(values: Sequence[float]) -> array[float]:
    out = array("f", values)
    if out.itemsize != 4:  # pragma: no cover - every supported platform has 32-bit floats
        raise RuntimeError("array('f') is not 32-bit on this platform")
    return out


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
    """Accumulates one binary buffer and its accessors in a ``pygltflib.GLTF2``.

    Identical float data (for example constant animation channels) is stored once.
    """

    def __init__(self) -> None:
        self._bin = bytearray()
        self.gltf = pygltflib.GLTF2(asset=pygltflib.Asset(version="2.0"))
        self._zero_vec3: dict[int, int] = {}
        self._shared: dict[tuple[str, bytes], int] = {}

    def _view(self, data: bytes, target: int | None, stride: int | None = None) -> int:
        while len(self._bin) % 4:
            self._bin.append(0)
        view = pygltflib.BufferView(
            buffer=0, byteOffset=len(self._bin), byteLength=len(data), target=target
        )
        if stride is not None:
            view.byteStride = stride
        self._bin.extend(data)
        self.gltf.bufferViews.append(view)
        return len(self.gltf.bufferViews) - 1

    def _accessor(self, accessor: pygltflib.Accessor) -> int:
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1

    def floats(
        self,
        flat: Sequence[float],
        kind: str,
        *,
        bounds: bool,
        target: int | None = ARRAY_BUFFER,
        share: bool = False,
    ) -> int:
        """A float accessor of ``kind`` (SCALAR, VEC3, VEC4, MAT4) from flat values."""
        width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[kind]
        data = _f32(flat)
        raw = _le(data)
        key = (kind, raw)
        if share and key in self._shared:
            return self._shared[key]
        view = self._view(raw, target)
        accessor = pygltflib.Accessor(
            bufferView=view, componentType=FLOAT, count=len(data) // width, type=kind
        )
        if bounds:
            lo, hi = _min_max(data, width)
            accessor.min = lo
            accessor.max = hi
        index = self._accessor(accessor)
        if share:
            self._shared[key] = index
        return index

    def vec3(self, values: Sequence[Vec3], *, bounds: bool) -> int:
        return self.floats([c for v in values for c in v], "VEC3", bounds=bounds)

    def joints(self, values: Sequence[tuple[int, int, int, int]]) -> int:
        data = array("B", [j for v in values for j in v])
        view = self._view(_le(data), ARRAY_BUFFER)
        return self._accessor(
            pygltflib.Accessor(
                bufferView=view, componentType=UNSIGNED_BYTE, count=len(values), type="VEC4"
            )
        )

    def indices(self, values: Sequence[int], vertex_count: int) -> int:
        # 65535 is the primitive-restart value for 16-bit indices: avoid it.
        wide = vertex_count > 65535
        data = array("I" if wide else "H", values)
        if data.itemsize != (4 if wide else 2):  # pragma: no cover
            data = array("L" if wide else "H", values)
        view = self._view(_le(data), ELEMENT_ARRAY_BUFFER)
        return self._accessor(
            pygltflib.Accessor(
                bufferView=view,
                componentType=UNSIGNED_INT if wide else UNSIGNED_SHORT,
                count=len(values),
                type="SCALAR",
            )
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
            pygltflib.Accessor(
                byteOffset=None,
                componentType=FLOAT,
                count=count,
                type="VEC3",
                min=lo,
                max=hi,
                sparse=pygltflib.Sparse(
                    count=len(deltas),
                    indices=pygltflib.AccessorSparseIndices(
                        bufferView=index_view,
                        componentType=UNSIGNED_INT if wide else UNSIGNED_SHORT,
                    ),
                    values=pygltflib.AccessorSparseValues(bufferView=value_view),
                ),
            )
        )

    def zero_vec3(self, count: int) -> int:
        """An all-zero VEC3 accessor with no storage at all (shared per vertex count)."""
        existing = self._zero_vec3.get(count)
        if existing is not None:
            return existing
        index = self._accessor(
            pygltflib.Accessor(
                byteOffset=None,
                componentType=FLOAT,
                count=count,
                type="VEC3",
                min=[0.0] * 3,
                max=[0.0] * 3,
            )
        )
        self._zero_vec3[count] = index
        return index

    def to_bytes(self) -> bytes:
        while len(self._bin) % 4:
            self._bin.append(0)
        self.gltf.buffers = [pygltflib.Buffer(byteLength=len(self._bin))]
        self.gltf.set_binary_blob(bytes(self._bin))
        out = self.gltf.save_to_bytes()
        return b"".join(out) if isinstance(out, list) else bytes(out)


def load_glb(glb: bytes) -> pygltflib.GLTF2:
    """Parse a GLB with pygltflib. Raises ``ValueError`` if ``glb`` is not a glTF 2.0 binary."""
    if len(glb) < 20 or glb[:4] != b"glTF" or struct.unpack_from("<I", glb, 4)[0] != 2:
        raise ValueError("not a glTF 2.0 binary")
    try:
        return pygltflib.GLTF2.load_from_bytes(glb)
    except Exception as exc:  # pygltflib raises whatever its parsers raise
        raise ValueError(f"not a readable GLB: {exc}") from exc


def triangle_count(glb: bytes | pygltflib.GLTF2) -> int:
    """Triangles drawn by the default scene (instanced meshes count each time)."""
    doc = load_glb(glb) if isinstance(glb, bytes) else glb
    if not doc.scenes:
        return 0

    def mesh_triangles(mesh: pygltflib.Mesh) -> int:
        total = 0
        for prim in mesh.primitives:
            if (prim.mode if prim.mode is not None else TRIANGLES) != TRIANGLES:
                continue
            if prim.indices is not None:
                total += doc.accessors[prim.indices].count // 3
            else:
                total += doc.accessors[prim.attributes.POSITION].count // 3
        return total

    total = 0
    stack = list(doc.scenes[doc.scene or 0].nodes or [])
    while stack:
        node = doc.nodes[stack.pop()]
        if node.mesh is not None:
            total += mesh_triangles(doc.meshes[node.mesh])
        stack.extend(node.children or [])
    return total

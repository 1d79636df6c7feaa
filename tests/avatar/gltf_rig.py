"""Reading a skinned, animated glTF back for tests: accessors, bind pose, clip sampling, FK.

Independent of the generator's own rig code on purpose: everything here comes
from the file as pygltflib reads it.
"""

from __future__ import annotations

import bisect
import math
import struct
from typing import Any

import pygltflib

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]
Pose = dict[tuple[int, str], tuple[float, ...]]

_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_FORMAT = {5126: "f", 5121: "B", 5123: "H", 5125: "I"}


def read_accessor(gltf: pygltflib.GLTF2, index: int) -> list[tuple[float, ...]]:
    """Decode an accessor (plain, sparse, or all-zero without a buffer view)."""
    acc = gltf.accessors[index]
    blob = gltf.binary_blob()
    assert blob is not None
    width = _WIDTH[acc.type]
    fmt = _FORMAT[acc.componentType]
    if acc.bufferView is not None:
        view = gltf.bufferViews[acc.bufferView]
        offset = (view.byteOffset or 0) + (acc.byteOffset or 0)
        assert view.byteStride is None, "tightly packed views only"
        flat: list[float] = list(struct.unpack_from(f"<{acc.count * width}{fmt}", blob, offset))
    else:
        flat = [0.0] * (acc.count * width)
    if acc.sparse is not None:
        sparse = acc.sparse
        iview = gltf.bufferViews[sparse.indices.bufferView]
        vview = gltf.bufferViews[sparse.values.bufferView]
        ifmt = _FORMAT[sparse.indices.componentType]
        idx = struct.unpack_from(f"<{sparse.count}{ifmt}", blob, iview.byteOffset or 0)
        vals = struct.unpack_from(f"<{sparse.count * width}f", blob, vview.byteOffset or 0)
        assert list(idx) == sorted(set(idx)), "sparse indices must be strictly increasing"
        for k, i in enumerate(idx):
            flat[i * width : (i + 1) * width] = vals[k * width : (k + 1) * width]
    return [tuple(flat[i : i + width]) for i in range(0, len(flat), width)]


def node_index(gltf: pygltflib.GLTF2, name: str) -> int:
    matches = [i for i, n in enumerate(gltf.nodes) if n.name == name]
    assert len(matches) == 1, f"expected one node named {name}"
    return matches[0]


def parents(gltf: pygltflib.GLTF2) -> list[int]:
    out = [-1] * len(gltf.nodes)
    for i, node in enumerate(gltf.nodes):
        for child in node.children or []:
            assert out[child] == -1, f"node {child} has two parents"
            out[child] = i
    return out


# --- quaternions --------------------------------------------------------------------


def qmul(a: Quat, b: Quat) -> Quat:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def qrotate(q: Quat, v: Vec3) -> Vec3:
    p = qmul(qmul(q, (v[0], v[1], v[2], 0.0)), (-q[0], -q[1], -q[2], q[3]))
    return (p[0], p[1], p[2])


def qangle(a: Quat, b: Quat) -> float:
    """The angle (degrees) of the rotation taking ``a`` to ``b``."""
    d = abs(sum(x * y for x, y in zip(a, b, strict=True)))
    return math.degrees(2.0 * math.acos(min(1.0, d)))


# --- animation sampling and forward kinematics ---------------------------------------------


def animation(gltf: pygltflib.GLTF2, name: str) -> Any:
    matches = [a for a in gltf.animations if a.name == name]
    assert len(matches) == 1, f"expected one animation named {name}"
    return matches[0]


def duration(gltf: pygltflib.GLTF2, anim: Any) -> float:
    return max(float(gltf.accessors[s.input].max[0]) for s in anim.samplers)


def sample(gltf: pygltflib.GLTF2, anim: Any, t: float) -> Pose:
    """Every channel's value at ``t`` (LINEAR: lerp, and nlerp-slerp for rotations)."""
    out: Pose = {}
    for channel in anim.channels:
        sampler = anim.samplers[channel.sampler]
        assert sampler.interpolation in (None, "LINEAR")
        times = [k[0] for k in read_accessor(gltf, sampler.input)]
        values = read_accessor(gltf, sampler.output)
        if channel.target.path == "weights":
            n = len(values) // len(times)
            flat = [v[0] for v in values]
            values = [tuple(flat[i * n : (i + 1) * n]) for i in range(len(times))]
        assert len(values) == len(times)
        if t <= times[0] or len(times) == 1:
            value = values[0]
        elif t >= times[-1]:
            value = values[-1]
        else:
            k = bisect.bisect_right(times, t) - 1
            u = (t - times[k]) / (times[k + 1] - times[k])
            a, b = values[k], values[k + 1]
            if channel.target.path == "rotation":
                if sum(x * y for x, y in zip(a, b, strict=True)) < 0.0:
                    b = tuple(-x for x in b)
                value = _slerp(a, b, u)
            else:
                value = tuple(x + (y - x) * u for x, y in zip(a, b, strict=True))
        out[(channel.target.node, channel.target.path)] = value
    return out


def _slerp(a: tuple[float, ...], b: tuple[float, ...], u: float) -> tuple[float, ...]:
    d = min(1.0, sum(x * y for x, y in zip(a, b, strict=True)))
    if d > 0.9995:
        out = [x + (y - x) * u for x, y in zip(a, b, strict=True)]
    else:
        th = math.acos(d)
        wa, wb = math.sin((1 - u) * th) / math.sin(th), math.sin(u * th) / math.sin(th)
        out = [wa * x + wb * y for x, y in zip(a, b, strict=True)]
    n = math.sqrt(sum(x * x for x in out))
    return tuple(x / n for x in out)


def world(gltf: pygltflib.GLTF2, pose: Pose | None = None) -> list[tuple[Quat, Vec3]]:
    """World rotation and translation of every node (bind pose when ``pose`` is None).

    Nodes carry no scale here (the generator writes none; asserted).
    """
    pose = pose or {}
    parent = parents(gltf)
    out: list[tuple[Quat, Vec3] | None] = [None] * len(gltf.nodes)

    def solve(i: int) -> tuple[Quat, Vec3]:
        done = out[i]
        if done is not None:
            return done
        node = gltf.nodes[i]
        assert node.scale in (None, [1.0, 1.0, 1.0]) and node.matrix is None
        t = pose.get((i, "translation"), tuple(node.translation or (0.0, 0.0, 0.0)))
        r = pose.get((i, "rotation"), tuple(node.rotation or (0.0, 0.0, 0.0, 1.0)))
        local_t: Vec3 = (t[0], t[1], t[2])
        local_r: Quat = (r[0], r[1], r[2], r[3])
        if parent[i] < 0:
            result = (local_r, local_t)
        else:
            pr, pt = solve(parent[i])
            moved = qrotate(pr, local_t)
            result = (qmul(pr, local_r), (pt[0] + moved[0], pt[1] + moved[1], pt[2] + moved[2]))
        out[i] = result
        return result

    return [solve(i) for i in range(len(gltf.nodes))]


def bone_world(gltf: pygltflib.GLTF2, name: str, pose: Pose | None = None) -> tuple[Quat, Vec3]:
    return world(gltf, pose)[node_index(gltf, name)]

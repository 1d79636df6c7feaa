"""A small local HTTP server that speaks Meshy's text-to-3D and rigging task APIs, for tests.

POST /openapi/v2/text-to-3d → {"result": task_id}; GET /openapi/v2/text-to-3d/{id} → the
task, moving through `progress_steps` one poll at a time; GET /assets/{id}.glb → the model.
A "refine" task (body {"mode": "refine", "preview_task_id"}) needs a SUCCEEDED preview.
POST /openapi/v1/rigging {"input_task_id"} (a SUCCEEDED refine task, else 400) → {"result":
id}; GET /openapi/v1/rigging/{id} → the task, and once SUCCEEDED "result" with
"rigged_character_glb_url" (serving `rigged`) and "basic_animations".
`progress_steps` may hold NaN or Infinity (sent as Python's json writes them) and
`error_message` is the reason of a FAILED task. `mode` scripts the outcome of new text-to-3D
tasks: "succeed", "fail" (task FAILED), "error" (HTTP 500 on create), "hang" (create never
answers), "bad_glb" (the asset is not a GLB), "hold" (stays IN_PROGRESS until `release()`).
`rig_mode` scripts rigging tasks: "succeed", "fail" (task FAILED), "error" (HTTP 422 on
create, as Meshy answers a model it cannot rig), "unrigged" (SUCCEEDED, but the GLB has no
skin), "no_url" (SUCCEEDED without a GLB URL), "bad_glb" (the rigged asset is not a GLB).
Runs on the test's event loop on 127.0.0.1, a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import pygltflib


def tiny_glb() -> bytes:
    """A valid one-triangle GLB without morph targets, like a provider's plain mesh."""
    positions = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0)
    gltf = pygltflib.GLTF2(
        asset=pygltflib.Asset(version="2.0"),
        scene=0,
        scenes=[pygltflib.Scene(nodes=[0])],
        nodes=[pygltflib.Node(mesh=0)],
        meshes=[
            pygltflib.Mesh(
                primitives=[pygltflib.Primitive(attributes=pygltflib.Attributes(POSITION=0))]
            )
        ],
        accessors=[
            pygltflib.Accessor(
                bufferView=0,
                componentType=pygltflib.FLOAT,
                count=3,
                type=pygltflib.VEC3,
                min=[0, 0, 0],
                max=[1, 1, 0],
            )
        ],
        bufferViews=[pygltflib.BufferView(buffer=0, byteLength=len(positions))],
        buffers=[pygltflib.Buffer(byteLength=len(positions))],
    )
    gltf.set_binary_blob(positions)
    return b"".join(gltf.save_to_bytes())


def rigged_glb(*, clips: tuple[str, ...] = ()) -> bytes:
    """A one-triangle mesh bound to a two-joint skin (Hips → Head), like Meshy's rigged
    character; `clips` adds an animation per name turning the head."""
    positions = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0)
    joints = struct.pack("<12B", *([0, 1, 0, 0] * 3))
    weights = struct.pack("<12f", *([0.5, 0.5, 0, 0] * 3))
    ibm = struct.pack("<16f", 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1) + struct.pack(
        "<16f", 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, -1, 0, 1
    )
    times = struct.pack("<2f", 0, 1)
    quats = struct.pack("<8f", 0, 0, 0, 1, 0.2588, 0, 0, 0.9659)
    blob = positions + joints + weights + ibm + times + quats
    views, offset = [], 0
    for part in (positions, joints, weights, ibm, times, quats):
        views.append(pygltflib.BufferView(buffer=0, byteOffset=offset, byteLength=len(part)))
        offset += len(part)
    f, ub = pygltflib.FLOAT, pygltflib.UNSIGNED_BYTE
    accessors = [
        pygltflib.Accessor(bufferView=0, componentType=f, count=3, type=pygltflib.VEC3,
                           min=[0, 0, 0], max=[1, 1, 0]),
        pygltflib.Accessor(bufferView=1, componentType=ub, count=3, type=pygltflib.VEC4),
        pygltflib.Accessor(bufferView=2, componentType=f, count=3, type=pygltflib.VEC4),
        pygltflib.Accessor(bufferView=3, componentType=f, count=2, type=pygltflib.MAT4),
        pygltflib.Accessor(bufferView=4, componentType=f, count=2, type=pygltflib.SCALAR,
                           min=[0], max=[1]),
        pygltflib.Accessor(bufferView=5, componentType=f, count=2, type=pygltflib.VEC4),
    ]  # fmt: skip
    animations = [
        pygltflib.Animation(
            name=name,
            samplers=[pygltflib.AnimationSampler(input=4, output=5)],
            channels=[
                pygltflib.AnimationChannel(
                    sampler=0, target=pygltflib.AnimationChannelTarget(node=2, path="rotation")
                )
            ],
        )
        for name in clips
    ]
    gltf = pygltflib.GLTF2(
        asset=pygltflib.Asset(version="2.0"),
        scene=0,
        scenes=[pygltflib.Scene(nodes=[0, 1])],
        nodes=[
            pygltflib.Node(name="Character", mesh=0, skin=0),
            pygltflib.Node(name="Hips", children=[2]),
            pygltflib.Node(name="Head", translation=[0, 1, 0]),
        ],
        meshes=[
            pygltflib.Mesh(
                primitives=[
                    pygltflib.Primitive(
                        attributes=pygltflib.Attributes(POSITION=0, JOINTS_0=1, WEIGHTS_0=2)
                    )
                ]
            )
        ],
        skins=[pygltflib.Skin(inverseBindMatrices=3, joints=[1, 2], skeleton=1)],
        animations=animations,
        accessors=accessors,
        bufferViews=views,
        buffers=[pygltflib.Buffer(byteLength=len(blob))],
    )
    gltf.set_binary_blob(blob)
    return b"".join(gltf.save_to_bytes())


@dataclass
class Task:
    task_id: str
    body: dict[str, Any]
    mode: str
    polls: int = 0
    kind: str = "preview"  # "preview", "refine" or "rig"


@dataclass
class MeshyServer:
    mode: str = "succeed"
    rig_mode: str = "succeed"
    progress_steps: tuple[float, ...] = (0, 25, 60, 90)
    error_message: str = "nope"
    glb: bytes = field(default_factory=tiny_glb)
    rigged: bytes = field(default_factory=rigged_glb)
    tasks: list[Task] = field(default_factory=list)
    creates: int = 0  # text-to-3D preview tasks asked for
    rig_creates: int = 0
    auth: list[str] = field(default_factory=list)
    asset_auth: list[str] = field(default_factory=list)
    polled: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> MeshyServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def release(self) -> None:
        """Lets "hold" tasks finish successfully."""
        self._release.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            line = await reader.readline()
            if not line:
                return
            method, path, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0"))
            raw = await reader.readexactly(length) if length else b""
            status, ctype, body = await self._route(method, path, headers, raw)
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, str, bytes]:
        base = "/openapi/v2/text-to-3d"
        rigging = "/openapi/v1/rigging"
        if method == "POST" and path == base:
            self.auth.append(headers.get("authorization", ""))
            body = json.loads(raw)
            if body.get("mode") == "refine":
                source = self._task(body.get("preview_task_id"))
                if source is None or source.kind != "preview" or not self._done(source):
                    return _json(400, {"message": "preview_task_id is not a succeeded preview"})
                return self._new(body, "succeed", "refine")
            self.creates += 1
            if self.mode == "error":
                return _json(500, {"message": "internal error"})
            if self.mode == "hang":
                await asyncio.Event().wait()
            return self._new(body, self.mode, "preview")
        if method == "POST" and path == rigging:
            self.rig_creates += 1
            self.auth.append(headers.get("authorization", ""))
            body = json.loads(raw)
            source = self._task(body.get("input_task_id"))
            if source is None or source.kind != "refine" or not self._done(source):
                return _json(400, {"message": "input_task_id is not a succeeded textured model"})
            if self.rig_mode == "error":
                return _json(422, {"message": "Pose estimation failed"})
            return self._new(body, self.rig_mode, "rig")
        for prefix in (base + "/", rigging + "/"):
            if method == "GET" and path.startswith(prefix):
                t = self._task(path.rsplit("/", 1)[1])
                if t is None or (t.kind == "rig") != (prefix == rigging + "/"):
                    return _json(404, {"message": "no such task"})
                return _json(200, self._task_view(t))
        if method == "GET" and path.startswith("/assets/"):
            self.asset_auth.append(headers.get("authorization", ""))
            if "bad" in path:
                return 200, "model/gltf-binary", b"<html>not a model</html>"
            if "rigged" in path:
                return 200, "model/gltf-binary", self.rigged
            return 200, "model/gltf-binary", self.glb
        return _json(404, {"message": "no route"})

    def _new(self, body: dict[str, Any], mode: str, kind: str) -> tuple[int, str, bytes]:
        t = Task(f"{kind}-{len(self.tasks)}", body, mode, kind=kind)
        self.tasks.append(t)
        return _json(202, {"result": t.task_id})

    def _task(self, task_id: object) -> Task | None:
        return next((x for x in self.tasks if x.task_id == task_id), None)

    def _done(self, t: Task) -> bool:
        if t.mode == "fail":
            return False
        if t.mode == "hold":
            return self._release.is_set()
        return t.polls > len(self.progress_steps)

    def _task_view(self, t: Task) -> dict[str, Any]:
        t.polls += 1
        self.polled.set()
        view: dict[str, Any] = {"id": t.task_id, "model_urls": {}, "task_error": None}
        if t.mode == "hold" and not self._release.is_set():
            return {**view, "status": "IN_PROGRESS", "progress": 40}
        if t.mode != "hold" and t.polls <= len(self.progress_steps):
            step = self.progress_steps[t.polls - 1]
            return {**view, "status": "IN_PROGRESS" if step else "PENDING", "progress": step}
        if t.mode == "fail":
            return {
                **view,
                "status": "FAILED",
                "progress": 0,
                "task_error": {"message": self.error_message},
            }
        if t.kind == "rig":
            del view["model_urls"]
            asset = {"unrigged": "ok", "bad_glb": "bad"}.get(t.mode, "rigged")
            url = f"{self.base_url}/assets/{t.task_id}-{asset}.glb"
            anims = {
                f"{a}_{f}_url": f"{self.base_url}/assets/{t.task_id}-{a}.{f.split('_')[-1]}"
                for a in ("walking", "running")
                for f in ("glb", "fbx", "armature_glb")
            }
            result: dict[str, Any] = {
                "rigged_character_fbx_url": f"{self.base_url}/assets/{t.task_id}.fbx",
                "basic_animations": anims,
            }
            if t.mode != "no_url":
                result["rigged_character_glb_url"] = url
            return {**view, "status": "SUCCEEDED", "progress": 100, "result": result}
        asset = "bad" if t.mode == "bad_glb" else "ok"
        url = f"{self.base_url}/assets/{t.task_id}-{asset}.glb"
        return {**view, "status": "SUCCEEDED", "progress": 100, "model_urls": {"glb": url}}


def _json(status: int, payload: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload).encode()

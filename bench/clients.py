"""Clients the benchmarks drive: Converse, Subscribe (gRPC and gRPC-web) and the echo floor."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc
from arconv.stream.v1 import stream_service_pb2 as pb
from arconv.stream.v1 import stream_service_pb2_grpc as pb_grpc

from services.common.config import Settings
from services.common.server import authority_from
from services.markers import MarkerParser

AUTHORITY = authority_from(Settings())


def user_md(user: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {AUTHORITY.mint(user, ttl_s=3600)}"),)


def service_md() -> tuple[tuple[str, str], ...]:
    token = AUTHORITY.mint("service:bench", ttl_s=3600, role="service")
    return (("authorization", f"Bearer {token}"),)


def story(tag: str) -> str:
    """A message the persona answers with a story (its longest replies); `tag` makes it unique."""
    return f"Please tell me a story, take {tag}"


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


class Channels:
    """A few channels to one target, shared round robin (about 50 streams per connection)."""

    def __init__(self, target: str, streams: int) -> None:
        n = max(1, (streams + 49) // 50)
        self.items = [grpc.aio.insecure_channel(target) for _ in range(n)]

    def __getitem__(self, i: int) -> grpc.aio.Channel:
        return self.items[i % len(self.items)]

    async def close(self) -> None:
        for ch in self.items:
            await ch.close()


async def create_rooms(port: int, users: list[str], concurrency: int = 16) -> dict[str, str]:
    out: dict[str, str] = {}
    sem = asyncio.Semaphore(concurrency)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = rooms_grpc.RoomServiceStub(ch)

        async def one(user: str) -> None:
            async with sem:
                r = await stub.CreateRoom(
                    rooms_pb.CreateRoomRequest(agent_id="nova"), metadata=user_md(user)
                )
                out[user] = r.room.room_id

        await asyncio.gather(*(one(u) for u in users))
    return out


@dataclass
class Turn:
    content: str
    chunks: list[tuple[str, int]] = field(default_factory=list)  # (raw, monotonic ns received)
    sent_ns: int = 0  # monotonic ns when the message was written
    stamps: list[int] = field(default_factory=list)  # echo floor: sent-at stamps
    events: int = 0
    error: str = ""
    wire: list[bytes] = field(default_factory=list)


def _take(turn: Turn, r: pb.ConverseResponse, now: int, record: bool) -> bool:
    """Adds one event to the turn; True at the end of the reply."""
    turn.events += 1
    if record:
        turn.wire.append(r.SerializeToString())
    kind = r.WhichOneof("kind")
    if kind == "stream_chunk":
        turn.chunks.append((r.stream_chunk.raw, now))
    elif kind == "stream_error":
        turn.error = r.stream_error.message
    return kind == "stream_ended"


class Talker:
    """One Converse call: join, then one message at a time, each read to its stream_ended."""

    def __init__(self, channel: grpc.aio.Channel, user: str, room_id: str) -> None:
        self._stub = pb_grpc.StreamServiceStub(channel)
        self._md = user_md(user)
        self.room_id = room_id
        self.call: Any = None

    async def open(self) -> None:
        self.call = self._stub.Converse(metadata=self._md)
        await self.call.write(pb.ConverseRequest(join=pb.Join(room_id=self.room_id)))
        first = await self.call.read()
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "joined":
            raise RuntimeError(f"join failed: {first}")

    async def turn(self, content: str, *, record: bool = False) -> Turn:
        turn = Turn(content)
        msg = pb.UserMessage(content=content, client_message_id=uuid.uuid4().hex)
        turn.sent_ns = time.monotonic_ns()
        try:
            await self.call.write(pb.ConverseRequest(message=msg))
        except asyncio.InvalidStateError:
            code, details = await self.call.code(), await self.call.details()
            raise RuntimeError(f"Converse ended before a message: {code.name}: {details}") from None
        while True:
            r = await self.call.read()
            now = time.monotonic_ns()
            if r is grpc.aio.EOF:
                raise RuntimeError("Converse ended during a reply")
            if _take(turn, r, now, record):
                return turn

    def close(self) -> None:
        if self.call is not None:
            self.call.cancel()


class EchoTalker:
    """One bidi call to the echo floor, driven like a Talker."""

    def __init__(self, channel: grpc.aio.Channel, user: str) -> None:
        self._call_factory = channel.stream_stream(
            "/bench.Echo/Talk",
            request_serializer=lambda b: b,
            response_deserializer=pb.ConverseResponse.FromString,
        )
        self._md = user_md(user)
        self.call: Any = None

    async def open(self) -> None:
        self.call = self._call_factory(metadata=self._md)
        await self.call.write(b"J")
        first = await self.call.read()
        if first is grpc.aio.EOF:
            raise RuntimeError("echo join failed")

    async def turn(self, idx: int, pacing_ms: int = -1) -> Turn:
        turn = Turn("")
        if pacing_ms < 0:
            await self.call.write(b"R" + struct.pack("!I", idx))
        else:
            await self.call.write(b"P" + struct.pack("!II", idx, pacing_ms * 1000))
        while True:
            r = await self.call.read()
            now = time.monotonic_ns()
            if r is grpc.aio.EOF:
                raise RuntimeError("echo call ended")
            if r.HasField("stream_chunk") and pacing_ms >= 0:
                turn.stamps.append(r.stream_chunk.time.ToNanoseconds())
            if _take(turn, r, now, False):
                return turn

    def close(self) -> None:
        if self.call is not None:
            self.call.cancel()


class Subscriber:
    """Subscribe over native gRPC, messages by SendMessage (what a gRPC-web client does)."""

    def __init__(self, channel: grpc.aio.Channel, user: str, room_id: str) -> None:
        self._stub = pb_grpc.StreamServiceStub(channel)
        self._md = user_md(user)
        self.room_id = room_id
        self.call: Any = None

    async def open(self) -> None:
        self.call = self._stub.Subscribe(
            pb.SubscribeRequest(room_id=self.room_id), metadata=self._md
        )
        first = await self.read()
        if first.WhichOneof("kind") != "joined":
            raise RuntimeError(f"subscribe failed: {first}")

    async def read(self) -> pb.ConverseResponse:
        r = await self.call.read()
        if r is grpc.aio.EOF:
            raise RuntimeError("Subscribe ended")
        return r.event  # type: ignore[no-any-return]

    async def turn(self, content: str, sender: pb_grpc.StreamServiceStub) -> Turn:
        turn = Turn(content)
        await sender.SendMessage(
            pb.SendMessageRequest(
                room_id=self.room_id, content=content, client_message_id=uuid.uuid4().hex
            ),
            metadata=self._md,
        )
        while True:
            r = await self.read()
            if _take(turn, r, time.monotonic_ns(), False):
                return turn

    def close(self) -> None:
        if self.call is not None:
            self.call.cancel()


class WebSubscriber(Subscriber):
    """Subscribe as a browser does it: gRPC-web (HTTP/1.1, application/grpc-web+proto)."""

    def __init__(self, client: Any, base_url: str, user: str, room_id: str) -> None:
        self._client = client
        self._url = f"{base_url}/arconv.stream.v1.StreamService/Subscribe"
        self._md = user_md(user)
        self.room_id = room_id
        self._buf = b""
        self._resp: Any = None
        self._chunks: Any = None
        self._closing: asyncio.Task[None] | None = None

    async def open(self) -> None:
        body = pb.SubscribeRequest(room_id=self.room_id).SerializeToString()
        req = self._client.build_request(
            "POST",
            self._url,
            content=b"\x00" + struct.pack("!I", len(body)) + body,
            headers={
                "content-type": "application/grpc-web+proto",
                "x-grpc-web": "1",
                "authorization": dict(self._md)["authorization"],
            },
        )
        self._resp = await self._client.send(req, stream=True)
        self._chunks = self._resp.aiter_raw()
        first = await self.read()
        if first.WhichOneof("kind") != "joined":
            raise RuntimeError(f"gRPC-web subscribe failed: {first}")

    async def read(self) -> pb.ConverseResponse:
        while True:
            if len(self._buf) >= 5:
                flag = self._buf[0]
                (n,) = struct.unpack("!I", self._buf[1:5])
                if len(self._buf) >= 5 + n:
                    frame, self._buf = self._buf[5 : 5 + n], self._buf[5 + n :]
                    if flag & 0x80:
                        raise RuntimeError(f"gRPC-web stream ended: {frame[:200]!r}")
                    return pb.SubscribeResponse.FromString(frame).event
            try:
                self._buf += await anext(self._chunks)
            except StopAsyncIteration:
                raise RuntimeError("gRPC-web stream closed") from None

    def close(self) -> None:
        if self._resp is not None:
            self._closing = asyncio.ensure_future(self._resp.aclose())


class Stamps:
    """The stream server's delta stamps, replayed through the marker parser.

    For each reply (keyed by the user message it answers) this gives the monotonic time of the
    delta that released each chunk, in chunk order: the same parser, fed the same deltas,
    releases the same chunks.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._by_key: dict[str, list[tuple[int, str]]] = {}

    def _load(self) -> None:
        if not self._path.exists():
            return
        with open(self._path) as f:
            f.seek(self._offset)
            while True:
                line = f.readline()
                if not line.endswith("\n"):
                    break
                self._offset = f.tell()
                rec = json.loads(line)
                parser = MarkerParser()
                released: list[tuple[int, str]] = []
                t = 0
                for t, delta in rec["d"]:
                    c = parser.feed(delta)
                    if c is not None:
                        released.append((t, c.raw))
                tail = parser.finish()
                if tail is not None:
                    released.append((t, tail.raw))
                self._by_key[rec["k"]] = released

    def latencies_us(self, turns: list[Turn]) -> tuple[list[float], int]:
        """Delta → client latencies (µs) of the turns' chunks, and how many turns had none."""
        self._load()
        out: list[float] = []
        missing = 0
        for turn in turns:
            released = self._by_key.pop(turn.content, None)
            if released is None or len(released) != len(turn.chunks):
                missing += 1
                continue
            for (t, raw), (got_raw, recv) in zip(released, turn.chunks, strict=True):
                if raw != got_raw:
                    missing += 1
                    break
                out.append((recv - t) / 1000)
        return out, missing

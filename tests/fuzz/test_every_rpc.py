"""Property-based fuzzing of every RPC of every service: arbitrary bytes and arbitrary
well-formed messages (built from the message descriptors), sent over real channels to real
in-process servers. No call may end INTERNAL or UNKNOWN, and every server still answers its
health check afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.metrics import RPC_TOTAL
from services.common.server import create_server
from services.stream.app import StreamSettings
from services.stream.app import open_spec as stream_spec
from tests.token import conftest as token_fixtures
from tests.token.conftest import BASE, Mesh
from tests.voice import conftest as voice_fixtures

mesh_factory = token_fixtures.mesh_factory
mesh = token_fixtures.mesh
kv_backend = token_fixtures.kv_backend
voice_factory = voice_fixtures.voice_factory

SERVICES = {
    "rooms": ("arconv.rooms.v1.RoomService", "arconv.rooms.v1.RoomInternalService"),
    "stream": ("arconv.stream.v1.StreamService", "arconv.stream.v1.StreamInternalService"),
    "avatar": ("arconv.avatar.v1.AvatarService", "arconv.avatar.v1.AvatarInternalService"),
    "token": ("arconv.token.v1.TokenService", "arconv.token.v1.TokenInternalService"),
    "voice": ("arconv.voice.v1.VoiceService",),
}
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
READ_S = 0.5  # a streaming call is read this long per message, then cancelled


def _methods() -> list[tuple[str, MethodDescriptor]]:
    import arconv.avatar.v1.avatar_service_pb2
    import arconv.rooms.v1.rooms_service_pb2
    import arconv.stream.v1.stream_service_pb2
    import arconv.token.v1.token_service_pb2
    import arconv.voice.v1.voice_service_pb2  # noqa: F401

    pool = descriptor_pool.Default()
    out = []
    for server, names in SERVICES.items():
        for name in names:
            with contextlib.suppress(KeyError):  # a service this tree does not have yet
                for m in pool.FindServiceByName(name).methods:
                    out.append((server, m))
    return out


METHODS = _methods()


# --- messages from descriptors ------------------------------------------------------------------

_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(f: FieldDescriptor, known: list[str]) -> st.SearchStrategy[Any]:
    if f.type in _INTS:
        lo, hi = _INTS[f.type]
        # Small values near the edges (within the type: an unsigned field takes no -1), and any.
        return st.one_of(st.integers(max(lo, -3), min(hi, 300)), st.integers(lo, hi))
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32 if f.type == FieldDescriptor.TYPE_FLOAT else 64)
    if f.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-2, 40)  # known values and unknown ones (open enums)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=40)
    return st.one_of(st.text(max_size=40), st.sampled_from(known))


@st.composite
def messages(draw: Any, desc: Descriptor, known: list[str], depth: int = 0) -> Message:
    msg = GetMessageClass(desc)()
    for f in desc.fields:
        if not draw(st.booleans()):
            continue
        target = f.message_type
        if target is not None and target.GetOptions().map_entry:
            key_f, value_f = target.fields_by_name["key"], target.fields_by_name["value"]
            entries = draw(
                st.dictionaries(_scalar(key_f, known), _scalar(value_f, known), max_size=3)
            )
            getattr(msg, f.name).update(entries)
        elif target is not None:
            if depth >= 3:
                continue
            if f.is_repeated:
                for sub in draw(st.lists(messages(target, known, depth + 1), max_size=3)):
                    getattr(msg, f.name).add().CopyFrom(sub)
            else:
                getattr(msg, f.name).CopyFrom(draw(messages(target, known, depth + 1)))
        elif f.is_repeated:
            getattr(msg, f.name).extend(draw(st.lists(_scalar(f, known), max_size=4)))
        else:
            setattr(msg, f.name, draw(_scalar(f, known)))
    return msg


# --- the servers --------------------------------------------------------------------------------


@dataclass(repr=False)
class Servers:
    ports: dict[str, int]
    metadata: list[tuple[tuple[str, str], ...]]
    known: list[str]
    channels: dict[str, grpc.aio.Channel]
    failures: dict[tuple[str, str, str], float]

    def __repr__(self) -> str:
        return f"Servers({self.ports})"


@pytest.fixture
async def servers(
    mesh: Mesh, voice_factory: Callable[..., Any], tmp_path: Any
) -> AsyncIterator[Servers]:
    voice = await voice_factory()
    settings = StreamSettings(
        **BASE,
        var_dir=tmp_path,
        rooms_addr=f"127.0.0.1:{mesh.rooms_port}",
        avatar_addr=f"127.0.0.1:{mesh.avatar_port}",
        llm_pacing_ms=0,
    )
    async with stream_spec(settings) as spec:
        stream = await create_server(settings, spec, port=0)
        try:
            room_id = await mesh.room("alice")
            issued = await mesh.issue("alice", room_id, ("tts.synthesize", "tts.viseme_stream"))
            ports = {
                "rooms": mesh.rooms_port,
                "avatar": mesh.avatar_port,
                "token": mesh.token_port,
                "stream": stream.port,
                "voice": voice.port,
            }
            channels = {n: grpc.aio.insecure_channel(f"127.0.0.1:{p}") for n, p in ports.items()}
            known = [
                "",
                room_id,
                room_id.upper(),
                "nova",
                issued.token,
                issued.token_id,
                "tts.synthesize",
                "alice",
                "x" * 300,
            ]
            md = [
                mesh.md("alice"),
                mesh.service_md("alice"),
                (("authorization", f"Bearer {issued.token}"),),
                (),
            ]
            yield Servers(ports, md, known, channels, server_failures())
            for ch in channels.values():
                await ch.close()
        finally:
            await stream.stop(0)


async def _call(ch: grpc.aio.Channel, m: MethodDescriptor, payloads: list[bytes], md: Any) -> Any:
    """The call's status code (OK, or CANCELLED when a stream was still open after the reads)."""
    path = f"/{m.containing_service.full_name}/{m.name}"
    try:
        if not m.client_streaming and not m.server_streaming:
            await ch.unary_unary(path)(payloads[0], metadata=md, timeout=10)
            return grpc.StatusCode.OK
        if m.client_streaming:
            call = ch.stream_stream(path)(metadata=md, timeout=10)
            try:
                for p in payloads:
                    await call.write(p)
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                # The server ended the call before reading everything: its status says why
                # (a write that races the end fails in the client, "Internal error from Core").
                return await call.code(), await call.details()
        else:
            call = ch.unary_stream(path)(payloads[0], metadata=md, timeout=10)
        for _ in range(5):
            try:
                got = await asyncio.wait_for(asyncio.shield(call.read()), READ_S)
            except TimeoutError:
                call.cancel()
                return grpc.StatusCode.CANCELLED
            if got is grpc.aio.EOF:
                break
        call.cancel()
        code = await call.code()
        return code
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details()


# grpc's Python client reports a write that races the server's end of a client-streaming call
# as this INTERNAL of its own, in place of the status the server sent; what the server sent
# is then checked through its own count of statuses (server_failures).
_CLIENT_SEND_FAILED = "Internal error from Core"


def server_failures() -> dict[tuple[str, str, str], float]:
    """Every INTERNAL or UNKNOWN status the in-process servers have sent, by method."""
    out = {}
    for metric in RPC_TOTAL.collect():
        for sample in metric.samples:
            code = sample.labels.get("code")
            if sample.name.endswith("_total") and code in ("INTERNAL", "UNKNOWN"):
                key = (sample.labels["service"], sample.labels["method"], code)
                out[key] = sample.value
    return out


def _check(outcome: Any, server: str, m: MethodDescriptor, before: dict[Any, float]) -> None:
    code = outcome[0] if isinstance(outcome, tuple) else outcome
    client_side = (
        m.client_streaming and isinstance(outcome, tuple) and outcome[1] == _CLIENT_SEND_FAILED
    )
    if not client_side:
        assert code not in BAD, f"{server} {m.full_name}: {outcome}"
    assert server_failures() == before, f"{server} {m.full_name}: {outcome}"


async def _healthy(ch: grpc.aio.Channel, server: str) -> None:
    got = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert got.status == health_pb2.HealthCheckResponse.SERVING, server


FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    target=st.sampled_from(METHODS),
    payloads=st.lists(st.binary(max_size=60), min_size=1, max_size=3),
    who=st.integers(0, 3),
)
async def test_arbitrary_bytes_to_every_rpc(
    servers: Servers, target: tuple[str, MethodDescriptor], payloads: list[bytes], who: int
) -> None:
    server, m = target
    outcome = await _call(servers.channels[server], m, payloads, servers.metadata[who])
    _check(outcome, server, m, servers.failures)
    await _healthy(servers.channels[server], server)


@FUZZ
@given(data=st.data(), target=st.sampled_from(METHODS), who=st.integers(0, 3))
async def test_arbitrary_messages_to_every_rpc(
    servers: Servers, data: Any, target: tuple[str, MethodDescriptor], who: int
) -> None:
    server, m = target
    n = data.draw(st.integers(1, 3)) if m.client_streaming else 1
    payloads = [
        data.draw(messages(m.input_type, servers.known)).SerializeToString() for _ in range(n)
    ]
    outcome = await _call(servers.channels[server], m, payloads, servers.metadata[who])
    _check(outcome, server, m, servers.failures)
    await _healthy(servers.channels[server], server)


async def test_every_rpc_refuses_garbage_and_every_server_stays_healthy(
    servers: Servers,
) -> None:
    """Every method, not a sample: a truncated body, an empty one, a corrupt one."""
    for server, m in METHODS:
        for payload in (b"\xff\xff\xff", b"", b"\x0a\x05ab"):
            outcome = await _call(servers.channels[server], m, [payload], servers.metadata[0])
            _check(outcome, server, m, servers.failures)
    for name, ch in servers.channels.items():
        await _healthy(ch, name)

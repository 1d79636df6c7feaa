"""Two stream replicas in two processes on the real Redis: one room, every event everywhere.

Replica A runs as `python -m services.stream`; replica B is the stream server of the test's
own mesh, configured alike (same Redis, same LLM server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb

from tests.llm.openai_server import OpenAICompatServer, Script
from tests.stream.conftest import Mesh, converse, message
from tests.stream.test_interrupts import SLOW

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


class Replica:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, drain: asyncio.Task[None]):
        self.proc = proc
        self.port = port
        self._drain = drain

    async def stop(self) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        code = await asyncio.wait_for(self.proc.wait(), 20)
        self._drain.cancel()
        return code


async def start_replica(env: dict[str, str]) -> Replica:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.stream",
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    port = 0
    try:
        # A loaded machine (CI, both cores running tests) can take tens of seconds.
        async with asyncio.timeout(90):
            while not port:
                line = await proc.stderr.readline()
                if not line:
                    raise AssertionError(f"replica exited: {await proc.wait()}")
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if doc.get("msg") == "serving":
                        port = int(doc["port"])
    except BaseException:
        # A replica that did not start in time is not left running after the test.
        proc.kill()
        await proc.wait()
        raise

    async def drain() -> None:
        assert proc.stderr is not None
        while await proc.stderr.readline():
            pass

    return Replica(proc, port, asyncio.create_task(drain()))


@pytest.fixture
async def replicas(
    make_mesh, openai_server: OpenAICompatServer, redis_base_url: str, redis_prefix: str, tmp_path
) -> AsyncIterator[tuple[Mesh, Replica, int]]:
    """The mesh, replica A (a process) and replica B's port (the mesh's stream server)."""
    bus = {"redis_url": redis_base_url, "redis_prefix": redis_prefix}
    llm = {
        "llm_provider": "openai",
        "llm_base_url": openai_server.base_url,
        "llm_api_key": "sk-test",
        "llm_model": "test-model",
    }
    mesh = await make_mesh(bus=bus, **llm)
    env = {
        "ARCONV_ENV": "test",
        "ARCONV_PORT": "0",
        "ARCONV_METRICS_PORT": "0",
        "ARCONV_LOG_FORMAT": "json",
        "ARCONV_VAR_DIR": str(tmp_path),
        "ARCONV_REDIS_URL": redis_base_url,
        "ARCONV_REDIS_PREFIX": redis_prefix,
        "ARCONV_ROOMS_ADDR": f"127.0.0.1:{mesh.rooms_port}",
        "ARCONV_AVATAR_ADDR": f"127.0.0.1:{mesh.avatar_port}",
        **{f"ARCONV_{key.upper()}": value for key, value in llm.items()},
        "ARCONV_SHUTDOWN_GRACE_S": "2",
    }
    a = await start_replica(env)
    try:
        yield mesh, a, mesh.stream_port
    finally:
        await a.stop()


def room_events(seen: list[pb.ConverseResponse]) -> list[pb.ConverseResponse]:
    return [e for e in seen if e.event_id]


async def test_two_processes_share_the_room_and_an_interrupt_crosses_them(
    replicas: tuple[Mesh, Replica, int], openai_server: OpenAICompatServer
) -> None:
    mesh, a, b_port = replicas
    openai_server.push(Script(deltas=["[emotion:happy] Hello ", "from one ", "replica."]), SLOW)
    room = await mesh.room("alice")
    on_a = await converse(mesh, "alice", room, port=a.port)
    on_b = await converse(mesh, "alice", room, port=b_port)

    await on_a.send(message("Hi", "c1"))
    done_a = await on_a.until_kind("stream_ended")
    await on_b.until_kind("stream_ended")
    assert done_a[-1].stream_ended.reason == pb.STREAM_END_REASON_COMPLETED
    assert room_events(on_a.seen) == room_events(on_b.seen)
    chunks = [e.stream_chunk for e in room_events(on_b.seen) if e.HasField("stream_chunk")]
    assert "".join(c.text for c in chunks) == "Hello from one replica."

    # A message through A, an interrupt through B: the generation on A stops.
    await on_a.send(message("Tell me more", "c2"))
    await on_b.until_kind("stream_chunk")
    await on_b.send(pb.ConverseRequest(interrupt=pb.Interrupt()))
    ended_b = (await on_b.until_kind("stream_ended"))[-1].stream_ended
    await on_a.until_kind("stream_ended")
    assert ended_b.reason == pb.STREAM_END_REASON_INTERRUPTED
    assert room_events(on_a.seen) == room_events(on_b.seen)
    request = await openai_server.request(1)
    await request.wait_done()
    assert request.disconnected and request.deltas_written < len(SLOW.deltas)
    agent = (await mesh.messages("alice", room))[-1]
    assert agent.status == rooms_pb.MESSAGE_STATUS_INTERRUPTED
    assert agent.message_id == ended_b.agent_message_id


async def test_sigterm_stores_the_running_reply_and_ends_streams_with_unavailable(
    replicas: tuple[Mesh, Replica, int], openai_server: OpenAICompatServer
) -> None:
    mesh, a, b_port = replicas
    openai_server.script = SLOW
    room = await mesh.room("alice")
    on_a = await converse(mesh, "alice", room, port=a.port)
    on_b = await converse(mesh, "alice", room, port=b_port)
    await on_a.send(message("Hi", "c1"))
    await on_a.until_kind("stream_chunk")
    a.proc.send_signal(signal.SIGTERM)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            await on_a.next()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    ended = (await on_b.until_kind("stream_ended"))[-1].stream_ended
    assert ended.reason == pb.STREAM_END_REASON_INTERRUPTED
    agent = (await mesh.messages("alice", room))[-1]
    assert agent.status == rooms_pb.MESSAGE_STATUS_INTERRUPTED
    assert agent.message_id == ended.agent_message_id
    assert await asyncio.wait_for(a.proc.wait(), 20) == 0

    # The client reconnects on the other replica with its cursor: nothing lost.
    cursor = room_events(on_a.seen)[-1].event_id
    last = room_events(on_b.seen)[-1].event_id
    back = await converse(mesh, "alice", room, after=cursor, port=b_port)
    rest = [] if cursor == last else await back.until(lambda e: e.event_id == last)
    assert room_events(on_a.seen) + room_events(rest) == room_events(on_b.seen)

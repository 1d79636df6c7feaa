"""Per-user limits, slow readers cut off without slowing others, and the stream metrics."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from arconv.stream.v1 import stream_service_pb2 as pb
from arconv.stream.v1 import stream_service_pb2_grpc as pb_grpc
from google.rpc import code_pb2, error_details_pb2
from prometheus_client import REGISTRY

from services.common.status import status_details
from services.stream import core as stream_core
from tests.llm.openai_server import OpenAICompatServer, Script
from tests.stream.conftest import converse, message
from tests.stream.test_interrupts import openai_llm


async def test_messages_per_minute(make_mesh, bus_backend, monkeypatch) -> None:
    # The limit counts per clock minute: the sends below all fall in one, whenever they run.
    monkeypatch.setattr(stream_core, "wall_clock", lambda: 29_000_000 * 60 + 30.0)
    mesh = await make_mesh(bus=bus_backend, stream_messages_per_minute=2)
    room = await mesh.room("alice")
    stub = mesh.stream()
    for i in range(2):
        await stub.SendMessage(
            pb.SendMessageRequest(room_id=room, content="hi", client_message_id=f"m{i}"),
            metadata=mesh.md("alice"),
        )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SendMessage(
            pb.SendMessageRequest(room_id=room, content="hi", client_message_id="m3"),
            metadata=mesh.md("alice"),
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = status_details(info.value)
    assert any(isinstance(d, error_details_pb2.QuotaFailure) for d in details)
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in details)
    humans = [m for m in await mesh.messages("alice", room) if m.sender_id == "alice"]
    assert len(humans) == 2  # nothing stored for the refused one

    conv = await converse(mesh, "alice", room)
    await conv.send(message("hi", "m4"))
    err = (await conv.until_kind("stream_error"))[-1]
    assert err.event_id == 0 and err.stream_error.client_message_id == "m4"
    assert err.stream_error.code == code_pb2.RESOURCE_EXHAUSTED and err.stream_error.retryable
    # Another user is not affected.
    bob_room = await mesh.room("bob")
    await stub.SendMessage(
        pb.SendMessageRequest(room_id=bob_room, content="hi", client_message_id="b1"),
        metadata=mesh.md("bob"),
    )


async def test_open_streams_per_user(make_mesh, bus_backend) -> None:
    mesh = await make_mesh(bus=bus_backend, stream_max_open_streams=2)
    room = await mesh.room("alice")
    first = await converse(mesh, "alice", room)
    await converse(mesh, "alice", room)
    third = mesh.stream().Subscribe(pb.SubscribeRequest(room_id=room), metadata=mesh.md("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await third.read()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await converse(mesh, "bob", await mesh.room("bob"))

    await first.call.done_writing()
    assert await first.call.code() == grpc.StatusCode.OK
    assert await converse(mesh, "alice", room)


async def test_open_stream_slots_are_leased_renewed_and_expire(
    make_mesh, redis_base_url, redis_prefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.common.kv import RedisKV
    from services.stream import core

    monkeypatch.setattr(core, "OPEN_STREAM_LEASE_S", 0.4)
    monkeypatch.setattr(core, "OPEN_STREAM_RENEW_S", 0.1)
    bus = {"redis_url": redis_base_url, "redis_prefix": redis_prefix}
    mesh = await make_mesh(bus=bus, stream_max_open_streams=2)
    room = await mesh.room("alice")
    # A replica that died without closing its streams left this lease behind.
    kv = RedisKV(redis_base_url, prefix=f"{redis_prefix}stream:")
    try:
        assert await kv.acquire_lease("open-streams:alice", "dead", limit=2, ttl_s=0.4)
        live = await converse(mesh, "alice", room)
        refused = mesh.stream().Subscribe(
            pb.SubscribeRequest(room_id=room), metadata=mesh.md("alice")
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await refused.read()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # A lease lifetime later the dead lease is gone; the live one, taken before the
        # refused call, was renewed.
        await asyncio.sleep(0.5)
        assert await kv.lease_count("open-streams:alice") == 1
        assert await converse(mesh, "alice", room)
        assert await kv.lease_count("open-streams:alice") == 2
        await live.call.done_writing()
        assert await live.call.code() == grpc.StatusCode.OK
    finally:
        await kv.close()


async def test_a_resume_at_the_limit_replaces_only_a_dead_replica_s_slot(
    make_mesh, redis_base_url, redis_prefix, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.common.kv import RedisKV
    from services.stream import core

    monkeypatch.setattr(core, "OPEN_STREAM_RENEW_S", 0.1)
    bus = {"redis_url": redis_base_url, "redis_prefix": redis_prefix}
    mesh = await make_mesh(bus=bus, stream_max_open_streams=2)
    room = await mesh.room("alice")
    kv = RedisKV(redis_base_url, prefix=f"{redis_prefix}stream:")
    slots = "open-streams:alice"
    try:
        first = await converse(mesh, "alice", room)
        await first.send(message("hi", "m1"))
        cursor = (await first.until_kind("stream_ended"))[-1].event_id
        await first.call.done_writing()
        assert await first.call.code() == grpc.StatusCode.OK
        assert await kv.lease_count(slots) == 0  # freed before the status was sent
        # Two slots of other replicas: one beats (alive), one has no heartbeat (dead).
        assert await kv.acquire_lease(slots, "ghost/s1", limit=2, ttl_s=60)
        assert await kv.acquire_lease(slots, "alive/s1", limit=2, ttl_s=60)

        async def beat() -> None:
            while True:
                await kv.renew_lease("replicas", "alive", ttl_s=1.0)
                await asyncio.sleep(0.2)

        beating = asyncio.create_task(beat())
        try:
            # A new stream is refused at the limit; a resume takes the dead replica's slot.
            with pytest.raises(grpc.aio.AioRpcError) as fresh:
                await converse(mesh, "alice", room)
            assert fresh.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            resumed = await converse(mesh, "alice", room, after=cursor)
            holders = set(await kv.lease_holders(slots))
            assert "ghost/s1" not in holders and "alive/s1" in holders and len(holders) == 2
            # The live replica's slot stays: another resume is refused.
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await converse(mesh, "alice", room, after=cursor)
            assert again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            beating.cancel()
        # While this replica looked dead a resume elsewhere took its slot: its stream ends
        # UNAVAILABLE at the next renewal instead of taking the slot back over the limit.
        ours = next(h for h in holders if h != "alive/s1")
        assert await kv.acquire_lease(slots, "other/s2", limit=2, ttl_s=60, replace=[ours])
        with pytest.raises(grpc.aio.AioRpcError) as lost:
            await resumed.until_kind("stream_ended")
        assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
        info = next(
            d for d in status_details(lost.value) if isinstance(d, error_details_pb2.ErrorInfo)
        )
        assert info.reason == "STREAM_SLOT_TAKEN"
        assert set(await kv.lease_holders(slots)) == {"alive/s1", "other/s2"}
    finally:
        await kv.close()


async def test_a_stalled_reader_is_cut_off_without_delaying_others(
    make_mesh, openai_server: OpenAICompatServer, bus_backend
) -> None:
    openai_server.script = Script(deltas=[f"Sentence number {i} is here. " for i in range(80)])
    mesh = await make_mesh(
        provider=openai_llm(openai_server),
        bus=bus_backend,
        stream_subscriber_queue=32,
        stream_slow_reader_s=0.5,
    )
    room = await mesh.room("alice")
    # A client with a tiny receive window that stops reading after `joined`.
    stalled_channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{mesh.stream_port}",
        options=[("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)],
    )
    mesh.channels.append(stalled_channel)
    stalled = pb_grpc.StreamServiceStub(stalled_channel).Subscribe(
        pb.SubscribeRequest(room_id=room), metadata=mesh.md("alice")
    )
    assert (await stalled.read()).event.HasField("joined")

    cut_before = _slow_client_disconnects()
    healthy = await converse(mesh, "alice", room)
    await healthy.send(message("Talk", "c1"))
    done = await healthy.until_kind("stream_ended")
    assert done[-1].stream_ended.reason == pb.STREAM_END_REASON_COMPLETED

    # The stalled client, reading nothing, is cut off slow_reader_s after its queue filled;
    # only then does it read again.
    for _ in range(1000):
        if _slow_client_disconnects() > cut_before:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the stalled client was never cut off")
    got = 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while await stalled.read() != grpc.aio.EOF:
            got += 1
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "reconnect" in (info.value.details() or "")
    assert got < len([e for e in done if e.event_id])
    assert _slow_client_disconnects() >= 1


def _slow_client_disconnects() -> float:
    return REGISTRY.get_sample_value("arconv_stream_slow_client_disconnects_total") or 0.0


async def test_metrics(make_mesh, openai_server: OpenAICompatServer) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    completed = sample("arconv_stream_replies_completed_total", reason="completed")
    interrupted = sample("arconv_stream_replies_interrupted_total", reason="client")
    latencies = sample("arconv_stream_chunk_latency_seconds_count")
    openai_server.push(
        Script(deltas=["[emotion:happy] Hi."]),
        Script(deltas=[f" w{i}" for i in range(50)], delay_s=0.05),
    )
    mesh = await make_mesh(provider=openai_llm(openai_server))
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    assert sample("arconv_stream_open_streams") >= 1
    await conv.send(message("Hi", "c1"))
    await conv.until_kind("stream_ended")
    await conv.send(message("More", "c2"))
    await conv.until_kind("stream_chunk")
    await conv.send(pb.ConverseRequest(interrupt=pb.Interrupt()))
    await conv.until_kind("stream_ended")
    assert sample("arconv_stream_replies_completed_total", reason="completed") == completed + 1
    assert sample("arconv_stream_replies_interrupted_total", reason="client") == interrupted + 1
    assert sample("arconv_stream_chunk_latency_seconds_count") > latencies

"""One cursor for pause/resume, reconnects and second devices; room state from the rooms service."""

from __future__ import annotations

import asyncio
import json
from typing import cast

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb
from google.rpc import code_pb2

from services.common.status import status_details
from services.stream import events
from services.stream.core import ConversationCore
from tests.llm.openai_server import OpenAICompatServer, Script
from tests.stream.conftest import Mesh, converse, join, kinds, message
from tests.stream.test_interrupts import SLOW, openai_llm

PAUSE = pb.ConverseRequest(pause=pb.Pause())
RESUME = pb.ConverseRequest(resume=pb.Resume())


def is_state(status: int):
    return lambda e: e.HasField("room_state") and e.room_state.status == status


def ids(events: list[pb.ConverseResponse]) -> list[int]:
    return [e.event_id for e in events if e.event_id]


async def _ended_in_log(mesh: Mesh, room: str, after: int) -> None:
    """Returns once a stream_ended lies in the room's log after event `after`."""
    bus = cast(ConversationCore, mesh.servers[-1].spec.on_shutdown.__self__)._bus
    while True:
        batch = await bus.read(room, after, block_s=1.0)
        if any(e.kind == events.ENDED for e in batch):
            return
        after = batch[-1].event_id if batch else after


async def test_pause_holds_delivery_and_resume_continues_without_loss_or_repeat(
    make_mesh, openai_server: OpenAICompatServer, bus_backend
) -> None:
    openai_server.script = Script(deltas=SLOW.deltas[:20], delay_s=0.02)
    mesh = await make_mesh(provider=openai_llm(openai_server), bus=bus_backend)
    room = await mesh.room("alice")
    phone = await converse(mesh, "alice", room)
    glasses = await converse(mesh, "alice", room)
    await phone.send(message("Hi", "c1"))
    await phone.until_kind("stream_chunk")
    await phone.send(PAUSE)
    paused = (await phone.until(is_state(rooms_pb.ROOM_STATUS_PAUSED)))[-1]
    await glasses.until(is_state(rooms_pb.ROOM_STATUS_PAUSED))

    # A paused room takes no message; generation carries on into the log.
    await phone.send(message("more", "c2"))
    refused = await phone.next()
    assert refused.stream_error.code == code_pb2.FAILED_PRECONDITION
    assert refused.stream_error.client_message_id == "c2"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.stream().SendMessage(
            pb.SendMessageRequest(room_id=room, content="x", client_message_id="c3"),
            metadata=mesh.md("alice"),
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    request = await openai_server.request(0)
    await request.wait_done()
    assert request.completed
    # Delivery is held: the reply's end is in the log, and nothing arrives while the room is
    # paused.
    await asyncio.wait_for(_ended_in_log(mesh, room, paused.event_id), 10)
    with pytest.raises(TimeoutError):
        await phone.next(wait_s=0.2)

    # A device that joins now starts held at the newest event.
    late = (
        await mesh.stream()
        .Subscribe(pb.SubscribeRequest(room_id=room), metadata=mesh.md("alice"))
        .read()
    )
    assert late.event.joined.status == rooms_pb.ROOM_STATUS_PAUSED

    await phone.send(RESUME)
    after = await phone.until(is_state(rooms_pb.ROOM_STATUS_ACTIVE))
    assert ids(after) == list(range(paused.event_id + 1, paused.event_id + 1 + len(ids(after))))
    assert "stream_ended" in kinds(after)
    assert after[-1].event_id > max(e.event_id for e in after if e.HasField("stream_ended"))

    seen_phone = [e for e in phone.seen if e.event_id]
    await glasses.until(is_state(rooms_pb.ROOM_STATUS_ACTIVE))
    seen_glasses = [e for e in glasses.seen if e.event_id]
    assert seen_glasses == seen_phone, "every device receives every event"

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.stream().ResumeStream(
            pb.ResumeStreamRequest(room_id=room), metadata=mesh.md("alice")
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    r = await mesh.stream().PauseStream(
        pb.PauseStreamRequest(room_id=room), metadata=mesh.md("alice")
    )
    assert r.status == rooms_pb.ROOM_STATUS_PAUSED
    await phone.until(is_state(rooms_pb.ROOM_STATUS_PAUSED))


async def test_reconnect_with_the_cursor_resumes_exactly(
    make_mesh, openai_server: OpenAICompatServer, bus_backend
) -> None:
    openai_server.script = Script(deltas=SLOW.deltas[:30], delay_s=0.01)
    mesh = await make_mesh(provider=openai_llm(openai_server), bus=bus_backend)
    room = await mesh.room("alice")
    watcher = await converse(mesh, "alice", room)
    flaky = await converse(mesh, "alice", room)
    await flaky.send(message("Hi", "c1"))
    await flaky.until(lambda e: e.HasField("stream_chunk") and e.stream_chunk.chunk_index == 3)
    cursor = flaky.seen[-1].event_id
    flaky.call.cancel()

    back = await converse(mesh, "alice", room, after=cursor)
    rest = await back.until_kind("stream_ended")
    everything = await watcher.until_kind("stream_ended")
    assert [e for e in flaky.seen if e.event_id] + rest == [e for e in everything if e.event_id]


async def test_a_cursor_older_than_the_kept_events_is_out_of_range(make_mesh) -> None:
    mesh = await make_mesh(stream_events_maxlen=10)
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Tell me a story please", "c1"))
    last = (await conv.until_kind("stream_ended"))[-1].event_id
    assert last > 11
    call = mesh.stream().Converse(iter([join(room, after=1)]), metadata=mesh.md("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    reasons = [d.reason for d in status_details(info.value) if hasattr(d, "reason")]
    assert "CURSOR_EXPIRED" in reasons
    ok = await converse(mesh, "alice", room, after=last - 5)
    assert [e.event_id for e in await ok.until_kind("stream_ended")] == list(
        range(last - 4, last + 1)
    )


async def test_pause_and_end_from_the_rooms_service(
    make_mesh, openai_server: OpenAICompatServer, bus_backend
) -> None:
    openai_server.script = SLOW
    mesh = await make_mesh(provider=openai_llm(openai_server), bus=bus_backend)
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    sub = mesh.stream().Subscribe(pb.SubscribeRequest(room_id=room), metadata=mesh.md("alice"))
    assert (await sub.read()).event.HasField("joined")

    await mesh.rooms.PauseRoom(rooms_pb.PauseRoomRequest(room_id=room), metadata=mesh.md("alice"))
    await conv.until(is_state(rooms_pb.ROOM_STATUS_PAUSED))
    await mesh.rooms.ResumeRoom(rooms_pb.ResumeRoomRequest(room_id=room), metadata=mesh.md("alice"))
    await conv.until(is_state(rooms_pb.ROOM_STATUS_ACTIVE))

    await conv.send(message("Hi", "c1"))
    await conv.until_kind("stream_chunk")
    await mesh.rooms.EndRoom(rooms_pb.EndRoomRequest(room_id=room), metadata=mesh.md("alice"))
    tail = await conv.until(is_state(rooms_pb.ROOM_STATUS_ENDED))
    ended = [e.stream_ended for e in tail if e.HasField("stream_ended")]
    assert [e.reason for e in ended] == [pb.STREAM_END_REASON_INTERRUPTED]
    assert await conv.call.read() == grpc.aio.EOF
    assert await conv.call.code() == grpc.StatusCode.OK
    sub_events = []
    while (r := await sub.read()) != grpc.aio.EOF:
        sub_events.append(r.event)
    assert sub_events[-1].room_state.status == rooms_pb.ROOM_STATUS_ENDED
    assert await sub.code() == grpc.StatusCode.OK
    # Each change is announced once, although both the stream and rooms services report it.
    states = [e.room_state.status for e in conv.seen if e.HasField("room_state")]
    assert states == [
        rooms_pb.ROOM_STATUS_PAUSED,
        rooms_pb.ROOM_STATUS_ACTIVE,
        rooms_pb.ROOM_STATUS_ENDED,
    ]
    # The reply the room's end cut short is stored as INTERRUPTED with what was delivered.
    assert ended[0].agent_message_id
    stored = await mesh.messages("alice", room)
    assert [m.sender_type for m in stored] == [
        rooms_pb.SENDER_TYPE_HUMAN,
        rooms_pb.SENDER_TYPE_AGENT,
    ]
    assert stored[1].message_id == ended[0].agent_message_id
    assert stored[1].status == rooms_pb.MESSAGE_STATUS_INTERRUPTED
    delivered = "".join(e.stream_chunk.text for e in conv.seen if e.HasField("stream_chunk"))
    assert stored[1].text == delivered


async def test_half_close_ends_after_the_reply_to_the_last_message(make_mesh) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    call = mesh.stream().Converse(
        iter([join(room), message("Hello there!", "c1")]), metadata=mesh.md("alice")
    )
    events = [e async for e in call]
    assert await call.code() == grpc.StatusCode.OK
    assert kinds(events)[:3] == ["joined", "message_accepted", "stream_started"]
    assert kinds(events)[-1] == "stream_ended"


async def test_subscribe_and_send_message_behave_like_converse(make_mesh) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    stub = mesh.stream()
    sub = stub.Subscribe(pb.SubscribeRequest(room_id=room), metadata=mesh.md("alice"))
    joined = (await sub.read()).event
    assert joined.joined.status == rooms_pb.ROOM_STATUS_ACTIVE
    sent = await stub.SendMessage(
        pb.SendMessageRequest(room_id=room, content="Hello!", client_message_id="w1"),
        metadata=mesh.md("alice"),
    )
    events = []
    async with asyncio.timeout(10):
        while not events or not events[-1].HasField("stream_ended"):
            events.append((await sub.read()).event)
    assert events[0].stream_started.stream_id == sent.stream_id
    assert events[0].stream_started.message_id == sent.message_id
    # A room without events yet: last_event_id 0, and the log numbers from its start time.
    assert joined.joined.last_event_id == 0 and events[0].event_id > 0
    ids = [e.event_id for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    sub.cancel()


async def test_stream_state_on_redis_follows_the_reply_and_expires_in_an_hour(
    make_mesh, openai_server: OpenAICompatServer, redis_base_url: str, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    openai_server.push(SLOW, Script(deltas=["[emotion:happy] Done."]))
    bus = {"redis_url": redis_base_url, "redis_prefix": redis_prefix}
    mesh = await make_mesh(provider=openai_llm(openai_server), bus=bus)
    room = await mesh.room("alice")
    client = aioredis.Redis.from_url(redis_base_url)

    async def state(stream_id: str) -> tuple[str, str, int]:
        key = f"{redis_prefix}bus:state:stream:{stream_id}"
        doc = json.loads(await client.get(key))
        return doc["room_id"], doc["state"], await client.pttl(key)

    try:
        stub = mesh.stream()
        conv = await converse(mesh, "alice", room)
        await conv.send(message("Hi", "c1"))
        started = (await conv.until_kind("stream_started"))[-1].stream_started
        sid = started.stream_id
        room_id, current, ttl = await state(sid)
        assert (room_id, current) == (room, "active") and 0 < ttl <= 3600_000
        await stub.PauseStream(pb.PauseStreamRequest(room_id=room), metadata=mesh.md("alice"))
        assert (await state(sid))[1] == "paused"
        await stub.ResumeStream(pb.ResumeStreamRequest(room_id=room), metadata=mesh.md("alice"))
        assert (await state(sid))[1] == "active"
        await conv.send(pb.ConverseRequest(interrupt=pb.Interrupt(stream_id=sid)))
        await conv.until(lambda e: e.HasField("stream_ended") and e.stream_ended.stream_id == sid)
        assert (await state(sid))[1] == "interrupted"

        await conv.send(message("Again", "c2"))
        ended = (await conv.until_kind("stream_ended"))[-1].stream_ended
        room_id, current, ttl = await state(ended.stream_id)
        assert (room_id, current) == (room, "completed") and 0 < ttl <= 3600_000
    finally:
        await client.aclose()

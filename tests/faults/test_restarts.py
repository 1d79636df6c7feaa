"""A restart of the embedded bus (a new stream process) and of Redis without persistence:
no message is answered twice, old cursors are refused with OUT_OF_RANGE, followed rooms are
heard again."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb

from services.common import redis_follow
from services.llm.persona import PersonaProvider
from services.stream import core as core_module
from services.stream.core import ConversationCore
from services.stream.ports import Sender
from tests.faults.own_redis import OwnRedis
from tests.stream.conftest import Conversation, Mesh, MeshFactory, converse, join, message


async def _answered(mesh: Mesh, user: str, room: str, cid: str, port: int = 0) -> int:
    """Sends a message and reads its reply to the end; the last event id seen."""
    conv = await converse(mesh, user, room, port=port)
    await conv.send(message(f"Tell me something ({cid})", cid))
    done = await conv.until_kind("stream_ended")
    assert done[-1].stream_ended.reason == pb.STREAM_END_REASON_COMPLETED
    conv.call.cancel()
    return done[-1].event_id


async def _refused(mesh: Mesh, user: str, room: str, cursor: int, port: int = 0) -> None:
    conv = Conversation(mesh.stream(port or None).Converse(metadata=mesh.md(user)))
    await conv.send(join(room, cursor))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await conv.next()
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE, info.value
    assert "after_event_id 0" in (info.value.details() or "")


async def _resend_is_not_answered(mesh: Mesh, user: str, room: str, port: int = 0) -> None:
    """c1 again (stored before the fault) is acknowledged as a duplicate and not answered:
    the next reply in the room is the one to c2."""
    conv = await converse(mesh, user, room, port=port)
    await conv.send(message("Tell me something (c1)", "c1"))
    again = await conv.until_kind("message_accepted")
    assert again[-1].message_accepted.duplicate
    await conv.send(message("Something new", "c2"))
    c2 = (await conv.until_kind("message_accepted"))[-1].message_accepted
    assert not c2.duplicate
    started = (await conv.until_kind("stream_started"))[-1].stream_started
    assert started.message_id == c2.message_id, "the resent message was answered again"
    await conv.until_kind("stream_ended")
    conv.call.cancel()
    stored = await mesh.messages(user, room)
    agents = [m for m in stored if m.sender_type == rooms_pb.SENDER_TYPE_AGENT]
    humans = [m for m in stored if m.sender_type == rooms_pb.SENDER_TYPE_HUMAN]
    assert (len(humans), len(agents)) == (2, 2), "every message answered exactly once"


async def test_a_restarted_embedded_bus_refuses_old_cursors_and_answers_nothing_twice(
    make_mesh: MeshFactory,
) -> None:
    mesh = await make_mesh()
    room = await mesh.room("ann")
    cursor = await _answered(mesh, "ann", room, "c1")
    # The stream process restarts: a new process, a new embedded bus (every event and key
    # of the old one gone).
    await mesh.servers[-1].stop(0)
    restarted = (await mesh.start_stream()).port
    await _resend_is_not_answered(mesh, "ann", room, port=restarted)
    # The new log has more events than the old cursor named; the cursor is still refused.
    await _refused(mesh, "ann", room, cursor, port=restarted)
    fresh = await converse(mesh, "ann", room, port=restarted)
    assert fresh.seen[0].joined.last_event_id > cursor
    fresh.call.cancel()


async def test_a_redis_restart_without_persistence_is_detected_and_rooms_heard_again(
    make_mesh: MeshFactory, own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The followed rooms are subscribed again after a pause; shorter here.
    monkeypatch.setattr(redis_follow, "RECOVER_S", 0.05)
    mesh = await make_mesh(bus={"redis_url": own_redis.url, "redis_prefix": "t:"})
    room = await mesh.room("bea")
    cursor = await _answered(mesh, "bea", room, "c1")
    # A client stays joined across the restart: the replica follows the room.
    held = await converse(mesh, "bea", room, after=cursor)
    await own_redis.restart()  # every key is gone: counters, logs, leases, reply state
    # The held client hears the truth: its events are gone (OUT_OF_RANGE), or the bus
    # was unavailable for a moment (UNAVAILABLE); either way a status, not silence.
    ended = asyncio.ensure_future(_status_of(held))
    await _until_redis_answers(mesh, "bea", room)
    await _resend_is_not_answered(mesh, "bea", room)
    assert await asyncio.wait_for(ended, 20) in (
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
    )
    await _refused(mesh, "bea", room, cursor)
    # The followed room is heard again: a client joined now receives a new reply live.
    conv = await converse(mesh, "bea", room)
    await conv.send(message("And now?", "c3"))
    done = await conv.until_kind("stream_ended", wait_s=20)
    assert done[-1].stream_ended.reason == pb.STREAM_END_REASON_COMPLETED
    ids = [e.event_id for e in done if e.event_id]
    assert ids == list(range(ids[0], ids[0] + len(ids))) and ids[0] > cursor
    conv.call.cancel()


async def _status_of(conv: Conversation) -> grpc.StatusCode:
    try:
        while True:
            event = await conv.call.read()
            if event is grpc.aio.EOF:
                return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


async def _until_redis_answers(mesh: Mesh, user: str, room: str) -> None:
    """Joins until the replica's Redis connections are back (at most a few seconds)."""
    for _ in range(100):
        conv = Conversation(mesh.stream().Converse(metadata=mesh.md(user)))
        await conv.send(join(room))
        try:
            await conv.next()
            conv.call.cancel()
            return
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            await asyncio.sleep(0.1)
    raise AssertionError("the replica never reached the restarted Redis")


class HeldProvider(PersonaProvider):
    """The persona, whose reply waits at `at` (a fraction of its deltas: 0 before its first
    words, 0.5 halfway) until `go` is set; `held` is set once it waits there."""

    def __init__(self, at: float = 0.0) -> None:
        super().__init__()
        self.at = at
        self.held = asyncio.Event()
        self.go = asyncio.Event()

    async def stream(self, messages: Any, *, model: Any = None, max_tokens: Any = None) -> Any:
        deltas = [d async for d in super().stream(messages, model=model, max_tokens=max_tokens)]
        for index, delta in enumerate(deltas):
            if index == int(len(deltas) * self.at):
                self.held.set()
                await self.go.wait()
            yield delta


async def test_a_reply_cut_by_a_redis_outage_is_stored_with_what_it_delivered(
    make_mesh: MeshFactory, own_redis: OwnRedis
) -> None:
    provider = HeldProvider(at=0.5)
    mesh = await make_mesh(provider, bus={"redis_url": own_redis.url, "redis_prefix": "t:"})
    room = await mesh.room("cat")
    conv = await converse(mesh, "cat", room)
    await conv.send(message("Tell me a long story", "c1"))
    started = (await conv.until_kind("stream_started"))[-1].stream_started
    for _ in range(3):
        await conv.until_kind("stream_chunk")
    seen = "".join(e.stream_chunk.text for e in conv.seen if e.HasField("stream_chunk"))
    await provider.held.wait()
    await own_redis.stop()  # Redis goes away in the middle of the reply
    provider.go.set()
    # The client hears it (UNAVAILABLE), not silence.
    assert await asyncio.wait_for(_status_of(conv), 20) == grpc.StatusCode.UNAVAILABLE
    # Messages lost: 0. The reply is stored, INTERRUPTED, with what reached the log.
    reply = await _stored_reply(mesh, "cat", room)
    assert reply.stream_id == started.stream_id
    assert reply.status == rooms_pb.MESSAGE_STATUS_INTERRUPTED
    assert reply.text.startswith(seen) and seen
    await own_redis.start()


async def test_a_reply_whose_lease_is_lost_with_redis_s_data_goes_on_and_is_stored(
    make_mesh: MeshFactory, own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis.asyncio as aioredis

    provider = HeldProvider(at=0.5)
    mesh = await make_mesh(provider, bus={"redis_url": own_redis.url, "redis_prefix": "t:"})
    retaken = _lease_taken_again(mesh, monkeypatch)
    room = await mesh.room("dot")
    conv = await converse(mesh, "dot", room)
    await conv.send(message("Tell me a long story", "c1"))
    started = (await conv.until_kind("stream_started"))[-1].stream_started
    await conv.until_kind("stream_chunk")
    await provider.held.wait()  # halfway through the reply
    # Every key goes, as in a restart without persistence, but no connection drops: the
    # reply's next lease renewal finds no lease, and no one else ended the reply.
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    # The reply is not dropped: it takes its lease again, goes on and is stored.
    await asyncio.wait_for(retaken.wait(), 20)
    provider.go.set()
    reply = await _stored_reply(mesh, "dot", room)
    assert reply.stream_id == started.stream_id
    assert reply.status == rooms_pb.MESSAGE_STATUS_COMPLETE and reply.text
    conv.call.cancel()


def _core(mesh: Mesh) -> ConversationCore:
    return cast(ConversationCore, mesh.servers[-1].spec.on_shutdown.__self__)


def _lease_taken_again(mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once a reply claims its room's lease a second time."""
    bus = _core(mesh)._bus
    claim = bus.claim_reply
    claimed: set[str] = set()
    again = asyncio.Event()

    async def noted(room: str, stream_id: str, *args: Any, **kwargs: Any) -> Any:
        taken, other = await claim(room, stream_id, *args, **kwargs)
        if taken:
            if stream_id in claimed:
                again.set()
            claimed.add(stream_id)
        return taken, other

    monkeypatch.setattr(bus, "claim_reply", noted)
    return again


async def _stored_reply(mesh: Mesh, user: str, room: str) -> rooms_pb.Message:
    """The room's one AGENT message, once stored (a reply's end takes a few seconds)."""
    for _ in range(300):
        agents = [
            m
            for m in await mesh.messages(user, room)
            if m.sender_type == rooms_pb.SENDER_TYPE_AGENT
        ]
        if agents:
            assert len(agents) == 1, agents
            return agents[0]
        await asyncio.sleep(0.1)
    raise AssertionError("the message was never answered: no reply stored")


def _redis_stops_once_a_message_is_stored(
    mesh: Mesh, own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away between storing a human message and its reply claiming the room."""
    rooms = _core(mesh)._rooms
    store = rooms.append_message

    async def then_redis_stops(*args: Any, **kwargs: Any) -> Any:
        stored = await store(*args, **kwargs)
        if kwargs["sender"] is Sender.HUMAN:
            await own_redis.stop()
        return stored

    monkeypatch.setattr(rooms, "append_message", then_redis_stops)


def _claims_refused(mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once a reply could not claim its room (the bus was out of reach)."""
    core = _core(mesh)
    run = core._run_reply
    refused = asyncio.Event()

    async def noted(*args: Any) -> bool:
        ran = await run(*args)
        if not ran:
            refused.set()
        return ran

    monkeypatch.setattr(core, "_run_reply", noted)
    return refused


async def test_a_message_stored_as_redis_goes_away_is_answered_when_it_returns(
    make_mesh: MeshFactory, own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = await make_mesh(bus={"redis_url": own_redis.url, "redis_prefix": "t:"})
    room = await mesh.room("eve")
    monkeypatch.setattr(core_module, "CLAIM_RETRY_S", 0.05)
    _redis_stops_once_a_message_is_stored(mesh, own_redis, monkeypatch)
    refused = _claims_refused(mesh, monkeypatch)
    sent = await mesh.stream().SendMessage(
        pb.SendMessageRequest(room_id=room, content="Hello?", client_message_id="c1"),
        metadata=mesh.md("eve"),
    )
    assert sent.stream_id and not sent.duplicate
    await asyncio.wait_for(refused.wait(), 20)  # the reply cannot claim the room: no Redis
    await own_redis.start()
    # The reply waited for the bus rather than vanish: it runs now and is stored.
    reply = await _stored_reply(mesh, "eve", room)
    assert reply.stream_id == sent.stream_id
    assert reply.status == rooms_pb.MESSAGE_STATUS_COMPLETE and reply.text


async def test_a_reply_that_never_reaches_redis_is_stored_failed(
    make_mesh: MeshFactory, own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_module, "CLAIM_PATIENCE_S", 0.3)
    monkeypatch.setattr(core_module, "CLAIM_RETRY_S", 0.05)
    mesh = await make_mesh(bus={"redis_url": own_redis.url, "redis_prefix": "t:"})
    room = await mesh.room("fay")
    _redis_stops_once_a_message_is_stored(mesh, own_redis, monkeypatch)
    sent = await mesh.stream().SendMessage(
        pb.SendMessageRequest(room_id=room, content="Hello?", client_message_id="c1"),
        metadata=mesh.md("fay"),
    )
    # Redis stays away past the reply's patience: the turn ends FAILED in the history,
    # rather than leave the message unanswered with its resend a duplicate.
    reply = await _stored_reply(mesh, "fay", room)
    assert reply.stream_id == sent.stream_id
    assert reply.status == rooms_pb.MESSAGE_STATUS_FAILED and reply.content == ""


async def test_a_reply_cut_by_a_redis_outage_before_any_text_is_stored_interrupted(
    make_mesh: MeshFactory, own_redis: OwnRedis
) -> None:
    provider = HeldProvider()
    mesh = await make_mesh(provider, bus={"redis_url": own_redis.url, "redis_prefix": "t:"})
    room = await mesh.room("gil")
    conv = await converse(mesh, "gil", room)
    await conv.send(message("Tell me a story", "c1"))
    started = (await conv.until_kind("stream_started"))[-1].stream_started
    await provider.held.wait()
    await own_redis.stop()  # Redis goes away before the reply's first words
    provider.go.set()
    assert await asyncio.wait_for(_status_of(conv), 20) == grpc.StatusCode.UNAVAILABLE
    # The turn ended, and the history says so: an empty INTERRUPTED reply.
    reply = await _stored_reply(mesh, "gil", room)
    assert reply.stream_id == started.stream_id
    assert reply.status == rooms_pb.MESSAGE_STATUS_INTERRUPTED and reply.text == ""
    await own_redis.start()

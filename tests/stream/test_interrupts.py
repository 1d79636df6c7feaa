"""Interrupts, barge-in, played_chars and the reply cap, against a real OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb

from services.common.bus import ControlSubscription, InProcessBus
from services.markers import strip_markers
from services.stream.llm import build_llm
from tests.llm.openai_server import OpenAICompatServer, Script
from tests.stream.conftest import converse, kinds, message

SLOW = Script(
    deltas=["[emotion:happy] Hello", " there. ", "[gesture:wave] How", " are", " you"]
    + [f" word{i}" for i in range(60)],
    delay_s=0.05,
)


def openai_llm(server: OpenAICompatServer, **kw):
    return build_llm(
        "openai",
        base_url=server.base_url,
        api_key="sk-test",
        model="test-model",
        first_delta_timeout_s=kw.pop("first", 5.0),
        idle_timeout_s=kw.pop("idle", 5.0),
        **kw,
    )


def interrupt(stream_id: str = "", played: int = 0) -> pb.ConverseRequest:
    return pb.ConverseRequest(interrupt=pb.Interrupt(stream_id=stream_id, played_chars=played))


async def test_interrupt_stops_generation_and_closes_the_provider_stream(
    make_mesh, openai_server: OpenAICompatServer, bus_backend
) -> None:
    openai_server.script = SLOW
    mesh = await make_mesh(provider=openai_llm(openai_server), bus=bus_backend)
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hi", "c1"))
    started = (await conv.until_kind("stream_started"))[-1].stream_started
    await conv.until_kind("stream_chunk")
    await conv.send(interrupt(started.stream_id))
    events = await conv.until_kind("stream_ended")
    ended = events[-1].stream_ended
    assert ended.reason == pb.STREAM_END_REASON_INTERRUPTED

    request = await openai_server.request(0)
    await request.wait_done()
    assert request.disconnected and not request.completed
    assert request.deltas_written < len(SLOW.deltas)

    delivered = [e.stream_chunk for e in conv.seen if e.HasField("stream_chunk")]
    stored = await mesh.messages("alice", room)
    agent = stored[-1]
    assert agent.sender_type == rooms_pb.SENDER_TYPE_AGENT
    assert agent.status == rooms_pb.MESSAGE_STATUS_INTERRUPTED
    assert agent.message_id == ended.agent_message_id
    assert agent.content == "".join(c.raw for c in delivered)
    assert agent.text == "".join(c.text for c in delivered)
    assert ended.total_chunks == len(delivered)


async def test_played_chars_cut_the_stored_reply_and_the_next_turns_history(
    make_mesh, openai_server: OpenAICompatServer
) -> None:
    openai_server.script = SLOW
    mesh = await make_mesh(provider=openai_llm(openai_server))
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hi", "c1"))
    await conv.until(lambda e: e.HasField("stream_chunk") and "you" in e.stream_chunk.text)
    heard = len("Hello there. Ho")
    await conv.send(interrupt(played=heard))
    ended = (await conv.until_kind("stream_ended"))[-1].stream_ended
    assert ended.reason == pb.STREAM_END_REASON_INTERRUPTED
    agent = (await mesh.messages("alice", room))[-1]
    assert agent.text == "Hello there. Ho"
    # The marker before "How" stays whole; nothing after the cut is kept.
    assert agent.content == "[emotion:happy] Hello there. [gesture:wave] Ho"
    assert strip_markers(agent.content) == agent.text

    openai_server.script = Script(deltas=["[emotion:calm] Sure."])
    await conv.send(message("Go on", "c2"))
    await conv.until_kind("stream_ended")
    history = (await openai_server.request(1)).messages
    assert history[-1] == {"role": "user", "content": "Go on"}
    assert {"role": "assistant", "content": agent.content} in history


async def test_a_new_message_while_streaming_barges_in(
    make_mesh, openai_server: OpenAICompatServer, bus_backend
) -> None:
    openai_server.push(SLOW, Script(deltas=["[emotion:happy] Okay, ", "new topic!"]))
    mesh = await make_mesh(provider=openai_llm(openai_server), bus=bus_backend)
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Tell me everything", "c1"))
    first = (await conv.until_kind("stream_started"))[-1].stream_started
    await conv.until_kind("stream_chunk")
    await conv.send(message("Actually, something else", "c2"))
    await conv.until(
        lambda e: e.HasField("stream_ended") and e.stream_ended.stream_id != first.stream_id
    )
    room_events = [e for e in conv.seen if e.event_id]
    ends = [e for e in room_events if e.HasField("stream_ended")]
    starts = [e for e in room_events if e.HasField("stream_started")]
    assert [e.stream_ended.reason for e in ends] == [
        pb.STREAM_END_REASON_INTERRUPTED,
        pb.STREAM_END_REASON_COMPLETED,
    ]
    assert ends[0].stream_ended.stream_id == first.stream_id
    # The interrupted reply ends before the new one starts.
    assert ends[0].event_id < starts[1].event_id
    assert [e.event_id for e in room_events] == sorted(e.event_id for e in room_events)
    request = await openai_server.request(0)
    await request.wait_done()
    assert request.disconnected and request.deltas_written < len(SLOW.deltas)
    stored = await mesh.messages("alice", room)
    statuses = [(m.sender_type, m.status) for m in stored]
    assert (rooms_pb.SENDER_TYPE_AGENT, rooms_pb.MESSAGE_STATUS_INTERRUPTED) in statuses
    assert (rooms_pb.SENDER_TYPE_AGENT, rooms_pb.MESSAGE_STATUS_COMPLETE) in statuses
    assert sum(m.sender_type == rooms_pb.SENDER_TYPE_HUMAN for m in stored) == 2


async def test_interrupt_rpc(make_mesh, openai_server: OpenAICompatServer) -> None:
    openai_server.script = SLOW
    mesh = await make_mesh(provider=openai_llm(openai_server))
    room = await mesh.room("alice")
    stub = mesh.stream()
    conv = await converse(mesh, "alice", room)
    sent = await stub.SendMessage(
        pb.SendMessageRequest(room_id=room, content="Hi", client_message_id="w1"),
        metadata=mesh.md("alice"),
    )
    await conv.until_kind("stream_chunk")
    other = await stub.Interrupt(
        pb.InterruptRequest(room_id=room, stream_id="not-this-one"), metadata=mesh.md("alice")
    )
    assert not other.interrupted
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Interrupt(pb.InterruptRequest(room_id=room), metadata=mesh.md("bob"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    resp = await stub.Interrupt(
        pb.InterruptRequest(room_id=room, stream_id=sent.stream_id), metadata=mesh.md("alice")
    )
    assert resp.interrupted
    ended = (await conv.until_kind("stream_ended"))[-1].stream_ended
    assert ended.stream_id == sent.stream_id
    assert ended.reason == pb.STREAM_END_REASON_INTERRUPTED
    again = await stub.Interrupt(
        pb.InterruptRequest(room_id=room, stream_id=sent.stream_id), metadata=mesh.md("alice")
    )
    assert not again.interrupted


async def test_a_reply_is_capped_at_four_thousand_characters(
    make_mesh, openai_server: OpenAICompatServer
) -> None:
    # The cap is reached after about 35 deltas; the provider could write over 100 more.
    script = Script(deltas=["[emotion:happy] " + "blah " * 20] * 150, delay_s=0.005)
    openai_server.script = script
    mesh = await make_mesh(provider=openai_llm(openai_server))
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Talk a lot", "c1"))
    ended = (await conv.until_kind("stream_ended"))[-1].stream_ended
    assert ended.reason == pb.STREAM_END_REASON_COMPLETED
    agent = (await mesh.messages("alice", room))[-1]
    assert agent.status == rooms_pb.MESSAGE_STATUS_COMPLETE
    assert 3900 < len(agent.content) <= 4000
    assert "[" not in agent.text
    request = await openai_server.request(0)
    await request.wait_done()
    assert request.deltas_written < len(script.deltas) and not request.completed


async def test_converse_kinds_of_an_interrupted_reply(
    make_mesh, openai_server: OpenAICompatServer
) -> None:
    openai_server.script = SLOW
    mesh = await make_mesh(provider=openai_llm(openai_server))
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hi", "c1"))
    await conv.until_kind("stream_chunk")
    await conv.send(interrupt())
    events = await conv.until_kind("stream_ended")
    assert "stream_error" not in kinds(events)


class GatedBus(InProcessBus):
    """Holds every reply before it starts (it subscribes to the room's control channel
    first) until `go` is set; `sent` is set when a control message is sent."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.go = asyncio.Event()
        self.sent = asyncio.Event()

    @contextlib.asynccontextmanager
    async def control(self, room: str) -> AsyncIterator[ControlSubscription]:
        await self.go.wait()
        async with super().control(room) as sub:
            yield sub

    async def send_control(self, room: str, data: bytes) -> None:
        await super().send_control(room, data)
        self.sent.set()


@pytest.fixture
def gated_bus(monkeypatch: pytest.MonkeyPatch) -> GatedBus:
    bus = GatedBus()
    monkeypatch.setattr("services.stream.app.open_bus", lambda *a, **kw: bus)
    return bus


async def test_an_interrupt_right_after_send_message_stops_the_reply_before_it_starts(
    make_mesh, openai_server: OpenAICompatServer, gated_bus: GatedBus
) -> None:
    openai_server.script = Script(deltas=["[emotion:happy] Sure thing."])
    mesh = await make_mesh(provider=openai_llm(openai_server))
    room = await mesh.room("alice")
    stub = mesh.stream()
    sub = stub.Subscribe(pb.SubscribeRequest(room_id=room), metadata=mesh.md("alice"))
    assert (await sub.read()).event.HasField("joined")
    sent = await stub.SendMessage(
        pb.SendMessageRequest(room_id=room, content="Hi", client_message_id="w1"),
        metadata=mesh.md("alice"),
    )
    resp = await stub.Interrupt(
        pb.InterruptRequest(room_id=room, stream_id=sent.stream_id), metadata=mesh.md("alice")
    )
    assert resp.interrupted
    gated_bus.go.set()
    events = []
    while not events or not events[-1].HasField("stream_ended"):
        events.append((await sub.read()).event)
    assert kinds(events) == ["stream_started", "stream_ended"]
    ended = events[-1].stream_ended
    assert ended.stream_id == sent.stream_id
    assert ended.reason == pb.STREAM_END_REASON_INTERRUPTED and ended.total_chunks == 0
    assert not openai_server.requests, "the provider is not even asked"

    # The room goes on normally.
    await stub.SendMessage(
        pb.SendMessageRequest(room_id=room, content="Hi again", client_message_id="w2"),
        metadata=mesh.md("alice"),
    )
    events = []
    while not events or not events[-1].HasField("stream_ended"):
        events.append((await sub.read()).event)
    assert events[-1].stream_ended.reason == pb.STREAM_END_REASON_COMPLETED
    sub.cancel()


async def test_an_interrupt_without_stream_id_stops_a_reply_not_started_yet(
    make_mesh, openai_server: OpenAICompatServer, gated_bus: GatedBus
) -> None:
    openai_server.script = Script(deltas=["[emotion:happy] Sure thing."])
    mesh = await make_mesh(provider=openai_llm(openai_server))
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hi", "c1"))
    assert (await conv.next()).HasField("message_accepted")
    await conv.send(interrupt())
    await gated_bus.sent.wait()
    gated_bus.go.set()
    events = await conv.until_kind("stream_ended")
    assert kinds(events) == ["stream_started", "stream_ended"]
    assert events[-1].stream_ended.reason == pb.STREAM_END_REASON_INTERRUPTED
    assert not openai_server.requests

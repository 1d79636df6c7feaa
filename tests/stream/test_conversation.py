"""Converse end to end with the real rooms and avatar servers and the persona provider."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb
from arconv.stream.v1 import stream_service_pb2_grpc as pb_grpc
from google.rpc import code_pb2

from services.common.status import status_details
from services.common.vocabulary import EMOTIONS, GESTURES, POSES, TONES
from services.markers import parse_markers
from services.stream.prompt import MARKER_INSTRUCTIONS
from tests.llm.openai_server import OpenAICompatServer, Script
from tests.stream.conftest import converse, join, kinds, message, reply_text
from tests.stream.test_interrupts import openai_llm


async def test_a_message_is_stored_acknowledged_and_answered(make_mesh, bus_backend) -> None:
    mesh = await make_mesh(bus=bus_backend)
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hello there!", "c1"))
    events = await conv.until_kind("stream_ended")
    assert kinds(events)[:2] == ["message_accepted", "stream_started"]
    accepted, started, ended = events[0], events[1], events[-1]
    assert accepted.event_id == 0 and accepted.message_accepted.client_message_id == "c1"
    assert not accepted.message_accepted.duplicate
    assert started.stream_started.message_id == accepted.message_accepted.message_id
    assert started.stream_started.agent_id == "nova"
    stream_id = started.stream_started.stream_id

    room_events = events[1:]
    ids = [e.event_id for e in room_events]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "event ids are gap-free"
    chunks = [e.stream_chunk for e in room_events if e.HasField("stream_chunk")]
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    raw = "".join(c.raw for c in chunks)
    text = "".join(c.text for c in chunks)
    assert "[" not in text and text == parse_markers(raw).text
    assert any(c.markers for c in chunks)
    assert "Nova" in text  # the persona reached the LLM

    cues = [e.speech_cue for e in room_events if e.HasField("speech_cue")]
    assert "".join(c.text for c in cues) == text, "cues cover the text exactly once, in order"
    assert [c.text_offset for c in cues] == sorted(c.text_offset for c in cues)
    assert all(c.stream_id == stream_id and c.visemes for c in cues)
    assert cues[0].visemes[0].name == "sil" and cues[0].visemes[0].viseme == 1
    # A cue comes right after the chunk that completes its sentence.
    for i, e in enumerate(room_events):
        if e.HasField("speech_cue"):
            before = room_events[i - 1]
            assert before.HasField("stream_chunk") or before.HasField("speech_cue")

    assert ended.stream_ended.reason == pb.STREAM_END_REASON_COMPLETED
    assert ended.stream_ended.total_chunks == len(chunks)
    stored = await mesh.messages("alice", room)
    assert [m.sender_type for m in stored] == [
        rooms_pb.SENDER_TYPE_HUMAN,
        rooms_pb.SENDER_TYPE_AGENT,
    ]
    human, agent = stored
    assert human.content == "Hello there!"
    assert human.message_id == accepted.message_accepted.message_id
    assert agent.message_id == ended.stream_ended.agent_message_id
    assert agent.content == raw and agent.text == text
    assert agent.stream_id == stream_id and agent.status == rooms_pb.MESSAGE_STATUS_COMPLETE
    await conv.call.done_writing()
    assert await conv.call.code() == grpc.StatusCode.OK


async def test_tone_sets_rate_and_pitch(make_mesh) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("hi", "c1"))
    events = await conv.until_kind("stream_ended")
    cues = [e.speech_cue for e in events if e.HasField("speech_cue")]
    assert cues
    for c in cues:
        assert c.tone and c.rate > 0 and c.pitch > 0
        if c.tone == "neutral":
            assert c.rate == pytest.approx(1.0)
    assert len({(c.tone, round(c.rate, 3)) for c in cues}) >= 1


async def test_resent_message_is_acknowledged_again_and_not_answered_twice(make_mesh) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("How are you?", "same-id"))
    first = await conv.until_kind("stream_ended")
    await conv.send(message("How are you?", "same-id"))
    again = await conv.next()
    assert again.HasField("message_accepted") and again.message_accepted.duplicate
    assert again.message_accepted.message_id == first[0].message_accepted.message_id
    # Nothing else comes for it: the next thing is the reply to a new message.
    await conv.send(message("Thanks!", "other-id"))
    nxt = await conv.until_kind("stream_ended")
    assert kinds(nxt)[:2] == ["message_accepted", "stream_started"]
    stored = await mesh.messages("alice", room)
    assert len(stored) == 4  # two human messages, two replies

    resp = await mesh.stream().SendMessage(
        pb.SendMessageRequest(room_id=room, content="x", client_message_id="same-id"),
        metadata=mesh.md("alice"),
    )
    assert resp.duplicate and resp.stream_id == ""
    assert resp.message_id == first[0].message_accepted.message_id


@pytest.mark.parametrize(
    ("content", "cid", "field"),
    [
        ("", "c1", "content"),
        ("   ", "c1", "content"),
        ("x" * 4001, "c1", "content"),
        ("nul\x00byte", "c1", "content"),
        ("bell\x07", "c1", "content"),
        ("hi", "", "client_message_id"),
        ("hi", "x" * 129, "client_message_id"),
    ],
)
async def test_invalid_message_is_a_stream_error_and_the_stream_stays_open(
    make_mesh, content: str, cid: str, field: str
) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message(content, cid))
    err = await conv.next()
    assert err.HasField("stream_error") and err.event_id == 0
    assert err.stream_error.code == code_pb2.INVALID_ARGUMENT
    assert field in err.stream_error.message
    assert await mesh.messages("alice", room) == []
    await conv.send(message("Hello!", "ok"))
    assert kinds(await conv.until_kind("stream_ended"))[0] == "message_accepted"

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.stream().SendMessage(
            pb.SendMessageRequest(room_id=room, content=content, client_message_id=cid),
            metadata=mesh.md("alice"),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = [
        v.field
        for d in status_details(info.value)
        if hasattr(d, "field_violations")
        for v in d.field_violations
    ]
    assert field in violations


async def test_a_four_thousand_character_message_is_accepted(make_mesh) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    resp = await mesh.stream().SendMessage(
        pb.SendMessageRequest(room_id=room, content="a" * 4000, client_message_id="big"),
        metadata=mesh.md("alice"),
    )
    assert resp.message_id and resp.stream_id and not resp.duplicate


async def test_join_errors(make_mesh) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    stub = mesh.stream()

    async def first_error(user: str, requests: list[pb.ConverseRequest]) -> Any:
        call = stub.Converse(iter(requests), metadata=mesh.md(user))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        return info.value

    err = await first_error("bob", [join(room)])
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await first_error("alice", [join("00000000-0000-0000-0000-000000000000")])
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await first_error("alice", [message("hi", "c")])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await first_error("alice", [])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await first_error("alice", [join("")])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await first_error("alice", [join(room, after=999)])
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SendMessage(
            pb.SendMessageRequest(room_id=room, content="hi", client_message_id="c"),
            metadata=mesh.md("bob"),
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    await mesh.rooms.EndRoom(rooms_pb.EndRoomRequest(room_id=room), metadata=mesh.md("alice"))
    err = await first_error("alice", [join(room)])
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SendMessage(
            pb.SendMessageRequest(room_id=room, content="hi", client_message_id="c"),
            metadata=mesh.md("alice"),
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_unauthenticated_and_internal(make_mesh) -> None:
    mesh = await make_mesh()
    stub = mesh.stream()
    internal = pb_grpc.StreamInternalServiceStub(mesh.ch(mesh.stream_port))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SendMessage(pb.SendMessageRequest(room_id="r", content="hi"))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await internal.NotifyRoomState(
            pb.NotifyRoomStateRequest(room_id="r", status=rooms_pb.ROOM_STATUS_PAUSED),
            metadata=mesh.md("alice"),
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await internal.NotifyRoomState(
            pb.NotifyRoomStateRequest(room_id="r"), metadata=mesh.service_md("alice")
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_history_reaches_the_llm_as_turns(make_mesh) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hello there!", "c1"))
    first = await conv.until_kind("stream_ended")
    await conv.send(message("Tell me a story?", "c2"))
    second = await conv.until_kind("stream_ended")
    # The persona never repeats its previous template, which it can only know from history.
    assert reply_text(first) != reply_text(second)


@pytest.mark.parametrize("history", [3, 0])
async def test_the_llm_gets_the_persona_the_marker_vocabulary_and_recent_history(
    make_mesh, openai_server: OpenAICompatServer, history: int
) -> None:
    openai_server.script = Script(deltas=["[emotion:happy] Okay."])
    mesh = await make_mesh(provider=openai_llm(openai_server), stream_history_messages=history)
    await mesh.add_agent("sage", prompt="You are a calm tutor.", model="sage-model")
    room = await mesh.room("alice", "sage")
    conv = await converse(mesh, "alice", room)
    for i in range(3):
        await conv.send(message(f"message {i}", f"c{i}"))
        await conv.until_kind("stream_ended")

    request = await openai_server.request(2)
    assert request.model == "sage-model", "the agent's model, not the provider default"
    system, *turns = request.messages
    assert system["role"] == "system"
    assert system["content"].startswith("Your name is Sage.\nYou are a calm tutor.\n\n")
    assert MARKER_INSTRUCTIONS in system["content"]
    for value in (*EMOTIONS, *GESTURES, *TONES, *POSES):
        assert value in system["content"]
    reply = {"role": "assistant", "content": "[emotion:happy] Okay."}
    if history:
        # The newest `history` messages of the room, the one answered last.
        assert turns == [
            {"role": "user", "content": "message 1"},
            reply,
            {"role": "user", "content": "message 2"},
        ]
    else:
        assert turns == [{"role": "user", "content": "message 2"}]


async def test_stream_cues_match_compute_visemes(make_mesh) -> None:
    mesh = await make_mesh()
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Tell me a story, please", "c1"))
    events = await conv.until_kind("stream_ended")
    cues = [e.speech_cue for e in events if e.HasField("speech_cue")]
    assert len(cues) >= 3
    avatar = avatar_grpc.AvatarServiceStub(mesh.ch(mesh.avatar_port))
    for cue in cues:
        resp = await avatar.ComputeVisemes(
            avatar_pb.ComputeVisemesRequest(text=cue.text, tone=cue.tone),
            metadata=mesh.md("alice"),
        )
        same = resp.cue
        assert same.text == cue.text.strip()
        assert (same.tone, same.rate, same.pitch) == (cue.tone, cue.rate, cue.pitch)
        assert list(same.visemes) == list(cue.visemes)
        assert same.duration_ms == cue.duration_ms

"""Provider failures end the reply cleanly: stream_error, stream_ended FAILED, nothing lost."""

from __future__ import annotations

import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb
from google.rpc import code_pb2

from services.stream.app import StreamSettings
from services.stream.llm import build_llm
from tests.llm.openai_server import OpenAICompatServer, Script
from tests.stream.conftest import converse, kinds, message, reply_text
from tests.stream.test_interrupts import openai_llm


@pytest.mark.parametrize(
    ("script", "code", "retryable"),
    [
        (Script(status=503), code_pb2.UNAVAILABLE, True),
        (Script(status=429), code_pb2.UNAVAILABLE, True),
        (Script(status=401), code_pb2.INTERNAL, False),
        (Script(hang=True), code_pb2.DEADLINE_EXCEEDED, True),
        (Script(malformed_after=0), code_pb2.UNAVAILABLE, True),
    ],
)
async def test_failure_before_any_text(
    make_mesh, openai_server: OpenAICompatServer, script: Script, code: int, retryable: bool
) -> None:
    openai_server.script = script
    mesh = await make_mesh(provider=openai_llm(openai_server, first=0.5, idle=0.5))
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hello", "c1"))
    events = await conv.until_kind("stream_ended")
    assert kinds(events) == ["message_accepted", "stream_started", "stream_error", "stream_ended"]
    error, ended = events[2].stream_error, events[3].stream_ended
    assert error.code == code and error.retryable is retryable
    assert error.stream_id == ended.stream_id and events[2].event_id > 0
    assert ended.reason == pb.STREAM_END_REASON_FAILED and ended.agent_message_id == ""
    stored = await mesh.messages("alice", room)
    assert [m.content for m in stored] == ["Hello"], "the user's message is never lost"
    # The room still works afterwards.
    openai_server.script = Script(deltas=["[emotion:happy] Back again."])
    await conv.send(message("Retry", "c2"))
    ok = await conv.until_kind("stream_ended")
    assert ok[-1].stream_ended.reason == pb.STREAM_END_REASON_COMPLETED


async def test_stall_mid_reply_stores_the_partial_reply_as_failed(
    make_mesh, openai_server: OpenAICompatServer, bus_backend
) -> None:
    openai_server.script = Script(
        deltas=["[emotion:happy] Hello there. ", "And then"], stall_after=2
    )
    mesh = await make_mesh(provider=openai_llm(openai_server, idle=0.3), bus=bus_backend)
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hello", "c1"))
    events = await conv.until_kind("stream_ended")
    assert "stream_error" in kinds(events)
    error = next(e.stream_error for e in events if e.HasField("stream_error"))
    assert error.code == code_pb2.DEADLINE_EXCEEDED and error.retryable
    ended = events[-1].stream_ended
    assert ended.reason == pb.STREAM_END_REASON_FAILED
    agent = (await mesh.messages("alice", room))[-1]
    assert agent.message_id == ended.agent_message_id
    assert agent.status == rooms_pb.MESSAGE_STATUS_FAILED
    assert agent.text == reply_text(events) == "Hello there. And then"
    cues = [e.speech_cue.text for e in events if e.HasField("speech_cue")]
    assert "".join(cues) == agent.text
    request = await openai_server.request(0)
    await request.wait_done()
    assert request.disconnected


async def test_fallback_is_tried_first(make_mesh, openai_server: OpenAICompatServer) -> None:
    openai_server.script = Script(status=503)
    llm = build_llm(
        "openai",
        fallback="persona",
        base_url=openai_server.base_url,
        api_key="sk-test",
        model="test-model",
        pacing_ms=0,
        first_delta_timeout_s=2,
        idle_timeout_s=2,
    )
    mesh = await make_mesh(provider=llm)
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hello there!", "c1"))
    events = await conv.until_kind("stream_ended")
    assert "stream_error" not in kinds(events)
    assert events[-1].stream_ended.reason == pb.STREAM_END_REASON_COMPLETED
    assert "Nova" in reply_text(events)
    assert len(openai_server.requests) == 1


def test_settings_validate_the_llm_configuration(tmp_path) -> None:
    with pytest.raises(ValueError, match="ARCONV_LLM_MODEL"):
        StreamSettings(llm_provider="openai", llm_base_url="http://x/v1")
    with pytest.raises(ValueError, match="API_KEY"):
        StreamSettings(llm_provider="openai", llm_model="m")
    with pytest.raises(ValueError, match="differ"):
        StreamSettings(llm_fallback="persona")
    with pytest.raises(ValueError):
        StreamSettings(llm_provider="nope")
    ok = StreamSettings(
        llm_provider="openai", llm_model="m", llm_base_url="http://x/v1", llm_fallback="persona"
    )
    assert ok.build_llm().name == "openai+persona"
    assert StreamSettings().build_llm().name == "persona"


async def test_unsafe_characters_from_the_provider_are_dropped(
    make_mesh, openai_server: OpenAICompatServer
) -> None:
    # A JSON "\ud800" escape decodes to a lone surrogate, which no protobuf encoder accepts;
    # a NUL is refused by PostgreSQL. Neither may end the reply half-way.
    openai_server.script = Script(
        deltas=["[emotion:happy] Hel\ud800lo", " the\x00re.", " Fine\x07 [gesture:wave] day."]
    )
    mesh = await make_mesh(provider=openai_llm(openai_server))
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hello", "c1"))
    events = await conv.until_kind("stream_ended")
    assert "stream_error" not in kinds(events)
    ended = events[-1].stream_ended
    assert ended.reason == pb.STREAM_END_REASON_COMPLETED
    assert reply_text(events) == "Hello there. Fine day."
    agent = (await mesh.messages("alice", room))[-1]
    assert agent.message_id == ended.agent_message_id
    assert agent.content == "[emotion:happy] Hello there. Fine [gesture:wave] day."
    cues = [e.speech_cue.text for e in events if e.HasField("speech_cue")]
    assert "".join(cues) == agent.text


class BrokenProvider:
    """Says one sentence, then fails with an error outside the provider error tree."""

    name = "broken"

    async def stream(self, messages, *, model=None, max_tokens=None):
        yield "[emotion:happy] Hello there. "
        raise RuntimeError("not a ProviderError")

    async def complete(self, messages, *, model=None, json_object=False) -> str:
        raise RuntimeError("not used")

    async def aclose(self) -> None:
        return None


async def test_an_unexpected_error_still_ends_and_stores_the_reply(make_mesh) -> None:
    mesh = await make_mesh(provider=BrokenProvider())
    room = await mesh.room("alice")
    conv = await converse(mesh, "alice", room)
    await conv.send(message("Hello", "c1"))
    events = await conv.until_kind("stream_ended")
    error = next(e.stream_error for e in events if e.HasField("stream_error"))
    assert error.code == code_pb2.INTERNAL and error.retryable
    ended = events[-1].stream_ended
    assert ended.reason == pb.STREAM_END_REASON_FAILED
    agent = (await mesh.messages("alice", room))[-1]
    assert agent.message_id == ended.agent_message_id
    assert agent.status == rooms_pb.MESSAGE_STATUS_FAILED and agent.text == "Hello there. "

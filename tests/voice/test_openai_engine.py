"""The `openai` engine against a local OpenAI-compatible speech server: streamed audio with
fitted marks, upstream faults, failover to espeak and the breaker, through the real service."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services.voice.engines.base import Audio, EngineFailure, Mouth, Prosody, Word
from services.voice.engines.espeak import EspeakEngine
from services.voice.engines.openai_engine import OpenAIEngine
from tests.voice.conftest import Voice, words_of
from tests.voice.speech_server import MS_PER_CHAR, Mode, SpeechServer

KEY = "sk-server-key"


@pytest.fixture
async def upstream() -> AsyncIterator[SpeechServer]:
    async with SpeechServer() as server:
        yield server


def engine(server: SpeechServer) -> OpenAIEngine:
    return OpenAIEngine(base_url=server.base_url, api_key=KEY, model="tts-test", timeout_s=5)


async def test_streams_upstream_pcm_with_fitted_marks(upstream: SpeechServer) -> None:
    e = engine(upstream)
    text = "Hello there, my friend."
    pieces = [p async for p in e.synthesize(text, voice="nova", prosody=Prosody(rate=1.2))]
    await e.aclose()
    audio = b"".join(p.pcm for p in pieces if isinstance(p, Audio))
    assert all(len(p.pcm) % 2 == 0 for p in pieces if isinstance(p, Audio))
    assert len(audio) == len(text) * MS_PER_CHAR * 24 * 2
    duration = len(audio) / 2 / 24
    seen = upstream.requests[0]
    assert seen.api_key == KEY
    assert seen.body["model"] == "tts-test" and seen.body["voice"] == "nova"
    assert seen.body["response_format"] == "pcm" and seen.body["speed"] == pytest.approx(1.2)
    mouths = [p for p in pieces if isinstance(p, Mouth)]
    words = [p for p in pieces if isinstance(p, Word)]
    assert mouths[-1].viseme == "sil" and mouths[-1].time_ms <= duration
    assert all(a.time_ms < b.time_ms for a, b in itertools.pairwise(mouths))
    assert [text[w.offset : w.offset + w.length] for w in words] == words_of(text)
    assert all(w.end_ms <= duration for w in words)


@pytest.mark.parametrize("status", [401, 429, 500, 503])
async def test_upstream_errors_are_engine_failures(upstream: SpeechServer, status: int) -> None:
    upstream.mode = Mode(status=status)
    e = engine(upstream)
    with pytest.raises(EngineFailure, match=f"answered {status}"):
        async for _ in e.synthesize("Hi.", voice="nova", prosody=Prosody()):
            pass
    await e.aclose()


async def openai_voice(voice_factory: Any, server: SpeechServer, **over: Any) -> Voice:
    v: Voice = await voice_factory(
        engines=[engine(server), EspeakEngine()],
        voice_first_audio_timeout_s=over.pop("first", 2.0),
        voice_idle_timeout_s=over.pop("idle", 2.0),
        voice_breaker_threshold=2,
        **over,
    )
    return v


async def test_the_service_speaks_through_openai_with_its_voice_mapping(
    voice_factory: Any, upstream: SpeechServer
) -> None:
    upstream.mode = Mode(chunk_delay_s=0.01)  # slow, but in time
    v = await openai_voice(voice_factory, upstream)
    tok = await v.token()
    text = "First sentence here. And a second one."
    out = await v.speak(tok.token, text, visemes=True)
    assert out.header is not None and out.summary is not None
    assert (out.header.engine, out.header.engine_voice, out.header.sample_rate) == (
        "openai",
        "nova",
        24000,
    )
    assert [r.body["input"] for r in upstream.requests] == [
        "First sentence here. ",
        "And a second one.",
    ]
    rate, _, pcm = out.wav()
    assert rate == 24000 and len(pcm) // 2 == out.summary.samples
    assert out.summary.duration_ms == len(text) * MS_PER_CHAR
    assert [w.text for w in out.words] == words_of(text)
    assert all(w.end_ms <= out.summary.duration_ms for w in out.words)
    assert out.visemes[-1].time_ms <= out.summary.duration_ms


async def test_failover_to_espeak_then_the_breaker_opens(
    voice_factory: Any, upstream: SpeechServer
) -> None:
    upstream.mode = Mode(status=503)
    v = await openai_voice(voice_factory, upstream)
    tok = await v.token()
    for _ in range(2):
        out = await v.speak(tok.token, "Still heard.")
        assert out.summary is not None and out.summary.engine == "espeak"
        assert list(out.summary.failovers) == ["openai: upstream answered 503"]
    out = await v.speak(tok.token, "Still heard.")
    assert out.summary is not None
    assert list(out.summary.failovers) == ["openai: skipped, circuit open"]
    assert len(upstream.requests) == 2


async def test_a_stalled_upstream_before_audio_fails_over(
    voice_factory: Any, upstream: SpeechServer
) -> None:
    upstream.mode = Mode(stall_after=0)
    v = await openai_voice(voice_factory, upstream, first=0.5)
    tok = await v.token()
    out = await v.speak(tok.token, "Hello.")
    assert out.summary is not None and out.summary.engine == "espeak"
    assert list(out.summary.failovers) == ["openai: no audio in time"]
    await asyncio.wait_for(upstream.requests[0].disconnected.wait(), 5)


async def test_a_stall_after_audio_ends_the_stream_unavailable_and_meters_what_was_sent(
    voice_factory: Any, upstream: SpeechServer
) -> None:
    upstream.mode = Mode(stall_after=2)
    v = await openai_voice(voice_factory, upstream, idle=0.5)
    tok = await v.token()
    text = "One sentence. Then another that never comes."
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await v.speak(tok.token, text)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "stalled" in (err.value.details() or "")
    from tests.voice.test_synthesize import wait_for_quota

    await wait_for_quota(v.mesh, tok.token_id, len("One sentence. "))


def test_settings_need_the_upstream_for_openai() -> None:
    from services.voice.app import VoiceSettings, open_engines

    with pytest.raises(ValueError, match="ARCONV_TTS_BASE_URL"):
        VoiceSettings(voice_engines="openai,espeak")
    with pytest.raises(ValueError, match="ARCONV_VOICE_ENGINES"):
        VoiceSettings(voice_engines="espeak,nope")
    s = VoiceSettings(
        voice_engines="openai, espeak", tts_base_url="http://127.0.0.1:1/v1", tts_api_key="k"
    )
    assert [e.name for e in open_engines(s)] == ["openai", "espeak"]

"""Synthesize through the real token service: real audio and marks on one clock, metering."""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
from typing import Any

import grpc
import pytest
from arconv.token.v1 import token_service_pb2 as token_pb
from arconv.token.v1 import token_service_pb2_grpc as token_grpc
from arconv.voice.v1 import voice_service_pb2 as pb
from prometheus_client import REGISTRY

from tests.conftest import bearer
from tests.token.conftest import Mesh
from tests.voice.conftest import Voice, words_of

TEXT = "Hello there, my friend! The quick brown fox jumps over the lazy dog."


def rms(pcm: bytes) -> float:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


async def test_speaks_a_playable_wav_with_visemes_and_words_on_its_clock(voice: Voice) -> None:
    tok = await voice.token()
    out = await voice.speak(tok.token, TEXT, visemes=True)
    h, s = out.header, out.summary
    assert h is not None and s is not None
    assert (h.format, h.sample_rate, h.channels, h.bits_per_sample) == (
        pb.AUDIO_FORMAT_WAV,
        22050,
        1,
        16,
    )
    assert (h.engine, h.voice_id, h.engine_voice) == ("espeak", "nova-bright", "en-us+f3")
    rate, channels, pcm = out.wav()
    assert (rate, channels) == (22050, 1)
    duration_ms = len(pcm) / 2 * 1000 / rate
    assert abs(duration_ms - s.duration_ms) <= 1 and s.samples == len(pcm) // 2
    assert 2500 < duration_ms < 8000
    assert rms(pcm) > 500
    # Chunks are stamped on the audio's clock.
    sent = 0
    for c in out.chunks:
        assert abs(c.start_ms - sent * 1000 / rate) <= 1
        sent += (len(c.data) - (44 if c is out.chunks[0] else 0)) // 2
    # Visemes: strictly increasing, within the audio, ending with silence.
    times = [v.time_ms for v in out.visemes]
    assert times == sorted(set(times)) and times[-1] <= s.duration_ms
    assert out.visemes[-1].name == "sil" and {"PP", "aa", "FF"} <= {v.name for v in out.visemes}
    # Words: in order, covering the text, each inside the audio.
    assert [w.text for w in out.words] == words_of(TEXT)
    assert all(TEXT[w.char_offset : w.char_offset + len(w.text)] == w.text for w in out.words)
    assert all(a.start_ms <= b.start_ms for a, b in itertools.pairwise(out.words))
    assert all(w.start_ms <= w.end_ms <= s.duration_ms for w in out.words)
    assert (s.characters, s.engine, list(s.failovers)) == (len(TEXT), "espeak", [])
    assert await voice.mesh.counters("alice", tok.token_id) == (1, len(TEXT))


async def test_pcm_markers_stripped_and_tone_applied(voice: Voice) -> None:
    tok = await voice.token()
    raw = "[emotion:happy] Hello there. [tone:excited]This part is spoken faster and higher."
    out = await voice.speak(tok.token, raw, format=pb.AUDIO_FORMAT_PCM, tone="calm")
    assert out.header is not None and out.summary is not None
    assert out.header.text == "Hello there. This part is spoken faster and higher."
    assert (out.header.tone, round(out.header.rate, 2)) == ("calm", 0.9)
    assert out.audio[:4] != b"RIFF" and len(out.audio) // 2 == out.summary.samples
    assert [w.text for w in out.words] == words_of(out.header.text)
    assert not out.visemes  # not asked for
    # Metered: the characters spoken (markers are not), the reservation's rest given back.
    assert out.summary.characters == len(out.header.text)
    await wait_for_quota(voice.mesh, tok.token_id, len(out.header.text))


async def wait_for_quota(mesh: Mesh, token_id: str, expected: int) -> None:
    # The refund follows the end of the call on the server: nothing to await from here.
    async with asyncio.timeout(5):
        while (await mesh.counters("alice", token_id))[1] != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_client_that_goes_away_is_metered_for_what_was_produced(voice: Voice) -> None:
    tok = await voice.token()
    text = " ".join(f"This is sentence number {n} of a long story." for n in range(40))
    call = voice.stub.Synthesize(pb.SynthesizeRequest(text=text), metadata=bearer(tok.token))
    async for msg in call:
        if msg.WhichOneof("event") == "audio":
            break
    call.cancel()
    first_sentence = len("This is sentence number 0 of a long story. ")
    await wait_for_quota(voice.mesh, tok.token_id, first_sentence)
    # The quota stays where the refund put it.
    await asyncio.sleep(0.2)
    assert (await voice.mesh.counters("alice", tok.token_id)) == (1, first_sentence)


async def test_list_voices(voice: Voice) -> None:
    tok = await voice.token()
    resp = await voice.stub.ListVoices(pb.ListVoicesRequest(), metadata=bearer(tok.token))
    assert list(resp.engines) == ["espeak"]
    assert {"en-us", "fr-fr"} <= {v.voice_id for v in resp.voices if v.engine == "espeak"}
    nova = {m.voice_id: dict(m.engine_voices) for m in resp.mappings}["nova-bright"]
    assert nova["espeak"] == "en-us+f3"
    assert await voice.mesh.counters("alice", tok.token_id) == (0, 0)


@pytest.mark.parametrize("kv_backend", ["memory", "redis"], indirect=True)
async def test_revocation_on_one_token_replica_is_seen_through_another(
    voice_factory: Any, mesh: Mesh, kv_backend: str
) -> None:
    # On Redis, each replica has its own connection from its settings, as in production.
    own = kv_backend == "redis"
    one = await mesh.start_token(own_kv=own)
    other = await mesh.start_token(own_kv=own)
    v = await voice_factory(token_port=other.port)
    tok = await v.token()
    assert (await v.speak(tok.token, "Before.")).summary is not None
    stub = token_grpc.TokenServiceStub(mesh._ch(one.port))
    await stub.RevokeProviderToken(
        token_pb.RevokeProviderTokenRequest(token_id=tok.token_id), metadata=mesh.md("alice")
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await v.speak(tok.token, "After.")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (err.value.details() or "")


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_syntheses_characters_audio_and_first_audio(voice: Voice) -> None:
    before = {
        "ok": _sample("arconv_voice_syntheses_total", engine="espeak", outcome="ok"),
        "chars": _sample("arconv_voice_characters_total", engine="espeak"),
        "audio": _sample("arconv_voice_audio_seconds_total", engine="espeak"),
        "first": _sample("arconv_voice_first_audio_seconds_count", engine="espeak"),
    }
    tok = await voice.token()
    out = await voice.speak(tok.token, TEXT)
    assert out.summary is not None
    assert (
        _sample("arconv_voice_syntheses_total", engine="espeak", outcome="ok") == before["ok"] + 1
    )
    assert _sample("arconv_voice_characters_total", engine="espeak") == before["chars"] + len(TEXT)
    audio = _sample("arconv_voice_audio_seconds_total", engine="espeak") - before["audio"]
    assert abs(audio - out.summary.duration_ms / 1000) < 0.01
    assert _sample("arconv_voice_first_audio_seconds_count", engine="espeak") == before["first"] + 1

"""Failover across engines before the first audio, behind the shared circuit breaker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.voice.engines.base import Audio, EngineFailure, Piece, Prosody, VoiceInfo
from services.voice.engines.chain import ChainExhausted, EngineChain
from services.voice.engines.espeak import EspeakEngine


class Broken:
    """An upstream that fails (or stalls) before any audio."""

    sample_rate = 24000

    def __init__(self, name: str, *, stall: bool = False) -> None:
        self.name = name
        self.stall = stall
        self.calls = 0

    def default_voice(self) -> str:
        return "v"

    async def voices(self) -> list[VoiceInfo]:
        return []

    async def synthesize(self, text: str, *, voice: str, prosody: Prosody) -> AsyncIterator[Piece]:
        self.calls += 1
        if self.stall:
            await asyncio.sleep(3600)
        raise EngineFailure(self.name, "upstream said 503")
        yield Audio(b"")  # pragma: no cover

    async def aclose(self) -> None:
        return None


async def first_audio(chain: EngineChain) -> tuple[str, list[str]]:
    started = await chain.start("Hello.", voice_for=lambda e: e.default_voice(), prosody=Prosody())
    assert isinstance(started.head[-1], Audio) and started.head[-1].pcm
    await started.rest.aclose()  # type: ignore[attr-defined]
    return started.engine.name, started.failures


async def test_fails_over_then_the_breaker_skips_the_broken_engine() -> None:
    now = [0.0]
    broken = Broken("openai")
    chain = EngineChain(
        [broken, EspeakEngine()], breaker_threshold=2, breaker_open_s=30, clock=lambda: now[0]
    )
    for _ in range(2):
        name, failures = await first_audio(chain)
        assert name == "espeak" and failures == ["openai: upstream said 503"]
    assert chain.breakers["openai"].state == "open"
    name, failures = await first_audio(chain)
    assert failures == ["openai: skipped, circuit open"] and broken.calls == 2
    now[0] = 31.0  # half-open: one probe goes through, fails, and opens the circuit again
    await first_audio(chain)
    assert broken.calls == 3 and chain.breakers["openai"].state == "open"


async def test_a_stalled_engine_times_out_and_fails_over() -> None:
    chain = EngineChain([Broken("openai", stall=True), EspeakEngine()], first_audio_timeout_s=0.2)
    name, failures = await first_audio(chain)
    assert name == "espeak" and failures == ["openai: no audio in time"]


async def test_the_last_engine_is_tried_even_when_its_circuit_is_open() -> None:
    broken = Broken("openai")
    chain = EngineChain([broken], breaker_threshold=1)
    for _ in range(2):
        with pytest.raises(ChainExhausted, match="upstream said 503"):
            await first_audio(chain)
    assert broken.calls == 2

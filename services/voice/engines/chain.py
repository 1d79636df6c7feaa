"""Engines in the configured order, each behind a circuit breaker, with failover.

A synthesis fails over to the next engine only before its first audio: once a client has
heard a voice, another voice must not take over in the middle of a sentence. The last engine
of the chain is always tried, whatever its breaker says (as the avatar chain does for its
last resort), so a request is never refused only because every breaker is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from services.common.breaker import CircuitBreaker
from services.voice.engines.base import Audio, Engine, EngineFailure, Piece, Prosody

log = logging.getLogger("arconv.voice.engines")


class ChainExhausted(Exception):
    """Every engine failed before its first audio; the message lists why."""


@dataclass
class Started:
    """An engine that produced audio for the first segment: what it yielded so far (ending
    with the first audio) and the rest of that segment."""

    engine: Engine
    voice: str
    head: list[Piece]
    rest: AsyncIterator[Piece]
    failures: list[str] = field(default_factory=list)


class EngineChain:
    def __init__(
        self,
        engines: Sequence[Engine],
        *,
        breaker_threshold: int = 3,
        breaker_open_s: float = 60.0,
        first_audio_timeout_s: float = 10.0,
        idle_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not engines:
            raise ValueError("at least one engine is needed")
        self.engines = list(engines)
        self.by_name: Mapping[str, Engine] = {e.name: e for e in engines}
        self.breakers = {
            e.name: CircuitBreaker(threshold=breaker_threshold, open_s=breaker_open_s, clock=clock)
            for e in engines
        }
        self._first_timeout = first_audio_timeout_s
        self._idle_timeout = idle_timeout_s

    async def start(
        self, text: str, *, voice_for: Callable[[Engine], str], prosody: Prosody
    ) -> Started:
        """Starts the first segment on the first engine that produces audio."""
        failures: list[str] = []
        for n, engine in enumerate(self.engines):
            last = n == len(self.engines) - 1
            breaker = self.breakers[engine.name]
            if not last and not breaker.allow():
                failures.append(f"{engine.name}: skipped, circuit open")
                continue
            voice = voice_for(engine)
            stream = engine.synthesize(text, voice=voice, prosody=prosody)
            head: list[Piece] = []
            try:
                async with asyncio.timeout(self._first_timeout):
                    async for piece in stream:
                        head.append(piece)
                        if isinstance(piece, Audio):
                            break
            except asyncio.CancelledError:
                await _close(stream)
                raise
            except Exception as exc:  # any engine failure before audio means: fail over
                await _close(stream)
                reason = "no audio in time" if isinstance(exc, TimeoutError) else str(exc)
                failures.append(
                    reason if reason.startswith(engine.name) else f"{engine.name}: {reason}"
                )
                breaker.failure()
                log.warning(
                    "tts engine failed; failing over", extra={"fields": {"failure": failures[-1]}}
                )
                continue
            return Started(engine, voice, head, stream, failures)
        raise ChainExhausted("; ".join(failures))

    async def pieces(self, stream: AsyncIterator[Piece], engine: Engine) -> AsyncIterator[Piece]:
        """`stream`'s pieces, with the idle deadline; a failure is an EngineFailure."""
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle_timeout):
                        piece = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise EngineFailure(engine.name, "the audio stalled") from exc
                except EngineFailure:
                    raise
                except Exception as exc:
                    raise EngineFailure(engine.name, str(exc)) from exc
                yield piece
        finally:
            await _close(stream)

    def succeeded(self, engine: Engine) -> None:
        self.breakers[engine.name].success()

    def failed(self, engine: Engine) -> None:
        self.breakers[engine.name].failure()

    async def aclose(self) -> None:
        for engine in self.engines:
            await engine.aclose()


async def _close(stream: AsyncIterator[Piece]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()

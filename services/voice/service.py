"""Synthesize: verify and meter the token, speak sentence by sentence, keep one clock.

No gRPC here. The text's markers are removed; a tone marker changes the tone from the next
sentence on. Segments are spoken one at a time by the engine that produced the first audio
(failover happens only before it), each segment's marks shifted onto the audio's clock.
Characters are counted per segment as its audio goes out; at the end (or when the client
goes away) the reserved characters that were not synthesized go back to the user's quota.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from services.common.errors import InvalidArgument, Unavailable
from services.markers import MarkerType, parse_markers
from services.speech.prosody import prosody_for
from services.voice import metrics
from services.voice.domain import (
    MAX_SPEED,
    MIN_SPEED,
    Chunk,
    Event,
    Header,
    Summary,
    VisemeMark,
    VoiceMap,
    WordMark,
    wav_header,
)
from services.voice.engines.base import (
    SAMPLE_WIDTH,
    Audio,
    Engine,
    EngineFailure,
    Mouth,
    Piece,
    Prosody,
    VoiceInfo,
    Word,
)
from services.voice.engines.chain import ChainExhausted, EngineChain
from services.voice.segments import segments
from services.voice.tokens import Admission, TokenGate

log = logging.getLogger("arconv.voice")

FORMATS = ("wav", "pcm")


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    token: str
    text: str
    voice_id: str = ""
    format: str = "wav"
    tone: str = ""
    speed: float = 1.0
    visemes: bool = False


def validate(req: SynthesisRequest) -> None:
    violations: list[tuple[str, str]] = []
    if not req.text.strip():
        violations.append(("text", "required: the text to speak"))
    if req.format not in FORMATS:
        violations.append(("format", f"must be one of {', '.join(FORMATS)}"))
    if not MIN_SPEED <= req.speed <= MAX_SPEED:
        violations.append(("speed", f"must be between {MIN_SPEED} and {MAX_SPEED}"))
    if violations:
        raise InvalidArgument("; ".join(f"{f}: {d}" for f, d in violations), violations=violations)


@dataclass
class _Clock:
    """Samples sent so far, and characters whose audio started going out."""

    sample_rate: int
    samples: int = 0
    characters: int = 0

    def ms(self) -> float:
        return self.samples * 1000 / self.sample_rate


class VoiceService:
    def __init__(self, *, gate: TokenGate, chain: EngineChain, voices: VoiceMap) -> None:
        self._gate = gate
        self._chain = chain
        self._voices = voices
        self._background: set[asyncio.Task[None]] = set()

    @property
    def engines(self) -> list[Engine]:
        return self._chain.engines

    @property
    def voice_map(self) -> VoiceMap:
        return self._voices

    async def list_voices(self, token: str) -> list[VoiceInfo]:
        await self._gate.admit(token, voice_id="", input_length=0, visemes=False, consume=False)
        out: list[VoiceInfo] = []
        for engine in self._chain.engines:
            try:
                out.extend(await engine.voices())
            except Exception as exc:  # an engine that cannot list still lets others list
                log.warning(
                    "cannot list voices",
                    extra={"fields": {"engine": engine.name, "error": str(exc)}},
                )
        return out

    async def synthesize(self, req: SynthesisRequest) -> AsyncIterator[Event]:
        started = time.perf_counter()
        validate(req)
        spoken, tones = _spoken(req.text)
        parts = segments(spoken)
        if not parts:
            raise InvalidArgument(
                "the text has nothing to speak once markers are removed",
                violations=[("text", "only markers or whitespace")],
            )
        admission = await self._gate.admit(
            req.token, voice_id=req.voice_id, input_length=len(req.text), visemes=req.visemes
        )
        clock: _Clock | None = None
        engine_name = ""
        outcome = "error"
        try:
            voice_id = admission.voice_id
            tone0, rate0, pitch0 = _prosody(tones, 0, req.tone, req.speed)
            try:
                first = await self._chain.start(
                    parts[0][1],
                    voice_for=lambda e: self._voices.engine_voice(
                        voice_id, e.name, e.default_voice()
                    ),
                    prosody=Prosody(rate0, pitch0),
                )
            except ChainExhausted as exc:
                raise Unavailable(f"no TTS engine could speak: {exc}", retry_after_s=5) from exc
            engine = first.engine
            engine_name = engine.name
            for failure in first.failures:
                metrics.FAILOVERS.labels(failure.split(":", 1)[0]).inc()
            clock = _Clock(engine.sample_rate)
            yield Header(
                format=req.format,
                sample_rate=engine.sample_rate,
                voice_id=voice_id,
                engine=engine.name,
                engine_voice=first.voice,
                text=spoken,
                tone=tone0,
                rate=rate0,
                pitch=pitch0,
            )
            wav = req.format == "wav"
            first_audio = True
            for n, (offset, text) in enumerate(parts):
                if n == 0:
                    stream = _chained(first.head, first.rest)
                else:
                    _, rate, pitch = _prosody(tones, offset, req.tone, req.speed)
                    stream = engine.synthesize(
                        text, voice=first.voice, prosody=Prosody(rate, pitch)
                    )
                base_ms = clock.ms()
                counted = False
                try:
                    async for piece in self._chain.pieces(stream, engine):
                        if isinstance(piece, Audio):
                            if not piece.pcm:
                                continue
                            if not counted:
                                counted = True
                                clock.characters += len(text)
                            data = piece.pcm
                            if first_audio:
                                metrics.FIRST_AUDIO.labels(engine.name).observe(
                                    time.perf_counter() - started
                                )
                                first_audio = False
                                if wav:
                                    data = wav_header(engine.sample_rate) + data
                            start_ms = round(clock.ms())
                            clock.samples += len(piece.pcm) // SAMPLE_WIDTH
                            yield Chunk(data, start_ms)
                        elif isinstance(piece, Mouth):
                            if req.visemes:
                                yield VisemeMark(
                                    round(base_ms + piece.time_ms), piece.viseme, piece.weight
                                )
                        elif isinstance(piece, Word):
                            o = offset + piece.offset
                            yield WordMark(
                                spoken[o : o + piece.length],
                                o,
                                round(base_ms + piece.start_ms),
                                round(base_ms + piece.end_ms),
                            )
                except EngineFailure as exc:
                    self._chain.failed(engine)
                    raise Unavailable(
                        f"the TTS engine failed after audio was sent: {exc}", retry_after_s=1
                    ) from exc
            self._chain.succeeded(engine)
            outcome = "ok"
            yield Summary(
                duration_ms=round(clock.ms()),
                characters=clock.characters,
                engine=engine.name,
                samples=clock.samples,
                failovers=tuple(first.failures),
            )
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except GeneratorExit:
            outcome = "cancelled"
            raise
        finally:
            used = clock.characters if clock is not None else 0
            metrics.SYNTHESES.labels(engine_name or "none", outcome).inc()
            if clock is not None:
                metrics.CHARACTERS.labels(engine_name).inc(used)
                metrics.AUDIO_SECONDS.labels(engine_name).inc(clock.samples / clock.sample_rate)
            self._settle(req.token, admission, used)

    def _settle(self, token: str, admission: Admission, used: int) -> None:
        task = asyncio.get_running_loop().create_task(self._gate.refund(token, admission, used))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Waits for pending quota refunds (at shutdown, and in tests)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


async def _chained(head: list[Piece], rest: AsyncIterator[Piece]) -> AsyncIterator[Piece]:
    for piece in head:
        yield piece
    try:
        async for piece in rest:
            yield piece
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


def _spoken(raw: str) -> tuple[str, list[tuple[int, str]]]:
    """The text without markers, and the tone markers with their offsets in it."""
    parsed = parse_markers(raw)
    tones = [(m.offset, m.value) for m in parsed.markers if m.type is MarkerType.TONE]
    return parsed.text, tones


def _prosody(
    tones: list[tuple[int, str]], offset: int, requested: str, speed: float
) -> tuple[str, float, float]:
    """The tone in force at `offset` (the last tone marker at or before it, else the
    request's), its rate times the speed, and its pitch."""
    tone = requested
    for at, value in tones:
        if at <= offset:
            tone = value
    name, rate, pitch = prosody_for(tone)
    return name, rate * speed, pitch

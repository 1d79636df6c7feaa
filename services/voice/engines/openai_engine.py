"""Any OpenAI-compatible `/v1/audio/speech` upstream, through the openai SDK, with the
server's key. Audio is requested as `pcm` (24 kHz 16-bit mono) and passed on as it arrives.

The upstream reports no timing, so mouth keys come from the project's text timeline
(services/speech) fitted to the real length of each segment's audio: they follow that
segment's audio instead of preceding it. Word marks are placed the same way, by their share
of the spoken characters. The SDK's retries are off: the chain decides about failover.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import openai
from openai import AsyncOpenAI

from services.speech.timeline import compute_cue
from services.voice.engines.base import (
    SAMPLE_WIDTH,
    Audio,
    EngineFailure,
    Mouth,
    Piece,
    Prosody,
    VoiceInfo,
    Word,
)

NAME = "openai"
SAMPLE_RATE = 24000
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer")
"""The voices OpenAI's speech models document; other servers may accept others."""
_WORD = re.compile("\\w[\\w'\u2019-]*")
READ_BYTES = 4800  # 100 ms at 24 kHz


class OpenAIEngine:
    name = NAME
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        default_voice: str = "alloy",
        timeout_s: float = 30.0,
    ) -> None:
        self._client = AsyncOpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s
        )
        self._model = model
        self._default = default_voice

    def default_voice(self) -> str:
        return self._default

    async def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(engine=NAME, voice_id=v, name=v, languages=()) for v in VOICES]

    async def synthesize(self, text: str, *, voice: str, prosody: Prosody) -> AsyncIterator[Piece]:
        total = 0
        carry = b""
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                model=self._model,
                voice=voice,
                input=text,
                response_format="pcm",
                speed=min(4.0, max(0.25, prosody.rate)),
            ) as resp:
                async for data in resp.iter_bytes(READ_BYTES):
                    data = carry + data
                    cut = len(data) - len(data) % SAMPLE_WIDTH
                    carry = data[cut:]
                    if cut:
                        total += cut
                        yield Audio(data[:cut])
        except openai.APIStatusError as exc:
            raise EngineFailure(NAME, f"upstream answered {exc.status_code}") from exc
        except openai.APIError as exc:
            raise EngineFailure(NAME, f"upstream failed: {exc}") from exc
        if total == 0:
            raise EngineFailure(NAME, "upstream sent no audio")
        duration_ms = total / SAMPLE_WIDTH * 1000 / SAMPLE_RATE
        for piece in fitted(text, duration_ms):
            yield piece

    async def aclose(self) -> None:
        await self._client.close()


def fitted(text: str, duration_ms: float) -> list[Piece]:
    """Mouth keys of the text timeline and word marks, stretched to `duration_ms`."""
    cue = compute_cue(text)
    scale = duration_ms / cue.duration_ms if cue.duration_ms else 0.0
    out: list[Piece] = []
    last = -1.0
    for key in cue.visemes:
        t = min(duration_ms, key.time_ms * scale)
        if t > last:
            out.append(Mouth(t, key.viseme, key.weight))
            last = t
    voiced = [k.time_ms * scale for k in cue.visemes]
    start = voiced[1] if len(voiced) > 2 else 0.0
    end = voiced[-1] if len(voiced) > 1 else duration_ms
    words = list(_WORD.finditer(text))
    chars = sum(len(m.group()) for m in words) or 1
    clock = start
    for m in words:
        span = (end - start) * len(m.group()) / chars
        out.append(Word(m.start(), len(m.group()), clock, min(duration_ms, clock + span)))
        clock += span
    return out

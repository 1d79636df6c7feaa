"""The interface every TTS engine implements, and what it yields.

An engine speaks one segment of text (a sentence or a few) at a time. Times are milliseconds
from the start of the segment's audio; text offsets are characters into the segment's text.
The voice service puts segments back to back on one clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

SAMPLE_WIDTH = 2
"""Bytes per sample: every engine yields 16-bit signed little-endian mono PCM."""


@dataclass(frozen=True, slots=True)
class Audio:
    """PCM samples that follow the previous ones without a gap."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Mouth:
    """From ``time_ms`` on, the mouth takes the Oculus viseme ``viseme`` at ``weight``."""

    time_ms: float
    viseme: str
    weight: float


@dataclass(frozen=True, slots=True)
class Word:
    """The word at ``offset`` (``length`` characters) is heard from ``start_ms`` to ``end_ms``."""

    offset: int
    length: int
    start_ms: float
    end_ms: float


Piece = Audio | Mouth | Word


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """One voice an engine offers."""

    engine: str
    voice_id: str
    name: str
    languages: tuple[str, ...]
    gender: str = ""


@dataclass(frozen=True, slots=True)
class Prosody:
    """Speaking rate and pitch, both relative to the voice's default (1.0)."""

    rate: float = 1.0
    pitch: float = 1.0


class EngineFailure(Exception):
    """An engine could not speak; before the first audio the service fails over."""

    def __init__(self, engine: str, message: str) -> None:
        super().__init__(f"{engine}: {message}")
        self.engine = engine
        self.message = message


class Engine(Protocol):
    name: str
    sample_rate: int

    def default_voice(self) -> str:
        """The engine voice used when configuration maps none."""
        ...

    async def voices(self) -> list[VoiceInfo]: ...

    def synthesize(self, text: str, *, voice: str, prosody: Prosody) -> AsyncIterator[Piece]:
        """Speaks ``text``: audio in order, with mouth keys and word marks (each at most
        once, in time order, no later than the audio that covers them when the engine knows
        them in time; after it otherwise). Raises EngineFailure (or any other exception,
        treated the same); never swallows asyncio.CancelledError. Closing the iterator
        stops the synthesis."""
        ...

    async def aclose(self) -> None: ...

"""What a Synthesize stream carries, the WAV header, and the agent-voice mapping."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.voice.engines.base import SAMPLE_WIDTH

MIN_SPEED = 0.25
MAX_SPEED = 4.0


@dataclass(frozen=True, slots=True)
class Header:
    format: str  # "wav" or "pcm"
    sample_rate: int
    voice_id: str
    engine: str
    engine_voice: str
    text: str
    tone: str
    rate: float
    pitch: float


@dataclass(frozen=True, slots=True)
class Chunk:
    data: bytes
    start_ms: int


@dataclass(frozen=True, slots=True)
class VisemeMark:
    time_ms: int
    viseme: str
    weight: float


@dataclass(frozen=True, slots=True)
class WordMark:
    text: str
    offset: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Summary:
    duration_ms: int
    characters: int
    engine: str
    samples: int
    failovers: tuple[str, ...]


Event = Header | Chunk | VisemeMark | WordMark | Summary


def wav_header(sample_rate: int) -> bytes:
    """A 44-byte RIFF/WAVE header for streamed 16-bit mono PCM of unknown length.

    The RIFF and data sizes are 0xFFFFFFFF, as streaming servers send them: players and
    decoders read the data to the end of the stream.
    """
    unknown = 0xFFFFFFFF
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack(
            "<IHHIIHH",
            16,
            1,
            1,
            sample_rate,
            sample_rate * SAMPLE_WIDTH,
            SAMPLE_WIDTH,
            SAMPLE_WIDTH * 8,
        )
        + b"data"
        + struct.pack("<I", unknown)
    )


@dataclass(frozen=True)
class VoiceMap:
    """Agent voice id → engine → engine voice. Data from configuration, not code."""

    mappings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def engine_voice(self, voice_id: str, engine: str, default: str) -> str:
        return self.mappings.get(voice_id, {}).get(engine, default)


DEFAULT_VOICE_MAP: dict[str, dict[str, str]] = {
    "nova-bright": {"espeak": "en-us+f3", "openai": "nova"},
    "en-US-GuyNeural": {"espeak": "en-us+m3", "openai": "onyx"},
    "Joanna": {"espeak": "en-us+f4", "openai": "shimmer"},
}
"""The demo agents' voices (services/avatar/demo.py)."""

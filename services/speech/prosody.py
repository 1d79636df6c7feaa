"""Tone → speaking rate and pitch, from the design documents' table."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

NEUTRAL_TONE = "neutral"

TONE_PROSODY: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "neutral": (1.0, 1.0),
        "excited": (1.2, 1.2),
        "calm": (0.9, 0.95),
        "serious": (1.0, 0.9),
        "friendly": (1.1, 1.1),
        "concerned": (1.0, 1.0),
        "playful": (1.15, 1.15),
    }
)
"""Tone → (speaking rate, pitch), both relative to the voice's default (1.0).

Rate divides every duration of the viseme timeline; pitch is passed through to the TTS engine.
"""


def prosody_for(tone: str) -> tuple[str, float, float]:
    """Return ``(tone, rate, pitch)`` for a tone name.

    The name is matched case-insensitively after trimming; an unknown or empty tone is
    ``neutral``. The returned tone is the normalized name that was applied.
    """
    key = tone.strip().lower() if isinstance(tone, str) else ""
    if key not in TONE_PROSODY:
        key = NEUTRAL_TONE
    rate, pitch = TONE_PROSODY[key]
    return key, rate, pitch

"""ComputeVisemes: markers out, then the shared speech engine's cue for the text."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.markers import MarkerType, parse_markers
from services.speech import Cue, compute_cue

MAX_TEXT = 5000
MAX_TONE = 64


def compute_visemes(text: str, tone: str) -> Cue:
    """The cue for `text` (1 to 5,000 characters). Markers in the text are removed; the
    first tone, emotion and gesture markers apply when the request gives no tone."""
    if not text.strip():
        raise InvalidArgument("text is empty", violations=[("text", "1 to 5,000 characters")])
    if len(text) > MAX_TEXT:
        raise InvalidArgument(
            f"text is {len(text)} characters long; the limit is {MAX_TEXT}",
            violations=[("text", "1 to 5,000 characters")],
        )
    if len(tone) > MAX_TONE:
        raise InvalidArgument("tone is too long", violations=[("tone", "at most 64 characters")])
    parsed = parse_markers(text)
    found: dict[MarkerType, str] = {}
    for marker in parsed.markers:
        found.setdefault(marker.type, marker.value)
    return compute_cue(
        parsed.text,
        tone or found.get(MarkerType.TONE, "neutral"),
        emotion=found.get(MarkerType.EMOTION, "neutral"),
        gesture=found.get(MarkerType.GESTURE, ""),
        max_chars=MAX_TEXT,
    )

"""The marker vocabulary of the design documents: one list, used by every service.

The stream's marker parser accepts these values, the LLM prompt lists them, the avatar's
morph targets and expression baselines are named after the emotions.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "surprised",
    "calm",
    "excited",
    "thoughtful",
    "concerned",
)
"""Emotion values, in the order the LLM system prompt lists them."""

GESTURES: tuple[str, ...] = (
    "wave",
    "nod",
    "shake_head",
    "point",
    "hand_raise",
    "thumbs_up",
    "shrug",
)
"""Gesture values."""

TONES: tuple[str, ...] = (
    "neutral",
    "excited",
    "calm",
    "serious",
    "friendly",
    "concerned",
    "playful",
)
"""Tone values (see ``services.speech.prosody`` for their rate and pitch)."""

POSES: tuple[str, ...] = (
    "standing",
    "sitting",
    "leaning_forward",
    "arms_crossed",
    "hands_on_hips",
    "relaxed",
)
"""Pose values: a body posture held until the next pose marker."""

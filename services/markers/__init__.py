"""Inline avatar markers (``[emotion:happy]``, ``[gesture:wave,tone:calm]``) in LLM replies.

A shared library, no gRPC and no I/O: the streaming parser that keeps markers out of the
speakable text however a reply is split (see :mod:`services.markers.parser` for the rules),
used by the stream service for replies, the rooms service for a stored message's text, and
the avatar and voice services for text they are asked to speak.
"""

from services.markers.parser import (
    EMOTIONS,
    GESTURES,
    MARKER_KEYS,
    MAX_GROUP_LENGTH,
    POSES,
    TONES,
    VOCABULARY,
    Marker,
    MarkerParser,
    MarkerType,
    ParsedChunk,
    normalize_value,
    parse_markers,
    strip_markers,
)

__all__ = [
    "EMOTIONS",
    "GESTURES",
    "MARKER_KEYS",
    "MAX_GROUP_LENGTH",
    "POSES",
    "TONES",
    "VOCABULARY",
    "Marker",
    "MarkerParser",
    "MarkerType",
    "ParsedChunk",
    "normalize_value",
    "parse_markers",
    "strip_markers",
]

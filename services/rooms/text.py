"""Speakable text of a message: its content with the inline markers removed."""

from __future__ import annotations

import re

_MARKER = re.compile(r"\[\s*(?:emotion|gesture|tone|pose)\s*:[^\[\]]*\]", re.IGNORECASE)
_SPACES = re.compile(r"[ \t]{2,}")


def _strip_markers_simple(s: str) -> str:
    return _SPACES.sub(" ", _MARKER.sub("", s)).strip()


try:  # the stream service's parser is the reference; it understands split and odd markers
    from services.stream.markers import strip_markers as _reference
except ImportError:  # pragma: no cover - only when the stream package is absent
    _reference = _strip_markers_simple


def strip_markers(content: str) -> str:
    """`content` without `[emotion:...]`-style markers."""
    return _reference(content)

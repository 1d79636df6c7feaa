# ruff: noqa: RUF001
"""Text → segments the engines speak one at a time, each with its offset in the text."""

from __future__ import annotations

import re

MAX_SEGMENT = 400
"""A longer sentence is cut at the last space before this many characters."""

_END = re.compile(r"[.!?;:…。！？]+[\"')\]]*\s+|\n\s*")


def segments(text: str, *, max_chars: int = MAX_SEGMENT) -> list[tuple[int, str]]:
    """(offset, text) of each sentence of `text`, in order, covering every spoken character.

    Whitespace between sentences belongs to the sentence before it; a sentence longer than
    `max_chars` is cut at a space (or hard, when it has none). Segments with nothing but
    whitespace are left out.
    """
    out: list[tuple[int, str]] = []
    start = 0
    for m in _END.finditer(text):
        _cut(text, start, m.end(), max_chars, out)
        start = m.end()
    _cut(text, start, len(text), max_chars, out)
    return out


def _cut(text: str, start: int, end: int, max_chars: int, out: list[tuple[int, str]]) -> None:
    while start < end:
        stop = end
        if stop - start > max_chars:
            space = text.rfind(" ", start + 1, start + max_chars)
            stop = space + 1 if space > start else start + max_chars
        part = text[start:stop]
        if part.strip():
            out.append((start, part))
        start = stop

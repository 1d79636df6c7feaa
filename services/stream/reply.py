"""The agent's reply as delivered: content (as generated) and text, a cap, and cutting it.

Pure functions and a small accumulator, no I/O: the generation feeds it what it delivered
and asks it what to store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.markers import MarkerParser, ParsedChunk

MAX_REPLY_CHARS = 4000
"""Longest reply content, markers included: the rooms service's message limit."""

# Control characters other than tab, line feed and carriage return, and lone surrogates
# (a JSON "\ud800" escape decodes to one; protobuf and UTF-8 cannot carry them).
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_delta(delta: str) -> str:
    """A provider delta without the characters that must not reach clients or storage.

    The LLM's output is untrusted: a NUL would be refused by PostgreSQL and a lone
    surrogate by every protobuf encoder, ending the reply half-way.
    """
    return _UNSAFE.sub("", delta)


@dataclass
class DeliveredReply:
    """The chunks of one reply that were sent, in order."""

    raw_parts: list[str] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    chunks: int = 0

    def add(self, chunk: ParsedChunk) -> None:
        self.raw_parts.append(chunk.raw)
        self.text_parts.append(chunk.text)
        self.chunks += 1

    @property
    def content(self) -> str:
        return "".join(self.raw_parts)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def cut(self, played_chars: int) -> tuple[str, str]:
        """(content, text) to store when the person heard `played_chars` of the text.

        0, or at least the whole text, keeps everything delivered. The content is cut at the
        raw position of that text offset, so no marker is cut in half and markers that
        apply after the cut are dropped with the text they apply to.
        """
        content, text = self.content, self.text
        if played_chars <= 0 or played_chars >= len(text):
            return content, text
        return content[: raw_offset(content, played_chars)], text[:played_chars]


def raw_offset(content: str, text_offset: int) -> int:
    """The position in `content` where its text (markers removed) reaches `text_offset`.

    Re-parses the content one character at a time, so each released piece of text maps
    back to the raw characters it came from; the result is never inside a marker group.
    """
    if text_offset <= 0:
        return 0
    parser = MarkerParser()
    raw_pos = text_len = 0
    for ch in content:
        piece = parser.feed(ch)
        if piece is None:
            continue
        if piece.text and text_len + len(piece.text) >= text_offset:
            k = text_offset - text_len
            if piece.raw.endswith(piece.text):
                return raw_pos + len(piece.raw) - len(piece.text) + k
            return raw_pos + (len(piece.raw) if k == len(piece.text) else 0)
        text_len += len(piece.text)
        raw_pos += len(piece.raw)
    return len(content)


def cap_delta(delta: str, fed: int, limit: int = MAX_REPLY_CHARS) -> tuple[str, bool]:
    """The part of `delta` that still fits after `fed` characters; True if it was cut."""
    room = limit - fed
    if len(delta) <= room:
        return delta, False
    return delta[: max(0, room)], True

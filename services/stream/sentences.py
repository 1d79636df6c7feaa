"""Cut a streamed reply into sentences, each with the avatar markers in force for it.

A speech cue covers one sentence, so the stream service turns the reply into sentences as
the text arrives. :class:`SentenceAccumulator` is fed the :class:`ParsedChunk` objects of one
reply, in order, and returns each sentence once its end is certain.

Boundaries:

* A sentence ends after a run of terminators (``.``, ``!``, ``?``, ``…``; so ``"?!"`` and
  ``"..."`` are one end), optionally followed by closing quotes or brackets, when whitespace
  follows. A terminator at the end of the text seen so far keeps the sentence open until
  the next chunk shows what follows (``"3."`` + ``"5"`` is a decimal, not an end).
* A single ``.`` does not end a sentence after a common abbreviation (``Dr.``, ``Mr.``,
  ``vs.``), after an initialism written with dots (``e.g.``, ``i.e.``, ``U.S.``), or after
  a number that opens the sentence (a list item such as ``"2. Pasta"``). A ``.`` followed by a
  non-space character (``3.5``, ``example.com``) never ends one.
* A line break also ends a sentence (list items, paragraphs), unless nothing but whitespace
  precedes it in the sentence.

Coverage: the sentences of a reply cover its text exactly once, in order. The whitespace
after a sentence's end belongs to that sentence (``"Hi! "`` then ``"How are you?"``), and
whitespace at the very start of the reply belongs to the first sentence. A sentence is
returned once the first non-space character after it has arrived, or by :meth:`finish`;
so the sentences do not depend on how the reply was split into chunks. A reply whose text
is empty has no sentences.

Markers: each marker belongs to one sentence. A sentence owns the markers from the end of
the previous sentence's last word or terminator up to its own (so a marker in the
whitespace between two sentences belongs to the next one); the last sentence also owns the
markers after it (``"Bye! [gesture:wave]"``). ``emotion`` and ``tone`` are the last emotion
and tone marker owned by this sentence or an earlier one of the reply (``"neutral"`` before
any); ``gesture`` is the first gesture marker the sentence owns, or ``""``. Pose markers do
not affect sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.markers import Marker, MarkerType, ParsedChunk

__all__ = ["ABBREVIATIONS", "Sentence", "SentenceAccumulator"]

ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "mx",
        "dr",
        "prof",
        "rev",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "cf",
        "approx",
        "dept",
        "fig",
    }
)
"""Lower-case words that a single ``.`` does not end a sentence after.

Deliberately absent: ``no`` and ``etc``, which end spoken sentences too often.
"""

# Terminator run, then closing quotes or brackets (straight, curly, guillemet); or a newline.
_CANDIDATE = re.compile("[.!?\u2026]+[\"')\\]\u201d\u2019\u00bb]*|\n")
_WHITESPACE = re.compile(r"\s+")
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
_OPENERS = "\"'([{\u201c\u2018\u00ab"


def _skip_whitespace(s: str, pos: int) -> int:
    match = _WHITESPACE.match(s, pos)
    return match.end() if match else pos


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of a reply, with the markers in force for it.

    ``start`` and ``end`` are offsets into the reply's text (markers removed, all chunks
    concatenated): ``text == reply_text[start:end]``.
    """

    text: str
    tone: str
    emotion: str
    gesture: str
    start: int
    end: int


def _keeps_sentence_open(buf: str, start: int, dot: int) -> bool:
    """Whether the ``.`` at ``dot`` belongs to the word before it rather than ending a sentence."""
    k = dot
    while k > start and not buf[k - 1].isspace():
        k -= 1
    token = buf[k:dot].lstrip(_OPENERS)
    if not token:
        return False
    if token.lower() in ABBREVIATIONS or _INITIALISM.fullmatch(token):
        return True
    # "2. Pasta": a number opening the sentence is a list item.
    return token.isdigit() and not buf[start:k].strip()


class SentenceAccumulator:
    """Turns the parsed chunks of one reply into sentences.

    Feed the chunks in order, then call :meth:`finish`; the accumulator is then ready for
    the next reply. Emotion and tone start at ``"neutral"`` for every reply.
    """

    __slots__ = ("_buf", "_buf_start", "_emotion", "_markers", "_scan_pos", "_text_len", "_tone")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buf = ""  # text not yet returned in a sentence
        self._buf_start = 0  # offset of _buf in the reply's text
        self._scan_pos = 0  # where the search for the next boundary resumes, in _buf
        self._text_len = 0  # length of the reply's text so far
        self._markers: list[tuple[int, Marker]] = []  # (offset in the reply's text, marker)
        self._emotion = "neutral"
        self._tone = "neutral"

    def feed(self, chunk: ParsedChunk) -> list[Sentence]:
        """Add the next chunk; return the sentences it completes (often none)."""
        base = self._text_len
        self._markers.extend((base + m.offset, m) for m in chunk.markers)
        if not chunk.text:
            return []
        self._buf += chunk.text
        self._text_len += len(chunk.text)
        return self._scan()

    def finish(self) -> list[Sentence]:
        """Return the rest of the reply as its last sentence and reset the accumulator."""
        sentences = self._scan()
        if self._buf:
            sentences.append(self._sentence(len(self._buf), None))
        self._reset()
        return sentences

    def _scan(self) -> list[Sentence]:
        buf = self._buf
        n = len(buf)
        sentences: list[Sentence] = []
        start = 0
        pos = self._scan_pos
        while True:
            match = _CANDIDATE.search(buf, pos)
            if match is None:
                pos = n
                break
            c_start, c_end = match.span()
            if buf[c_start] == "\n":
                ws_end = _skip_whitespace(buf, c_start)
                if ws_end == n:
                    pos = c_start  # more whitespace may follow
                    break
                body_end = start + len(buf[start:c_start].rstrip())
                if body_end == start:
                    pos = ws_end
                    continue
            else:
                if c_end == n:
                    pos = c_start  # "3." + "5", "?" + "!"
                    break
                if not buf[c_end].isspace():
                    pos = c_end
                    continue
                ws_end = _skip_whitespace(buf, c_end)
                if ws_end == n:
                    pos = c_start
                    break
                if match.group() == "." and _keeps_sentence_open(buf, start, c_start):
                    pos = c_end
                    continue
                body_end = c_end
            sentences.append(self._sentence(ws_end, self._buf_start + body_end, start))
            start = pos = ws_end
        if start:
            self._buf = buf[start:]
            self._buf_start += start
        self._scan_pos = pos - start
        return sentences

    def _sentence(self, end: int, owns_until: int | None, start: int = 0) -> Sentence:
        """Build the sentence ``_buf[start:end]``, taking the markers before ``owns_until``."""
        gesture = ""
        taken = 0
        for offset, marker in self._markers:
            if owns_until is not None and offset >= owns_until:
                break
            taken += 1
            if marker.type is MarkerType.EMOTION:
                self._emotion = marker.value
            elif marker.type is MarkerType.TONE:
                self._tone = marker.value
            elif marker.type is MarkerType.GESTURE and not gesture:
                gesture = marker.value
        del self._markers[:taken]
        return Sentence(
            text=self._buf[start:end],
            tone=self._tone,
            emotion=self._emotion,
            gesture=gesture,
            start=self._buf_start + start,
            end=self._buf_start + end,
        )

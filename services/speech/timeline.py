"""Phonemes → a timed, smoothed viseme timeline for one sentence (a speech cue).

Timing model. Each phoneme has a base duration at rate 1.0 (``PHONEME_MS``: typical
connected-speech lengths after Klatt's inherent durations, shortened for conversational
speech): vowels are long, diphthongs longer, stops short. Vowels are scaled by stress
(``STRESS_DURATION``), the last syllable before a pause is lengthened
(``PHRASE_FINAL_LENGTHENING``), and everything is divided by the speaking rate. Commas and
the like pause ``PAUSE_MS["short"]``, sentence ends ``PAUSE_MS["long"]`` (also divided by the
rate). Words run into each other without a gap, as in connected speech: closing the mouth
between words would make the avatar chew.

At rate 1.0 an ordinary English paragraph, split into sentences, comes out at about
160 words per minute (pauses included), the pace of conversational speech.

Timeline shape. The first key is ``sil`` at 0 (``LEAD_IN_MS`` of rest before the first
sound), the last key is the closing ``sil`` when the sound stops; ``duration_ms`` adds the
pause after it (the sentence-end pause, or ``RELEASE_MS`` without final punctuation), so
cues played back to back keep the pacing. Consecutive identical visemes are merged (keeping
the larger weight) and no segment between keys is shorter than one 60 fps frame
(``MIN_SEGMENT_MS``): a shorter one takes time from its predecessor when that can spare it,
otherwise it is absorbed into it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from services.speech.g2p import Token, words_to_phonemes
from services.speech.prosody import prosody_for
from services.speech.text import clean_text
from services.speech.visemes import (
    ARPABET_TO_VISEME,
    DIPHTHONG_GLIDES,
    GLIDE_WEIGHT,
    PHONEME_WEIGHTS,
    STRESS_WEIGHT,
    VISEME_WEIGHTS,
    VOWELS,
)

MIN_SEGMENT_MS = 17
LEAD_IN_MS = 50
RELEASE_MS = 120
PAUSE_MS = {"short": 200, "long": 350}
PHRASE_FINAL_LENGTHENING = 1.3
GLIDE_SHARE = 0.35
"""Share of a diphthong's duration given to its off-glide viseme."""

PHONEME_MS: dict[str, float] = {
    # Vowels, primary stress.
    "AA": 150, "AE": 150, "AH": 105, "AO": 150, "AW": 185, "AY": 175, "EH": 120, "ER": 140,
    "EY": 155, "IH": 100, "IY": 130, "OW": 155, "OY": 195, "UH": 105, "UW": 140,
    # Stops: closure plus release, short.
    "P": 75, "B": 65, "T": 60, "D": 55, "K": 75, "G": 65,
    # Fricatives and affricates: long.
    "F": 90, "V": 60, "TH": 85, "DH": 45, "S": 100, "Z": 80, "SH": 105, "ZH": 90,
    "CH": 100, "JH": 90, "HH": 60,
    # Nasals, liquids and glides.
    "M": 70, "N": 60, "NG": 75, "L": 65, "R": 65, "W": 60, "Y": 55,
}  # fmt: skip
"""Base duration (ms) of each ARPAbet phoneme at rate 1.0, before stress and calibration."""

STRESS_DURATION = {"1": 1.0, "2": 0.85, "0": 0.6}
"""Vowel duration multiplier by stress digit: unstressed vowels are much shorter."""

_CALIBRATION = 1.12
"""Scales all of ``PHONEME_MS`` so that ordinary text comes out at about 160 words/minute."""


@dataclass(frozen=True, slots=True)
class VisemeKey:
    """From ``time_ms`` on (ms from the start of the cue), show ``viseme`` at ``weight``."""

    time_ms: int
    viseme: str
    weight: float


@dataclass(frozen=True, slots=True)
class Cue:
    """A speech cue: one sentence with its prosody and its viseme timeline.

    ``text`` is the cleaned sentence; ``tone`` the normalized tone, with its ``rate`` and
    ``pitch``; ``visemes`` keys with strictly increasing times, starting with ``sil`` at 0
    and ending with the closing ``sil``; ``duration_ms`` the length of the cue, including the
    pause after the last sound.
    """

    text: str
    tone: str
    rate: float
    pitch: float
    emotion: str
    gesture: str
    visemes: tuple[VisemeKey, ...]
    duration_ms: int


@dataclass(slots=True)
class _Span:
    viseme: str
    start: int
    end: int
    weight: float


def _split(phoneme: str) -> tuple[str, str]:
    """Split a stress digit off: AA1 → ("AA", "1"); consonants have none."""
    if phoneme[-1].isdigit():
        return phoneme[:-1], phoneme[-1]
    return phoneme, ""


# Words repeat: the sounds of the most recent ones are kept (a pure function of its input)
# (bench figure (a), chunks/s).
@functools.lru_cache(maxsize=8192)
def _word_phones(
    phonemes: tuple[str, ...], phrase_final: bool
) -> tuple[tuple[str, float, float], ...]:
    """(viseme, duration at rate 1.0, weight) for each sound of one word."""
    parts = [(base, stress) for base, stress in map(_split, phonemes) if base in PHONEME_MS]
    last_vowel = max((i for i, (base, _) in enumerate(parts) if base in VOWELS), default=-1)
    out: list[tuple[str, float, float]] = []
    for i, (base, stress) in enumerate(parts):
        ms = PHONEME_MS[base] * _CALIBRATION
        viseme = ARPABET_TO_VISEME[base]
        weight = VISEME_WEIGHTS[viseme]
        if base in VOWELS:
            ms *= STRESS_DURATION.get(stress, 1.0)
            weight *= STRESS_WEIGHT.get(stress, 1.0)
        if phrase_final and i >= last_vowel >= 0:
            ms *= PHRASE_FINAL_LENGTHENING
        if base in PHONEME_WEIGHTS:
            weight = PHONEME_WEIGHTS[base]
        if base == "HH":
            # A breath shaped like the vowel (or glide: "which" HH W) after it, else like the
            # sound before it.
            if i + 1 < len(parts) and (parts[i + 1][0] in VOWELS or parts[i + 1][0] in ("W", "Y")):
                viseme = ARPABET_TO_VISEME[parts[i + 1][0]]
            elif out:
                viseme = out[-1][0]
        glide = DIPHTHONG_GLIDES.get(base)
        if glide is None:
            out.append((viseme, ms, weight))
        else:
            out.append((viseme, ms * (1 - GLIDE_SHARE), weight))
            out.append((glide, ms * GLIDE_SHARE, weight * GLIDE_WEIGHT))
    return tuple(out)


def _segments(tokens: Sequence[Token], rate: float) -> tuple[list[_Span], int]:
    """Timed spans (lead-in sil first) and the pause after the last sound, in ms."""
    words = [i for i, t in enumerate(tokens) if not t.pause]
    if not words:
        return [], 0
    lead = max(MIN_SEGMENT_MS, round(LEAD_IN_MS / rate))
    spans = [_Span("sil", 0, lead, VISEME_WEIGHTS["sil"])]
    clock = float(lead)
    pause = ""
    for i, token in enumerate(tokens[words[0] : words[-1] + 1], start=words[0]):
        if token.pause:
            # A run of punctuation (", —", "?!") is one pause, the longest of them.
            pause = "long" if "long" in (pause, token.pause) else token.pause
            continue
        if pause:
            start = round(clock)
            clock += PAUSE_MS[pause] / rate
            spans.append(_Span("sil", start, round(clock), VISEME_WEIGHTS["sil"]))
            pause = ""
        phrase_final = i == words[-1] or bool(tokens[i + 1].pause)
        for viseme, ms, weight in _word_phones(tuple(token.phonemes), phrase_final):
            start = round(clock)
            clock += ms / rate
            spans.append(_Span(viseme, start, round(clock), weight))
    trailing = [t.pause for t in tokens[words[-1] + 1 :]]
    tail = PAUSE_MS["long"] if "long" in trailing else PAUSE_MS["short"] if trailing else 0
    tail_ms = max(MIN_SEGMENT_MS, round((tail or RELEASE_MS) / rate))
    return spans, tail_ms


def _smooth(spans: Sequence[_Span]) -> list[_Span]:
    """Merge repeats and segments shorter than ``MIN_SEGMENT_MS``, in one pass."""
    out: list[_Span] = []
    for span in spans:
        if span.end <= span.start:
            continue
        if out and out[-1].viseme == span.viseme:
            out[-1].end = span.end
            out[-1].weight = max(out[-1].weight, span.weight)
            continue
        missing = MIN_SEGMENT_MS - (span.end - span.start)
        if missing > 0 and out:
            prev = out[-1]
            if prev.end - prev.start - missing >= MIN_SEGMENT_MS:
                prev.end -= missing  # the predecessor can spare the time
                out.append(_Span(span.viseme, span.start - missing, span.end, span.weight))
            else:
                prev.end = span.end
            continue
        out.append(_Span(span.viseme, span.start, span.end, span.weight))
    return out


def build_timeline(tokens: Sequence[Token], rate: float = 1.0) -> tuple[tuple[VisemeKey, ...], int]:
    """Viseme keys and total duration (ms) for spoken tokens at a speaking rate (> 0)."""
    if not rate > 0:
        raise ValueError("rate must be positive")
    spans, tail_ms = _segments(tokens, rate)
    spans = _smooth(spans)
    if not spans:
        return (VisemeKey(0, "sil", VISEME_WEIGHTS["sil"]),), 0
    keys = [VisemeKey(s.start, s.viseme, round(s.weight, 3)) for s in spans]
    end = spans[-1].end
    keys.append(VisemeKey(end, "sil", VISEME_WEIGHTS["sil"]))
    return tuple(keys), end + tail_ms


def compute_cue(
    text: str,
    tone: str = "neutral",
    *,
    emotion: str = "",
    gesture: str = "",
    max_chars: int = 5000,
) -> Cue:
    """Build the speech cue for one sentence of text.

    The tone (unknown → ``neutral``) sets rate and pitch (see ``TONE_PROSODY``); ``emotion``
    and ``gesture`` are carried through, trimmed and lower-cased. Text is untrusted: control
    characters are ignored, text with nothing to say gives a cue with a single ``sil`` key
    and duration 0. Raises ``ValueError`` if ``text`` is longer than ``max_chars``.
    """
    if len(text) > max_chars:
        raise ValueError(f"text is {len(text)} characters long; the limit is {max_chars}")
    tone, rate, pitch = prosody_for(tone)
    cleaned = clean_text(text)
    keys, duration_ms = build_timeline(words_to_phonemes(cleaned), rate)
    return Cue(
        text=cleaned,
        tone=tone,
        rate=rate,
        pitch=pitch,
        emotion=clean_text(emotion).lower(),
        gesture=clean_text(gesture).lower(),
        visemes=keys,
        duration_ms=duration_ms,
    )

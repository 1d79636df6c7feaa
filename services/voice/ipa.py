# ruff: noqa: RUF001, RUF002
"""IPA phonemes (as espeak-ng reports them) → Oculus visemes, with the speech module's weights.

espeak-ng names each phoneme it speaks in IPA, sometimes several sounds in one event
("ˈaɪ", "ɛɹ", "tʃ") and with stress and length marks. Each sound maps to the ARPAbet phoneme
closest to it, then through the same table (``ARPABET_TO_VISEME``) and weights the text
timeline uses, so both paths shape the mouth alike. A phoneme of several sounds gives its
first sound the larger share of its time (as the timeline does for diphthongs).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from services.speech.visemes import (
    ARPABET_TO_VISEME,
    GLIDE_WEIGHT,
    PHONEME_WEIGHTS,
    STRESS_WEIGHT,
    VISEME_WEIGHTS,
    VOWELS,
)

IPA_TO_ARPABET: Mapping[str, str] = MappingProxyType(
    {
        # Two-symbol sounds first (matched longest first).
        "tʃ": "CH", "dʒ": "JH", "ts": "S", "dz": "Z",
        "p": "P", "b": "B", "m": "M", "ɱ": "M",
        "f": "F", "v": "V", "ɸ": "F", "β": "V",
        "θ": "TH", "ð": "DH",
        "t": "T", "d": "D", "ɾ": "D", "ʔ": "T", "ɖ": "D", "ʈ": "T",
        "k": "K", "g": "G", "ɡ": "G", "ŋ": "NG", "x": "K", "ɣ": "G", "q": "K", "χ": "K",
        "ʃ": "SH", "ʒ": "ZH", "ç": "SH", "ʝ": "ZH", "ɕ": "SH", "ʑ": "ZH",
        "s": "S", "z": "Z",
        "n": "N", "ɲ": "N", "ɳ": "N", "l": "L", "ɫ": "L", "ɬ": "L", "ʎ": "L", "ɭ": "L",
        "ɹ": "R", "r": "R", "ɻ": "R", "ʁ": "R", "ʀ": "R", "ɚ": "ER", "ɝ": "ER",
        "h": "HH", "ɦ": "HH",
        "j": "Y", "w": "W", "ʍ": "W", "ɥ": "W",
        "a": "AA", "ɑ": "AA", "æ": "AE", "ʌ": "AH", "ə": "AH", "ɐ": "AH", "ᵻ": "IH",
        "e": "EY", "ɛ": "EH", "ɜ": "ER", "œ": "EH",
        "i": "IY", "ɪ": "IH", "y": "IY", "ɨ": "IH",
        "o": "OW", "ɔ": "AO", "ɒ": "AO", "ø": "OW", "ɵ": "OW", "ɤ": "OW",
        "u": "UW", "ʊ": "UH", "ɯ": "UW", "ʉ": "UW",
    }
)  # fmt: skip
"""Each IPA sound espeak-ng uses for the languages it speaks → the nearest ARPAbet phoneme."""

_STRESS = {"ˈ": "1", "ˌ": "2"}
_LONGEST = max(map(len, IPA_TO_ARPABET))
FIRST_SHARE = 0.65
"""Share of a phoneme's time given to its first sound when it has several."""


def ipa_sounds(ipa: str) -> list[tuple[str, str]]:
    """The (ARPAbet phoneme, stress digit or "") of each sound in one espeak-ng phoneme.

    Stress marks apply to the vowels after them; length marks, ties, diacritics and symbols
    with no ARPAbet counterpart are skipped. A pause ("" or "_") gives no sound.
    """
    out: list[tuple[str, str]] = []
    stress = ""
    i = 0
    while i < len(ipa):
        ch = ipa[i]
        if ch in _STRESS:
            stress = _STRESS[ch]
            i += 1
            continue
        for size in range(min(_LONGEST, len(ipa) - i), 0, -1):
            arpa = IPA_TO_ARPABET.get(ipa[i : i + size])
            if arpa is not None:
                out.append((arpa, (stress or "0") if arpa in VOWELS else ""))
                i += size
                break
        else:
            i += 1
    return out


def ipa_visemes(ipa: str, next_viseme: str = "") -> list[tuple[float, str, float]]:
    """(share of the phoneme's time at which it starts, viseme, weight) for one phoneme.

    Silence for a pause. /h/ has no shape of its own: it takes ``next_viseme`` (the shape of
    the sound after it) when given, faintly.
    """
    sounds = ipa_sounds(ipa)
    if not sounds:
        return [(0.0, "sil", VISEME_WEIGHTS["sil"])]
    out: list[tuple[float, str, float]] = []
    for n, (arpa, stress) in enumerate(sounds):
        if arpa == "HH":
            viseme = next_viseme if next_viseme and next_viseme != "sil" else "aa"
        else:
            viseme = ARPABET_TO_VISEME[arpa]
        weight = VISEME_WEIGHTS[viseme]
        if arpa in VOWELS:
            weight *= STRESS_WEIGHT.get(stress, 1.0)
        weight = PHONEME_WEIGHTS.get(arpa, weight)
        if n > 0:
            weight *= GLIDE_WEIGHT
        start = 0.0 if n == 0 else FIRST_SHARE + (1 - FIRST_SHARE) * (n - 1) / (len(sounds) - 1)
        out.append((start, viseme, round(weight, 3)))
    return out


def first_viseme(ipa: str) -> str:
    """The viseme a phoneme opens with ("sil" for a pause); what an /h/ before it borrows."""
    sounds = ipa_sounds(ipa)
    if not sounds:
        return "sil"
    return ARPABET_TO_VISEME.get(sounds[0][0], "aa")

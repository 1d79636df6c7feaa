"""Speech cues: text → phonemes → a timed Oculus viseme timeline, with tone prosody.

Pure Python, no gRPC and no I/O apart from loading the CMU pronouncing dictionary once (call
:func:`warm_up` at start-up to pay that second early). The stream service builds one cue per
sentence of the agent's reply; the avatar service serves ``ComputeVisemes`` with it.

    >>> cue = compute_cue("Hello there!", "excited")
    >>> cue.visemes[0], cue.visemes[-1].viseme
    (VisemeKey(time_ms=0, viseme='sil', weight=1.0), 'sil')
"""

from services.speech.g2p import Token, lookup, warm_up, words_to_phonemes
from services.speech.lts import letters_to_phonemes
from services.speech.numbers import number_to_words
from services.speech.prosody import TONE_PROSODY, prosody_for
from services.speech.text import clean_text
from services.speech.timeline import MIN_SEGMENT_MS, Cue, VisemeKey, build_timeline, compute_cue
from services.speech.visemes import (
    ARKIT_BLENDSHAPES,
    ARPABET_TO_VISEME,
    AZURE_TO_OCULUS,
    OCULUS_TO_ARKIT,
    POLLY_TO_OCULUS,
    VISEMES,
)

__all__ = [
    "ARKIT_BLENDSHAPES",
    "ARPABET_TO_VISEME",
    "AZURE_TO_OCULUS",
    "MIN_SEGMENT_MS",
    "OCULUS_TO_ARKIT",
    "POLLY_TO_OCULUS",
    "TONE_PROSODY",
    "VISEMES",
    "Cue",
    "Token",
    "VisemeKey",
    "build_timeline",
    "clean_text",
    "compute_cue",
    "letters_to_phonemes",
    "lookup",
    "number_to_words",
    "prosody_for",
    "warm_up",
    "words_to_phonemes",
]

"""Viseme vocabulary and the published mapping tables.

The timeline uses the 15 Oculus (OVRLipSync) visemes that Ready Player Me avatars carry as
morph targets. The tables below translate from ARPAbet (our phoneme alphabet), from the
viseme ids that Azure Speech and Amazon Polly emit, and to ARKit blendshapes for rigs that
only have the 52 ARKit face shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

VISEMES: tuple[str, ...] = (
    "sil",
    "PP",
    "FF",
    "TH",
    "DD",
    "kk",
    "CH",
    "SS",
    "nn",
    "RR",
    "aa",
    "E",
    "I",
    "O",
    "U",
)
"""The Oculus / Ready Player Me viseme set, in the canonical OVRLipSync order."""

VOWELS: frozenset[str] = frozenset(
    {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
)
"""ARPAbet vowels (without stress digits). cmudict marks each with 0, 1 or 2."""

ARPABET_TO_VISEME: Mapping[str, str] = MappingProxyType(
    {
        # Lips closed.
        "P": "PP",
        "B": "PP",
        "M": "PP",
        # Lower lip against the upper teeth.
        "F": "FF",
        "V": "FF",
        # Tongue between the teeth.
        "TH": "TH",
        "DH": "TH",
        # Tongue tip on the ridge behind the teeth.
        "T": "DD",
        "D": "DD",
        # Back of the tongue raised; the mouth stays a little open.
        "K": "kk",
        "G": "kk",
        "NG": "kk",
        # Lips pushed forward.
        "CH": "CH",
        "JH": "CH",
        "SH": "CH",
        "ZH": "CH",
        # Teeth nearly together.
        "S": "SS",
        "Z": "SS",
        "N": "nn",
        "L": "nn",
        "R": "RR",
        "ER": "RR",
        "AA": "aa",
        "AE": "aa",
        "AH": "aa",
        "AY": "aa",
        "AW": "aa",
        "EH": "E",
        "EY": "E",
        "IH": "I",
        "IY": "I",
        # The glide /j/ spreads the lips like /i/.
        "Y": "I",
        "AO": "O",
        "OW": "O",
        "OY": "O",
        "UH": "U",
        "UW": "U",
        # The glide /w/ rounds the lips like /u/.
        "W": "U",
        # /h/ has no shape of its own: the mouth already takes the shape of the vowel that
        # follows (or keeps the one before). The timeline resolves that from context; this
        # entry is the fallback when there is no neighbouring vowel.
        "HH": "aa",
    }
)
"""ARPAbet phoneme (stress digits stripped) → Oculus viseme: the standard grouping."""

DIPHTHONG_GLIDES: Mapping[str, str] = MappingProxyType({"AY": "I", "AW": "U", "OY": "I"})
"""Off-glides of the diphthongs whose end shape is clearly visible.

"my" opens (aa) then spreads (I), "now" opens then rounds (U), "boy" rounds (O) then spreads.
The timeline gives the last ~35 % of these vowels to the glide viseme. EY and OW glide too,
but their start and end shapes are close enough that one viseme reads better.
"""

VISEME_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "sil": 1.0,  # fully at rest
        "PP": 1.0,  # a closure that does not fully close looks wrong
        "FF": 1.0,
        "TH": 0.8,
        "CH": 0.9,  # lip protrusion is easy to see
        "SS": 0.8,
        "RR": 0.7,
        "DD": 0.6,  # tongue gestures are mostly hidden behind the lips
        "nn": 0.6,
        "kk": 0.5,
        "aa": 1.0,
        "E": 1.0,
        "I": 1.0,
        "O": 1.0,
        "U": 1.0,
    }
)
"""Peak weight of each viseme (0..1) before stress is applied.

Vowels are scaled further by stress (see ``STRESS_WEIGHT``), diphthong glides by
``GLIDE_WEIGHT``; the consonants in ``PHONEME_WEIGHTS`` use their own weight.
"""

STRESS_WEIGHT: Mapping[str, float] = MappingProxyType({"1": 1.0, "2": 0.85, "0": 0.7})
"""Vowel weight multiplier by cmudict stress digit: primary, secondary, unstressed."""

PHONEME_WEIGHTS: Mapping[str, float] = MappingProxyType({"HH": 0.3, "Y": 0.6, "W": 0.9})
"""Weights of phonemes that borrow a vowel's viseme: /h/ is a breath in the shape of the next
vowel, so it is shown faintly; the glides /j/ and /w/ are weaker than the vowels /i/ and /u/."""

GLIDE_WEIGHT = 0.6
"""Multiplier for the off-glide part of a diphthong (see ``DIPHTHONG_GLIDES``)."""

ARKIT_BLENDSHAPES: frozenset[str] = frozenset(
    {
        "eyeBlinkLeft",
        "eyeLookDownLeft",
        "eyeLookInLeft",
        "eyeLookOutLeft",
        "eyeLookUpLeft",
        "eyeSquintLeft",
        "eyeWideLeft",
        "eyeBlinkRight",
        "eyeLookDownRight",
        "eyeLookInRight",
        "eyeLookOutRight",
        "eyeLookUpRight",
        "eyeSquintRight",
        "eyeWideRight",
        "jawForward",
        "jawLeft",
        "jawRight",
        "jawOpen",
        "mouthClose",
        "mouthFunnel",
        "mouthPucker",
        "mouthLeft",
        "mouthRight",
        "mouthSmileLeft",
        "mouthSmileRight",
        "mouthFrownLeft",
        "mouthFrownRight",
        "mouthDimpleLeft",
        "mouthDimpleRight",
        "mouthStretchLeft",
        "mouthStretchRight",
        "mouthRollLower",
        "mouthRollUpper",
        "mouthShrugLower",
        "mouthShrugUpper",
        "mouthPressLeft",
        "mouthPressRight",
        "mouthLowerDownLeft",
        "mouthLowerDownRight",
        "mouthUpperUpLeft",
        "mouthUpperUpRight",
        "browDownLeft",
        "browDownRight",
        "browInnerUp",
        "browOuterUpLeft",
        "browOuterUpRight",
        "cheekPuff",
        "cheekSquintLeft",
        "cheekSquintRight",
        "noseSneerLeft",
        "noseSneerRight",
        "tongueOut",
    }
)
"""The 52 ARKit face blendshape names (Apple ``ARFaceAnchor.BlendShapeLocation``)."""


def _sym(**shapes: float) -> Mapping[str, float]:
    """Blendshape weights, expanding ``mouthSmile=0.3`` into its Left and Right halves."""
    out: dict[str, float] = {}
    for name, weight in shapes.items():
        if name in ARKIT_BLENDSHAPES:
            out[name] = weight
        else:
            out[name + "Left"] = weight
            out[name + "Right"] = weight
    return MappingProxyType(out)


OCULUS_TO_ARKIT: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "sil": _sym(),  # the neutral face: every mouth shape at 0
        "PP": _sym(mouthClose=0.25, mouthPress=0.6, mouthRollLower=0.3, mouthRollUpper=0.2),
        "FF": _sym(jawOpen=0.08, mouthRollLower=0.7, mouthUpperUp=0.25, mouthPress=0.15),
        "TH": _sym(jawOpen=0.15, tongueOut=0.35, mouthLowerDown=0.15, mouthUpperUp=0.1),
        "DD": _sym(jawOpen=0.2, mouthStretch=0.15, mouthLowerDown=0.1),
        "kk": _sym(jawOpen=0.25, mouthStretch=0.2, mouthLowerDown=0.1),
        "CH": _sym(jawOpen=0.15, mouthFunnel=0.5, mouthPucker=0.3, mouthShrugUpper=0.2),
        "SS": _sym(jawOpen=0.05, mouthSmile=0.3, mouthStretch=0.3, mouthLowerDown=0.15),
        "nn": _sym(jawOpen=0.15, mouthStretch=0.1, mouthUpperUp=0.05),
        "RR": _sym(jawOpen=0.15, mouthFunnel=0.3, mouthPucker=0.3, mouthRollLower=0.1),
        "aa": _sym(jawOpen=0.6, mouthLowerDown=0.3, mouthUpperUp=0.1, mouthStretch=0.1),
        "E": _sym(jawOpen=0.35, mouthSmile=0.3, mouthStretch=0.3, mouthLowerDown=0.2),
        "I": _sym(jawOpen=0.2, mouthSmile=0.45, mouthStretch=0.4),
        "O": _sym(jawOpen=0.4, mouthFunnel=0.6, mouthPucker=0.2),
        "U": _sym(jawOpen=0.15, mouthPucker=0.8, mouthFunnel=0.4),
    }
)
"""Oculus viseme → ARKit blendshape weights (at viseme weight 1.0; scale linearly).

For rigs without Oculus viseme morph targets. ``sil`` maps to no shapes (the rest pose).
"""

AZURE_TO_OCULUS: Mapping[int, str] = MappingProxyType(
    {
        0: "sil",  # silence
        1: "aa",  # AE, AH (stressed and schwa)
        2: "aa",  # AA
        3: "O",  # AO
        4: "E",  # EH, UH
        5: "RR",  # ER
        6: "I",  # Y, IY, IH
        7: "U",  # W, UW
        8: "O",  # OW
        9: "aa",  # AW
        10: "O",  # OY
        11: "aa",  # AY
        12: "aa",  # HH (see the HH note on ARPABET_TO_VISEME)
        13: "RR",  # R
        14: "nn",  # L
        15: "SS",  # S, Z
        16: "CH",  # SH, CH, JH, ZH
        17: "TH",  # DH
        18: "FF",  # F, V
        19: "DD",  # D, T, N, TH
        20: "kk",  # K, G, NG
        21: "PP",  # P, B, M
    }
)
"""Azure Speech viseme id (0-21, the SAPI set, en-US) → Oculus viseme."""

POLLY_TO_OCULUS: Mapping[str, str] = MappingProxyType(
    {
        "sil": "sil",
        "p": "PP",  # P, B, M
        "t": "DD",  # T, D (Polly also files N and L here)
        "S": "CH",  # SH, ZH, CH, JH
        "T": "TH",  # TH, DH
        "f": "FF",  # F, V
        "k": "kk",  # K, G, NG
        "i": "I",  # IY, IH
        "r": "RR",  # R
        "s": "SS",  # S, Z
        "u": "U",  # UW, UH, W
        "@": "aa",  # AH (schwa and stressed)
        "a": "aa",  # AA, AE
        "e": "E",  # EY, EH
        "E": "RR",  # ER (r-coloured)
        "o": "O",  # OW
        "O": "O",  # AO
    }
)
"""Amazon Polly viseme code → Oculus viseme. Codes are case-sensitive (``e`` ≠ ``E``)."""

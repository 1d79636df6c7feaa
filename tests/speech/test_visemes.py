import pytest

from services.speech import (
    ARKIT_BLENDSHAPES,
    ARPABET_TO_VISEME,
    AZURE_TO_OCULUS,
    OCULUS_TO_ARKIT,
    POLLY_TO_OCULUS,
    TONE_PROSODY,
    VISEMES,
    prosody_for,
)
from services.speech.visemes import DIPHTHONG_GLIDES, VISEME_WEIGHTS

ARPABET = {
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
    "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH",
    "UW", "V", "W", "Y", "Z", "ZH",
}  # fmt: skip


def test_viseme_set_is_the_oculus_fifteen_in_order():
    assert VISEMES == (
        "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U"
    )  # fmt: skip


def test_every_arpabet_phoneme_maps_to_a_viseme():
    assert set(ARPABET_TO_VISEME) == ARPABET
    assert set(ARPABET_TO_VISEME.values()) <= set(VISEMES)
    assert set(ARPABET_TO_VISEME.values()) == set(VISEMES) - {"sil"}
    assert set(DIPHTHONG_GLIDES.values()) <= set(VISEMES)


def test_standard_groups():
    groups = {
        "PP": "P B M", "FF": "F V", "TH": "TH DH", "DD": "T D", "kk": "K G NG",
        "CH": "CH JH SH ZH", "SS": "S Z", "nn": "N L", "RR": "R ER", "aa": "AA AE AH AY AW",
        "E": "EH EY", "I": "IH IY Y", "O": "AO OW OY", "U": "UH UW W",
    }  # fmt: skip
    for viseme, phonemes in groups.items():
        for phoneme in phonemes.split():
            assert ARPABET_TO_VISEME[phoneme] == viseme, phoneme


def test_every_viseme_has_a_weight_in_range():
    assert set(VISEME_WEIGHTS) == set(VISEMES)
    assert all(0 < w <= 1 for w in VISEME_WEIGHTS.values())


def test_arkit_mapping_covers_every_viseme_with_real_blendshapes():
    assert len(ARKIT_BLENDSHAPES) == 52
    assert set(OCULUS_TO_ARKIT) == set(VISEMES)
    assert dict(OCULUS_TO_ARKIT["sil"]) == {}
    for viseme in VISEMES[1:]:
        shapes = OCULUS_TO_ARKIT[viseme]
        assert shapes, viseme
        assert set(shapes) <= ARKIT_BLENDSHAPES, viseme
        assert all(0 < w <= 1 for w in shapes.values()), viseme
    assert {"mouthClose", "mouthPressLeft", "mouthPressRight"} <= set(OCULUS_TO_ARKIT["PP"])
    assert OCULUS_TO_ARKIT["aa"]["jawOpen"] > OCULUS_TO_ARKIT["I"]["jawOpen"]
    assert OCULUS_TO_ARKIT["U"]["mouthPucker"] >= 0.5


def test_arkit_shapes_are_distinct_per_viseme():
    seen = [tuple(sorted(OCULUS_TO_ARKIT[v].items())) for v in VISEMES]
    assert len(set(seen)) == len(VISEMES)


def test_azure_ids_0_to_21_all_mapped():
    assert set(AZURE_TO_OCULUS) == set(range(22))
    assert set(AZURE_TO_OCULUS.values()) <= set(VISEMES)
    assert AZURE_TO_OCULUS[0] == "sil"
    assert AZURE_TO_OCULUS[21] == "PP"
    assert AZURE_TO_OCULUS[18] == "FF"


def test_polly_codes_all_mapped():
    codes = {"p", "t", "S", "T", "f", "k", "i", "r", "s", "u", "@", "a", "e", "E", "o", "O", "sil"}
    assert set(POLLY_TO_OCULUS) == codes
    assert set(POLLY_TO_OCULUS.values()) <= set(VISEMES)
    assert POLLY_TO_OCULUS["p"] == "PP"
    assert POLLY_TO_OCULUS["sil"] == "sil"


def test_tables_are_read_only():
    with pytest.raises(TypeError):
        OCULUS_TO_ARKIT["PP"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        OCULUS_TO_ARKIT["PP"]["jawOpen"] = 1.0  # type: ignore[index]


def test_tone_table_matches_the_design():
    assert dict(TONE_PROSODY) == {
        "excited": (1.2, 1.2),
        "calm": (0.9, 0.95),
        "serious": (1.0, 0.9),
        "friendly": (1.1, 1.1),
        "concerned": (1.0, 1.0),
        "playful": (1.15, 1.15),
        "neutral": (1.0, 1.0),
    }


def test_prosody_for_normalizes_and_defaults():
    assert prosody_for("excited") == ("excited", 1.2, 1.2)
    assert prosody_for("  Calm ") == ("calm", 0.9, 0.95)
    assert prosody_for("sarcastic") == ("neutral", 1.0, 1.0)
    assert prosody_for("") == ("neutral", 1.0, 1.0)

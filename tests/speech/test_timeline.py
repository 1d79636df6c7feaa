import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.speech import (
    MIN_SEGMENT_MS,
    VISEMES,
    Cue,
    VisemeKey,
    build_timeline,
    compute_cue,
    words_to_phonemes,
)

PARAGRAPHS = [
    "Hello there, it's really nice to meet you. I'm here to help you plan your trip to the "
    "mountains this weekend. The weather looks clear on Saturday, but it might rain a little "
    "on Sunday afternoon. If you leave early in the morning, you should reach the trailhead "
    "before the crowds arrive. Don't forget to bring water, a warm jacket, and something to "
    "eat. Would you like me to suggest a few easy hikes with good views?",
    "I understand how you feel, and I think that's a very reasonable question. When I was "
    "thinking about your project, I noticed that the main problem is time. You have a lot of "
    "work to do and not many people to help you. Maybe we can break the job into smaller "
    "pieces and decide which ones matter most. Then you can start with the easy parts and "
    "build some confidence. What do you think about that plan?",
    "The museum opens at nine in the morning and closes at six in the evening. Most visitors "
    "spend about two hours looking at the main collection. There is a small cafe on the second "
    "floor where you can buy coffee and sandwiches. On weekends the lines can be long, so it "
    "helps to buy tickets online before you go. Children under twelve get in for free, and "
    "students pay half price.",
]


def sequence(cue: Cue) -> list[str]:
    return [k.viseme for k in cue.visemes]


def sentences(paragraph: str) -> list[str]:
    return re.findall(r"[^.!?]+[.!?]", paragraph)


def assert_well_formed(cue: Cue) -> None:
    keys = cue.visemes
    assert keys[0] == VisemeKey(0, "sil", 1.0)
    assert keys[-1].viseme == "sil"
    assert all(k.viseme in VISEMES for k in keys)
    assert all(0.0 <= k.weight <= 1.0 for k in keys)
    if len(keys) == 1:
        assert cue.duration_ms == 0
        return
    times = [k.time_ms for k in keys] + [cue.duration_ms]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= MIN_SEGMENT_MS, gaps
    assert all(a.viseme != b.viseme for a, b in itertools.pairwise(keys))


def test_papa():
    cue = compute_cue("papa")
    assert sequence(cue) == ["sil", "PP", "aa", "PP", "aa", "sil"]
    assert_well_formed(cue)


def test_fish():
    seq = sequence(compute_cue("fish"))
    assert seq[:3] == ["sil", "FF", "I"]
    assert seq[3] in ("SS", "CH")
    assert seq[4:] == ["sil"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mama", ["sil", "PP", "aa", "PP", "aa", "sil"]),
        ("thin", ["sil", "TH", "I", "nn", "sil"]),
        ("shoe", ["sil", "CH", "U", "sil"]),
        ("row", ["sil", "RR", "O", "sil"]),
        ("key", ["sil", "kk", "I", "sil"]),
        ("bed", ["sil", "PP", "E", "DD", "sil"]),
        ("my", ["sil", "PP", "aa", "I", "sil"]),  # AY: open, then the glide to I
        ("who", ["sil", "U", "sil"]),  # HH takes the shape of the vowel after it
    ],
)
def test_known_words(text, expected):
    assert sequence(compute_cue(text)) == expected


@pytest.mark.parametrize("text", ["Zorblax", "qwrtpl", "Xyzzy", "Khaleesi", "brrr"])
def test_out_of_vocabulary_words_still_move_the_mouth(text):
    cue = compute_cue(text)
    assert_well_formed(cue)
    assert len(set(sequence(cue)) - {"sil"}) >= 2
    assert cue.duration_ms > 300


def test_numbers_are_spoken():
    short = compute_cue("I have 7 cats")
    long = compute_cue("I have 7,777,777 cats")
    assert long.duration_ms > short.duration_ms + 1500
    assert_well_formed(long)


def test_weights():
    keys = {k.viseme: k.weight for k in compute_cue("papa").visemes}
    assert keys["PP"] == 1.0
    cue = compute_cue("banana")  # B AH0 N AE1 N AH0
    vowels = [k.weight for k in cue.visemes if k.viseme == "aa"]
    assert max(vowels) == 1.0
    assert min(vowels) < 1.0  # unstressed vowels are weaker


def test_closing_sil_and_tail():
    statement = compute_cue("That is all.")
    bare = compute_cue("That is all")
    assert statement.visemes[-1].viseme == bare.visemes[-1].viseme == "sil"
    # The sentence-end pause is part of the cue, so back-to-back cues keep their pacing.
    assert statement.duration_ms - statement.visemes[-1].time_ms >= 340
    assert bare.duration_ms - bare.visemes[-1].time_ms >= MIN_SEGMENT_MS


def test_comma_inserts_a_pause():
    cue = compute_cue("Yes, no")
    pauses = [
        b.time_ms - a.time_ms
        for a, b in itertools.pairwise(cue.visemes)
        if a.viseme == "sil" and a.time_ms > 0
    ]
    assert pauses
    assert 190 <= pauses[0] <= 300  # the comma, plus the lengthening is in the word before


def test_runs_of_punctuation_are_one_pause():
    assert compute_cue("Wait?!?! What").duration_ms == compute_cue("Wait? What").duration_ms
    assert compute_cue("... Hello").visemes == compute_cue("Hello").visemes


def test_durations_scale_with_rate():
    text = PARAGRAPHS[0]
    calm = compute_cue(text, "calm")
    neutral = compute_cue(text, "neutral")
    excited = compute_cue(text, "excited")
    assert (calm.rate, excited.rate) == (0.9, 1.2)
    assert calm.duration_ms > neutral.duration_ms > excited.duration_ms
    assert excited.duration_ms / calm.duration_ms == pytest.approx(0.9 / 1.2, rel=0.03)
    assert excited.duration_ms / neutral.duration_ms == pytest.approx(1 / 1.2, rel=0.03)


@pytest.mark.parametrize("paragraph", PARAGRAPHS)
def test_ordinary_speech_is_about_160_words_per_minute(paragraph):
    words = len(paragraph.split())
    per_sentence_ms = sum(compute_cue(s).duration_ms for s in sentences(paragraph))
    assert 150 <= words / (per_sentence_ms / 60_000) <= 170
    assert 150 <= words / (compute_cue(paragraph).duration_ms / 60_000) <= 170


def test_cue_fields():
    cue = compute_cue("  Hi\x00 there!\n", " Excited ", emotion=" Happy", gesture="wave ")
    assert cue.text == "Hi there!"
    assert (cue.tone, cue.rate, cue.pitch) == ("excited", 1.2, 1.2)
    assert (cue.emotion, cue.gesture) == ("happy", "wave")
    assert_well_formed(cue)


def test_unknown_tone_is_neutral():
    cue = compute_cue("Hello", "sarcastic")
    assert (cue.tone, cue.rate, cue.pitch) == ("neutral", 1.0, 1.0)
    assert cue.visemes == compute_cue("Hello").visemes


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01\x7f", "...", "?!", "日本語", "🙂🙂"])
def test_nothing_to_say_gives_a_single_sil(text):
    cue = compute_cue(text)
    assert cue.visemes == (VisemeKey(0, "sil", 1.0),)
    assert cue.duration_ms == 0


def test_control_characters_are_ignored():
    assert compute_cue("he\x00llo\x1b").visemes == compute_cue("hello").visemes


def test_text_longer_than_the_limit_is_refused():
    compute_cue("a" * 5000)
    with pytest.raises(ValueError, match="limit"):
        compute_cue("a" * 5001)
    with pytest.raises(ValueError):
        compute_cue("hello there", max_chars=5)


def test_build_timeline_rejects_a_bad_rate():
    with pytest.raises(ValueError):
        build_timeline(words_to_phonemes("hi"), 0)


def test_the_longest_input_gives_a_well_formed_timeline():
    text = ("The quick brown fox jumps over the lazy dog. " * 120)[:5000]
    cue = compute_cue(text)
    assert_well_formed(cue)
    assert len(cue.visemes) > 1000


def test_worst_case_short_segments_stay_well_formed():
    # Many tiny consonant clusters at the fastest tone.
    cue = compute_cue("strengths twelfths " * 50, "excited")
    assert_well_formed(cue)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_well_formed_timeline(text):
    assert_well_formed(compute_cue(text))


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="ascii"), max_size=120),
    st.sampled_from(["neutral", "excited", "calm", "serious", "friendly", "playful", "??"]),
)
def test_any_ascii_text_and_tone_gives_a_well_formed_timeline(text, tone):
    assert_well_formed(compute_cue(text, tone))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["pa", "ma", "1", "12.5", "$3", "%", ",", ".", "x", "the"])))
def test_any_token_mix_gives_a_well_formed_timeline(parts):
    assert_well_formed(compute_cue(" ".join(parts), "excited"))

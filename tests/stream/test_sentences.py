"""Sentence segmentation of a streamed reply, and the markers in force per sentence."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.markers import MarkerParser, ParsedChunk, parse_markers
from services.stream.sentences import Sentence, SentenceAccumulator


def whole(reply: str) -> list[Sentence]:
    acc = SentenceAccumulator()
    return acc.feed(parse_markers(reply)) + acc.finish()


def streamed(deltas: list[str]) -> list[Sentence]:
    parser = MarkerParser()
    acc = SentenceAccumulator()
    sentences: list[Sentence] = []
    for delta in deltas:
        chunk = parser.feed(delta)
        if chunk is not None:
            sentences += acc.feed(chunk)
    chunk = parser.finish()
    if chunk is not None:
        sentences += acc.feed(chunk)
    return sentences + acc.finish()


def texts(reply: str) -> list[str]:
    return [s.text for s in whole(reply)]


# --- boundaries ------------------------------------------------------------------------------


def test_terminators_and_runs() -> None:
    assert texts("Hi! How are you? Fine. Really?! Well... Hmm… Ok") == [
        "Hi! ",
        "How are you? ",
        "Fine. ",
        "Really?! ",
        "Well... ",
        "Hmm… ",
        "Ok",
    ]


def test_offsets_cover_the_text() -> None:
    sentences = whole("[emotion:happy] Hi there!  How are you?")
    assert [(s.text, s.start, s.end) for s in sentences] == [
        ("Hi there!  ", 0, 11),
        ("How are you?", 11, 23),
    ]


@pytest.mark.parametrize(
    "reply",
    [
        "It costs 3.5 dollars.",
        "Pi is about 3.14159 or so.",
        "Ask Dr. Smith about it.",
        "Mr. and Mrs. Jones came.",
        "Fruit, e.g. apples, is good.",
        "Cats, i.e. small lions, purr.",
        "Visit example.com today.",
        "It is in the U.S. today.",
        "Talk to Prof. Lee vs. Dr. Kim.",
        "See fig. 3 for details.",
    ],
)
def test_no_split_on_decimals_and_abbreviations(reply: str) -> None:
    assert texts(reply) == [reply]


def test_no_abbreviation_match_on_ordinary_words() -> None:
    assert texts("I said no. Then I left.") == ["I said no. ", "Then I left."]
    assert texts("Buy apples, pears, etc. Then go.") == ["Buy apples, pears, etc. ", "Then go."]
    assert texts("I am 42. You are 7.") == ["I am 42. ", "You are 7."]


def test_closing_quotes_and_brackets_stay_with_their_sentence() -> None:
    assert texts('He said "Stop." Then he left.') == ['He said "Stop." ', "Then he left."]
    assert texts("(Really!) Yes.") == ["(Really!) ", "Yes."]


def test_line_breaks_end_sentences_and_list_numbers_do_not() -> None:
    assert texts("Options:\n1. Pizza\n2. Pasta\n\nPick one") == [
        "Options:\n",
        "1. Pizza\n",
        "2. Pasta\n\n",
        "Pick one",
    ]


def test_leading_whitespace_belongs_to_the_first_sentence() -> None:
    assert texts("\n\n  Hello. World") == ["\n\n  Hello. ", "World"]


def test_terminator_at_the_end_keeps_the_sentence_open() -> None:
    acc = SentenceAccumulator()
    assert acc.feed(ParsedChunk("It is 3.", "It is 3.", ())) == []
    assert acc.feed(ParsedChunk("5 km. ", "5 km. ", ())) == []  # whitespace may go on
    (sentence,) = acc.feed(ParsedChunk("Next", "Next", ()))
    assert sentence.text == "It is 3.5 km. "
    assert [s.text for s in acc.finish()] == ["Next"]


def test_question_mark_run_split_across_chunks() -> None:
    assert streamed(["Really?", "! Yes"]) == whole("Really?! Yes")
    assert [s.text for s in streamed(["Really?", "! Yes"])] == ["Really?! ", "Yes"]


def test_empty_and_whitespace_only_replies() -> None:
    assert whole("") == []
    assert whole("[gesture:wave]") == []
    assert texts("  ") == ["  "]


def test_accumulator_is_reusable_and_resets_markers_in_force() -> None:
    acc = SentenceAccumulator()
    acc.feed(parse_markers("[tone:calm][emotion:sad] Bye."))
    acc.finish()
    (sentence,) = acc.feed(parse_markers("Hi. ")) + acc.finish()
    assert sentence == Sentence("Hi. ", "neutral", "neutral", "", 0, 4)


# --- markers in force ---------------------------------------------------------------------


def test_tone_and_emotion_persist_gesture_does_not() -> None:
    sentences = whole(
        "[tone:friendly][emotion:happy][gesture:wave] Hi there! How are you? "
        "[emotion:concerned] You look tired. [gesture:nod] I see."
    )
    assert [(s.text, s.tone, s.emotion, s.gesture) for s in sentences] == [
        ("Hi there! ", "friendly", "happy", "wave"),
        ("How are you? ", "friendly", "happy", ""),
        ("You look tired. ", "friendly", "concerned", ""),
        ("I see.", "friendly", "concerned", "nod"),
    ]


def test_defaults_are_neutral() -> None:
    assert whole("Hello.") == [Sentence("Hello.", "neutral", "neutral", "", 0, 6)]


def test_marker_inside_a_sentence_applies_to_it() -> None:
    sentences = whole("Well [tone:serious] this matters. Okay.")
    assert [(s.text, s.tone) for s in sentences] == [
        ("Well this matters. ", "serious"),
        ("Okay.", "serious"),
    ]


def test_marker_right_after_a_terminator_belongs_to_the_next_sentence() -> None:
    sentences = whole("Great![emotion:sad] Sorry.[gesture:shrug] Anyway.")
    assert [(s.text, s.emotion, s.gesture) for s in sentences] == [
        ("Great! ", "neutral", ""),
        ("Sorry. ", "sad", ""),
        ("Anyway.", "sad", "shrug"),
    ]


def test_marker_just_before_the_terminator_belongs_to_its_sentence() -> None:
    sentences = whole("Hello [gesture:wave]! Bye.")
    assert [(s.text, s.gesture) for s in sentences] == [("Hello ! ", "wave"), ("Bye.", "")]


def test_first_gesture_of_a_sentence_wins() -> None:
    (sentence,) = whole("[gesture:wave] Hi [gesture:nod] there.")
    assert sentence.gesture == "wave"


def test_trailing_markers_belong_to_the_last_sentence() -> None:
    sentences = whole("See you! Bye! [gesture:wave][emotion:happy]")
    assert [(s.text, s.gesture, s.emotion) for s in sentences] == [
        ("See you! ", "", "neutral"),
        ("Bye! ", "wave", "happy"),
    ]


def test_last_marker_of_a_kind_wins() -> None:
    (sentence,) = whole("[emotion:happy] Good [emotion:excited] news!")
    assert sentence.emotion == "excited"


# --- properties -----------------------------------------------------------------------------

FRAGMENTS = [
    "Hello",
    "there",
    "Dr.",
    "e.g.",
    "3.5",
    "1.",
    " ",
    "  ",
    "\n",
    "\n\n",
    ".",
    "!",
    "?",
    "?!",
    "...",
    "…",
    '"',
    ")",
    "é",
    "[emotion:happy]",
    "[emotion:sad:0.4]",
    "[tone:calm]",
    "[gesture:wave]",
    "[gesture:nod,tone:serious]",
    "[pose:sitting]",
    "[1]",
    "[emo",
]

replies = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)


def split(reply: str, data: st.DataObject) -> list[str]:
    cuts = data.draw(st.sets(st.integers(0, len(reply)), max_size=max(1, len(reply))))
    bounds = [0, *sorted(cuts), len(reply)]
    return [reply[a:b] for a, b in itertools.pairwise(bounds)]


def assert_covers(sentences: list[Sentence], text: str) -> None:
    at = 0
    for sentence in sentences:
        assert sentence.start == at
        assert sentence.end > sentence.start
        assert text[sentence.start : sentence.end] == sentence.text
        at = sentence.end
    assert at == len(text)


@settings(max_examples=400, deadline=None)
@given(replies, st.data())
def test_sentences_cover_the_text_once_for_any_split(reply: str, data: st.DataObject) -> None:
    text = parse_markers(reply).text
    sentences = streamed(split(reply, data))
    assert_covers(sentences, text)
    assert sentences == whole(reply)


@settings(max_examples=400, deadline=None)
@given(replies, st.data())
def test_chunking_of_plain_text_does_not_change_sentences(reply: str, data: st.DataObject) -> None:
    # Feed the text in arbitrary pieces directly, independent of the marker parser.
    text = parse_markers(reply).text
    acc = SentenceAccumulator()
    sentences: list[Sentence] = []
    for piece in split(text, data):
        sentences += acc.feed(ParsedChunk(piece, piece, ()))
    sentences += acc.finish()
    assert_covers(sentences, text)
    assert [(s.text, s.start, s.end) for s in sentences] == [
        (s.text, s.start, s.end) for s in whole(text)
    ]


@settings(max_examples=200, deadline=None)
@given(replies)
def test_each_gesture_marker_lands_in_at_most_one_sentence(reply: str) -> None:
    chunk = parse_markers(reply)
    sentences = whole(reply)
    gestures = [m.value for m in chunk.markers if m.type.value == "gesture"]
    assigned = [s.gesture for s in sentences if s.gesture]
    # Each sentence shows the first gesture it owns; none is invented or repeated.
    remaining = list(gestures)
    for gesture in assigned:
        assert gesture in remaining
        remaining.remove(gesture)

"""Marker parsing: the rules one by one, then split-independence against a reference model."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.markers import (
    EMOTIONS,
    GESTURES,
    MARKER_KEYS,
    MAX_GROUP_LENGTH,
    POSES,
    TONES,
    VOCABULARY,
    Marker,
    MarkerParser,
    MarkerType,
    ParsedChunk,
    normalize_value,
    parse_markers,
    strip_markers,
)

E, G, T, P = MarkerType.EMOTION, MarkerType.GESTURE, MarkerType.TONE, MarkerType.POSE


def stream(deltas: list[str]) -> tuple[list[ParsedChunk], str, list[Marker]]:
    """Feed deltas; return the chunks, the joined text and the markers at absolute offsets."""
    parser = MarkerParser()
    chunks = [c for c in (*(parser.feed(d) for d in deltas), parser.finish()) if c is not None]
    text = ""
    markers: list[Marker] = []
    for chunk in chunks:
        markers.extend(
            Marker(m.type, m.value, m.intensity, m.offset + len(text)) for m in chunk.markers
        )
        text += chunk.text
    return chunks, text, markers


def values(chunk: ParsedChunk) -> list[tuple[MarkerType, str, float | None, int]]:
    return [(m.type, m.value, m.intensity, m.offset) for m in chunk.markers]


# --- vocabulary -------------------------------------------------------------------------


def test_vocabularies_are_exported_in_prompt_order() -> None:
    assert EMOTIONS[:3] == ("neutral", "happy", "sad")
    assert set(GESTURES) == {
        "wave",
        "nod",
        "shake_head",
        "point",
        "hand_raise",
        "thumbs_up",
        "shrug",
    }
    assert set(TONES) == {
        "neutral",
        "excited",
        "calm",
        "serious",
        "friendly",
        "concerned",
        "playful",
    }
    assert "leaning_forward" in POSES
    assert {"emotion", "gesture", "tone", "pose"} == MARKER_KEYS
    assert VOCABULARY[E] == frozenset(EMOTIONS)
    assert all(VOCABULARY[t] for t in MarkerType)


# --- grammar ----------------------------------------------------------------------------


def test_single_marker() -> None:
    chunk = parse_markers("[emotion:happy]Hello")
    assert chunk.text == "Hello"
    assert chunk.raw == "[emotion:happy]Hello"
    assert chunk.markers == (Marker(E, "happy", None, 0),)


def test_group_with_several_items_and_intensity() -> None:
    chunk = parse_markers("Sure[emotion:happy:0.8, gesture:nod,tone:friendly,pose:sitting]!")
    assert chunk.text == "Sure!"
    assert values(chunk) == [
        (E, "happy", 0.8, 4),
        (G, "nod", None, 4),
        (T, "friendly", None, 4),
        (P, "sitting", None, 4),
    ]


def test_all_four_keys_with_intensities_fit_the_length_bound() -> None:
    group = "emotion:thoughtful:0.75,gesture:thumbs_up:1,tone:concerned:0.5,pose:leaning_forward:1"
    assert len(group) <= MAX_GROUP_LENGTH
    assert len(parse_markers(f"[{group}]").markers) == 4


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("0.8", 0.8),
        ("1", 1.0),
        ("0", 0.0),
        (".5", 0.5),
        ("80%", 0.8),
        ("1.7", 1.0),  # clamped
        ("-0.2", 0.0),  # clamped
        ("150%", 1.0),
        ("high", None),  # invalid: marker kept, intensity dropped
        ("nan", None),
        ("1e3", None),
        ("0.5.1", None),
    ],
)
def test_intensity_is_clamped_or_dropped(token: str, expected: float | None) -> None:
    chunk = parse_markers(f"[emotion:sad:{token}]")
    assert chunk.text == ""
    assert values(chunk) == [(E, "sad", expected, 0)]


def test_spaces_and_case_around_parts() -> None:
    chunk = parse_markers("[ Emotion : HAPPY : 0.5 ,\tGesture:  Wave ]")
    assert values(chunk) == [(E, "happy", 0.5, 0), (G, "wave", None, 0)]


def test_stray_commas_are_ignored() -> None:
    assert values(parse_markers("[emotion:happy,]")) == [(E, "happy", None, 0)]
    assert values(parse_markers("[,gesture:nod,,]")) == [(G, "nod", None, 0)]


# --- normalization ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mtype", "written", "canonical"),
    [
        (E, "Joyful", "happy"),
        (E, "glad", "happy"),
        (E, "mad", "angry"),
        (E, "shocked", "surprised"),
        (E, "thinking", "thoughtful"),
        (E, "worried", "concerned"),
        (E, "relaxed", "calm"),
        (G, "thumbsup", "thumbs_up"),
        (G, "thumbs-up", "thumbs_up"),
        (G, "thumbs up", "thumbs_up"),
        (G, "ThumbsUp", "thumbs_up"),
        (G, "shake", "shake_head"),
        (G, "shake-head", "shake_head"),
        (G, "raise_hand", "hand_raise"),
        (G, "raise hand", "hand_raise"),
        (G, "nodding", "nod"),
        (G, "waving", "wave"),
        (T, " Friendly ", "friendly"),
        (T, "relaxed", "calm"),
        (P, "leaning forward", "leaning_forward"),
        (P, "arms__crossed", "arms_crossed"),
        (P, "relaxed", "relaxed"),
        (E, "joyous", None),
        (G, "dance", None),
        (T, "happy", None),
    ],
)
def test_normalize_value(mtype: MarkerType, written: str, canonical: str | None) -> None:
    assert normalize_value(mtype, written) == canonical


def test_every_vocabulary_value_normalizes_to_itself() -> None:
    for mtype, vocabulary in VOCABULARY.items():
        for value in vocabulary:
            assert normalize_value(mtype, value) == value
            assert normalize_value(mtype, value.upper().replace("_", " ")) == value


def test_multi_word_value_after_known_key() -> None:
    chunk = parse_markers("[gesture: thumbs up] Great")
    assert chunk.text == "Great"
    assert values(chunk) == [(G, "thumbs_up", None, 0)]


# --- unknown keys and values -------------------------------------------------------------


@pytest.mark.parametrize(
    "group",
    [
        "[emotion:joyous]",
        "[mood:happy]",
        "[emotion:happy2]",
        "[gesture:dance:0.4]",
        "[tone:serious discussion]",
        "[emotion:häppy]",
        "[Edit: typo]",  # word:word is marker syntax, by rule
    ],
)
def test_unknown_items_are_dropped_but_leave_the_text(group: str) -> None:
    chunk = parse_markers(f"A {group} b")
    assert chunk.text == "A b"
    assert chunk.markers == ()
    assert chunk.raw == f"A {group} b"


def test_unknown_items_do_not_drop_known_ones() -> None:
    chunk = parse_markers("[mood:happy,emotion:sad,gesture:dance,tone:calm]x")
    assert chunk.text == "x"
    assert values(chunk) == [(E, "sad", None, 0), (T, "calm", None, 0)]


# --- ordinary brackets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[1]",
        "[sic]",
        "a[i]",
        "[see note]",
        "[link](url)",
        "[Note: see below]",
        "[]",
        "[ ]",
        "[,]",
        "[:]",
        "[emotion:]",
        "[:happy]",
        "[emotion]",
        "[1:2]",
        "[10:30]",
        "[emotion:happy:0.8:1]",
        "[emotion:happy;gesture:wave]",
        "[emotion:\nhappy]",
        "[émotion heureuse]",
        "[",
        "]",
        "][",
        "x[",
        "[emotion:happy",
        "emotion:happy]",
        "array[i][j] = 2",
        f"[emotion:{'x' * MAX_GROUP_LENGTH}]",
    ],
)
def test_ordinary_brackets_stay_text(text: str) -> None:
    chunk = parse_markers(text)
    assert chunk == ParsedChunk(text, text, ())
    assert stream(list(text))[1] == text


def test_nested_and_unbalanced_brackets_keep_their_text() -> None:
    chunk = parse_markers("[[emotion:happy]]")
    assert chunk.text == "[]"
    assert values(chunk) == [(E, "happy", None, 1)]
    chunk = parse_markers("[see [gesture:wave] here]")
    assert chunk.text == "[see here]"
    assert values(chunk) == [(G, "wave", None, 5)]
    chunk = parse_markers("a [b [emotion:sad]c")
    assert chunk.text == "a [b c"


def test_removed_group_is_not_rejoined_with_surrounding_text() -> None:
    # The pieces left and right of a removed group are never parsed together again.
    chunk = parse_markers("[emo[gesture:nod]tion:happy]")
    assert chunk.text == "[emotion:happy]"
    assert values(chunk) == [(G, "nod", None, 4)]


# --- whitespace ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text", "offsets"),
    [
        ("Hi [emotion:happy] there", "Hi there", [3]),
        ("Hi[emotion:happy] there", "Hi there", [2]),
        ("Hi [emotion:happy]there", "Hi there", [3]),
        ("Hi[emotion:happy]there", "Hithere", [2]),
        ("[emotion:happy] Hello", "Hello", [0]),
        ("[emotion:happy]   \n Hello", "Hello", [0]),
        ("Bye [gesture:wave]", "Bye ", [4]),
        ("Bye [gesture:wave] ", "Bye ", [4]),
        ("Hi [emotion:happy] [gesture:wave] there", "Hi there", [3, 3]),
        ("Hi[emotion:happy] [gesture:wave] there", "Hi there", [2, 3]),
        ("Hi  [emotion:happy]  there", "Hi  there", [4]),
        ("One.\n\n[tone:calm]\n\nTwo.", "One.\n\nTwo.", [6]),
        ("Hi [1] there", "Hi [1] there", []),
        (" [emotion:happy] x", " x", [1]),
    ],
)
def test_whitespace_rule(raw: str, text: str, offsets: list[int]) -> None:
    chunk = parse_markers(raw)
    assert chunk.text == text
    assert [m.offset for m in chunk.markers] == offsets
    for size in (1, 2, 3, 5):
        deltas = [raw[i : i + size] for i in range(0, len(raw), size)]
        _, streamed, markers = stream(deltas)
        assert streamed == text
        assert [m.offset for m in markers] == offsets


# --- streaming ----------------------------------------------------------------------------


def test_marker_split_across_deltas() -> None:
    parser = MarkerParser()
    assert parser.feed("Hi [emo") == ParsedChunk("Hi ", "Hi ", ())
    assert parser.feed("tion:ha") is None
    chunk = parser.feed("ppy] there")
    assert chunk == ParsedChunk("there", "[emotion:happy] there", (Marker(E, "happy", None, 0),))
    assert parser.finish() is None


def test_marker_only_chunk_has_empty_text() -> None:
    parser = MarkerParser()
    assert parser.feed("[gesture:wave]") == ParsedChunk(
        "", "[gesture:wave]", (Marker(G, "wave", None, 0),)
    )


def test_whitespace_swallowed_across_deltas_is_carried_in_raw() -> None:
    parser = MarkerParser()
    assert parser.feed("[tone:calm]") == ParsedChunk(
        "", "[tone:calm]", (Marker(T, "calm", None, 0),)
    )
    assert parser.feed("  ") is None
    assert parser.feed(" \nHi") == ParsedChunk("Hi", "   \nHi", ())
    assert parser.finish() is None


def test_finish_returns_raw_only_chunk_for_trailing_swallowed_whitespace() -> None:
    parser = MarkerParser()
    assert parser.feed("[tone:calm]") is not None
    assert parser.feed("   ") is None
    assert parser.finish() == ParsedChunk("", "   ", ())


def test_non_marker_bracket_is_released_as_soon_as_it_is_certain() -> None:
    parser = MarkerParser()
    assert parser.feed("see [1") == ParsedChunk("see [1", "see [1", ())  # a digit can't start a key
    assert parser.feed("] and [") == ParsedChunk("] and ", "] and ", ())
    assert parser.feed("sic") is None  # could still become "[sic:...]"
    assert parser.feed("]") == ParsedChunk("[sic]", "[sic]", ())
    assert parser.feed(" [Note: see") == ParsedChunk(" ", " ", ())
    # Two words after an unknown key can never be a marker group.
    assert parser.feed(" below") == ParsedChunk("[Note: see below", "[Note: see below", ())


@pytest.mark.parametrize(
    ("held", "release"),
    [
        ("[emotion", "\n"),  # a newline cannot be in a marker group
        ("[emotion", "["),  # neither can a second "["
        ("[emotion:", "!"),
        ("[emotion:happy:0.8", " x"),
    ],
)
def test_held_bracket_released_when_it_cannot_be_a_marker(held: str, release: str) -> None:
    parser = MarkerParser()
    assert parser.feed(held) is None
    chunk = parser.feed(release)
    assert chunk is not None
    assert chunk.text.startswith(held)


def test_multi_word_value_after_known_key_is_held() -> None:
    parser = MarkerParser()
    assert parser.feed("[gesture:thumbs") is None
    assert parser.feed(" up") is None
    assert parser.feed("]") == ParsedChunk(
        "", "[gesture:thumbs up]", (Marker(G, "thumbs_up", None, 0),)
    )


def test_group_of_exactly_the_length_bound_is_held_until_closed() -> None:
    content = "emotion:happy" + "," * (MAX_GROUP_LENGTH - len("emotion:happy"))
    parser = MarkerParser()
    assert parser.feed("[" + content) is None
    assert parser.feed("]") == ParsedChunk("", f"[{content}]", (Marker(E, "happy", None, 0),))
    assert parse_markers(f"[{content},]").text == f"[{content},]"


def test_held_bracket_released_after_length_bound() -> None:
    parser = MarkerParser()
    assert parser.feed("[emotion:" + "a" * (MAX_GROUP_LENGTH - 9)) is None
    chunk = parser.feed("aa")
    assert chunk is not None
    assert chunk.text == "[emotion:" + "a" * (MAX_GROUP_LENGTH - 7)


def test_unclosed_bracket_released_by_finish() -> None:
    parser = MarkerParser()
    assert parser.feed("Wait [emotion:hap") == ParsedChunk("Wait ", "Wait ", ())
    assert parser.finish() == ParsedChunk("[emotion:hap", "[emotion:hap", ())


def test_parser_is_reusable_after_finish() -> None:
    parser = MarkerParser()
    parser.feed("[tone:calm] [emo")
    parser.finish()
    assert parser.feed("[emotion:sad] x") == ParsedChunk(
        "x", "[emotion:sad] x", (Marker(E, "sad", None, 0),)
    )


def test_empty_input() -> None:
    parser = MarkerParser()
    assert parser.feed("") is None
    assert parser.finish() is None
    assert parse_markers("") == ParsedChunk("", "", ())
    assert strip_markers("") == ""


def test_strip_markers() -> None:
    assert strip_markers("[emotion:happy] Hi [gesture:wave] there [1].") == "Hi there [1]."


# --- properties -----------------------------------------------------------------------------

_SPACE_OR_TAB = re.compile(r"[ \t]+")


def _is_letter(c: str) -> bool:
    return c.isalnum() and not c.isdecimal()


def _is_key(s: str) -> bool:
    return bool(s) and _is_letter(s[0]) and all(c.isalnum() or c == "_" for c in s)


def _is_word(s: str) -> bool:
    return bool(s) and _is_letter(s[0]) and all(c.isalnum() or c in "_-" for c in s)


def _reference_group(content: str) -> list[tuple[MarkerType, str, float | None]] | None:
    """The documented group rule, restated with string methods instead of the parser's regex."""
    found: list[tuple[MarkerType, str, float | None]] = []
    seen = False
    for part in content.split(","):
        part = part.strip(" \t")
        if not part:
            continue
        pieces = part.split(":")
        if len(pieces) not in (2, 3):
            return None
        key = pieces[0].strip(" \t")
        words = _SPACE_OR_TAB.split(pieces[1].strip(" \t"))
        if not _is_key(key) or not all(_is_word(w) for w in words):
            return None
        intensity: float | None = None
        if len(pieces) == 3:
            token = pieces[2].strip(" \t")
            if not token or not all(c.isalnum() or c in "_.+%-" for c in token):
                return None
            intensity = parse_markers(f"[emotion:calm:{token}]").markers[0].intensity
        seen = True
        if key.lower() not in MARKER_KEYS:
            if len(words) > 1:
                return None
            continue
        mtype = MarkerType(key.lower())
        value = normalize_value(mtype, " ".join(words))
        if value is not None:
            found.append((mtype, value, intensity))
    return found if seen else None


_CANDIDATE_GROUP = re.compile(rf"\[([^\[\]]{{0,{MAX_GROUP_LENGTH}}})\]")


def _reference_parse(s: str) -> tuple[str, list[Marker]]:
    """Leftmost bracket pairs with no bracket inside; whitespace rule as documented."""
    text = ""
    markers: list[Marker] = []
    pos = 0
    for match in _CANDIDATE_GROUP.finditer(s):
        items = _reference_group(match.group(1))
        if items is None:
            continue
        text += s[pos : match.start()]
        markers.extend(Marker(t, v, i, len(text)) for t, v, i in items)
        pos = match.end()
        if not text or text[-1].isspace():
            while pos < len(s) and s[pos].isspace():
                pos += 1
    return text + s[pos:], markers


FRAGMENTS = [
    "Hello",
    "world",
    "I",
    " ",
    "  ",
    "\n",
    "\t",
    ".",
    "!",
    "?",
    ",",
    ":",
    "3.5",
    "é",
    "日本語",
    "👋",
    "ß",
    "[emotion:happy]",
    "[emotion:happy:0.8]",
    "[Emotion : Joyful ]",
    "[gesture:thumbs up]",
    "[gesture:thumbs-up,tone:calm]",
    "[emotion:happy:1.7]",
    "[emotion:happy:high]",
    "[emotion:calm:80%]",
    "[pose:leaning forward]",
    "[mood:happy]",
    "[emotion:joyous]",
    "[emotion:happy,]",
    "[emotion:häppy]",
    "[1]",
    "[sic]",
    "a[i]",
    "[see note]",
    "[link](url)",
    "[Note: see below]",
    "[]",
    "[",
    "]",
    "[[",
    "]]",
    "[emo",
    "tion:ha",
    "ppy]",
    "[emotion:",
    "[tone",
    ":calm]",
    "[emotion:\nhappy]",
    "[" + "a" * (MAX_GROUP_LENGTH + 3) + "]",
    "[emotion:" + "x" * (MAX_GROUP_LENGTH + 3),
    "[emotion:" + "x" * (MAX_GROUP_LENGTH - 9) + "]",
    # Markers between runs of whitespace exercise the whitespace rule across deltas.
    " [emotion:sad] ",
    "[tone:calm]   ",
    " \n ",
    "   ",
]

replies = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(alphabet="[]:,.-_ %\n\tetmoinhapy0.8é", max_size=12),
    ),
    max_size=40,
).map("".join)


def split(reply: str, data: st.DataObject) -> list[str]:
    """Random cut points, or runs of small deltas like a provider's tokens."""
    if data.draw(st.booleans()):
        cuts = data.draw(st.sets(st.integers(0, len(reply)), max_size=max(1, len(reply))))
    else:
        sizes = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=8))
        cuts, at = set(), 0
        while at < len(reply):
            for size in sizes:
                at += size
                cuts.add(min(at, len(reply)))
    bounds = [0, *sorted(cuts), len(reply)]
    return [reply[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=500, deadline=None)
@given(replies, st.data())
def test_any_split_gives_the_whole_string_result(reply: str, data: st.DataObject) -> None:
    deltas = split(reply, data)
    whole = parse_markers(reply)
    chunks, text, markers = stream(deltas)
    assert text == whole.text
    assert markers == list(whole.markers)
    assert "".join(c.raw for c in chunks) == reply
    for chunk in chunks:
        assert chunk.text or chunk.markers or chunk is chunks[-1]
        assert all(0 <= m.offset <= len(chunk.text) for m in chunk.markers)


@settings(max_examples=500, deadline=None)
@given(replies)
def test_whole_string_matches_the_reference_model(reply: str) -> None:
    chunk = parse_markers(reply)
    text, markers = _reference_parse(reply)
    assert chunk.text == text
    assert list(chunk.markers) == markers
    assert chunk.raw == reply


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS[:17]), max_size=20), st.data())
def test_marker_never_eats_text(words: list[str], data: st.DataObject) -> None:
    # Interleave plain text with valid marker groups: exactly the groups (and whitespace
    # after a group that follows whitespace) disappear; every other character survives.
    groups = ["[emotion:happy]", "[gesture:wave,tone:calm]", "[pose:sitting:0.3]"]
    pieces: list[str] = []
    for word in words:
        if data.draw(st.booleans()):
            pieces.append(data.draw(st.sampled_from(groups)))
        pieces.append(word)
    reply = "".join(pieces)
    chunk = parse_markers(reply)
    assert all(g not in chunk.text for g in groups)
    assert chunk.text.replace(" ", "").replace("\n", "").replace("\t", "") == "".join(
        words
    ).replace(" ", "").replace("\n", "").replace("\t", "")
    assert "  " not in chunk.text or "  " in "".join(words)

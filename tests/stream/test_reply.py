"""The delivered reply: cutting at played_chars without cutting a marker, and the cap."""

from __future__ import annotations

import pytest

from services.markers import MarkerParser, strip_markers
from services.stream.reply import DeliveredReply, cap_delta, raw_offset

REPLY = "[emotion:happy] Hello there. [gesture:wave,tone:calm] How are [1] you?"


def delivered(deltas: list[str]) -> DeliveredReply:
    parser = MarkerParser()
    reply = DeliveredReply()
    for d in deltas:
        chunk = parser.feed(d)
        if chunk is not None:
            reply.add(chunk)
    return reply


@pytest.mark.parametrize("split", [1, 3, 7, 100])
def test_cut_maps_text_offsets_to_raw_offsets(split: int) -> None:
    reply = delivered([REPLY[i : i + split] for i in range(0, len(REPLY), split)])
    text = reply.text
    assert text == strip_markers(REPLY)
    for n in range(1, len(text)):
        content, cut_text = reply.cut(n)
        assert cut_text == text[:n]
        assert strip_markers(content).startswith(cut_text.rstrip())
        # Never half a marker: every "[" that starts a marker group is closed.
        assert content.count("[emotion") == content.count("happy]")
        assert "[gesture" not in content or "calm]" in content


def test_cut_examples() -> None:
    reply = delivered([REPLY])
    assert reply.cut(0) == (reply.content, reply.text)
    assert reply.cut(10_000) == (reply.content, reply.text)
    assert reply.cut(len("Hello there. ")) == ("[emotion:happy] Hello there. ", "Hello there. ")
    assert reply.cut(len("Hello there. Ho")) == (
        "[emotion:happy] Hello there. [gesture:wave,tone:calm] Ho",
        "Hello there. Ho",
    )
    assert raw_offset("[tone:calm] abc", 1) == len("[tone:calm] a")


def test_cap() -> None:
    assert cap_delta("abc", 0, limit=5) == ("abc", False)
    assert cap_delta("abcdef", 2, limit=5) == ("abc", True)
    assert cap_delta("x", 5, limit=5) == ("", True)

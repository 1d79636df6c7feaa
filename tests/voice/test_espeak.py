# ruff: noqa: RUF001
"""The embedded engine: real espeak-ng audio, with mouth keys and word marks from its events."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import struct
import threading

import pytest

from services.speech.visemes import VISEMES
from services.voice.engines.base import Audio, Mouth, Prosody, Word
from services.voice.engines.espeak import EspeakEngine
from services.voice.ipa import ipa_sounds, ipa_visemes
from services.voice.segments import segments


def rms(pcm: bytes) -> float:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


async def speak(text: str, **kw: object) -> tuple[bytes, list[Mouth], list[Word], float]:
    engine = EspeakEngine()
    prosody = kw.pop("prosody", Prosody())
    assert isinstance(prosody, Prosody)
    voice = str(kw.pop("voice", "en-us"))
    pcm = b""
    mouths: list[Mouth] = []
    words: list[Word] = []
    async for piece in engine.synthesize(text, voice=voice, prosody=prosody):
        if isinstance(piece, Audio):
            pcm += piece.pcm
        elif isinstance(piece, Mouth):
            mouths.append(piece)
        else:
            words.append(piece)
    return pcm, mouths, words, len(pcm) / 2 * 1000 / engine.sample_rate


async def test_speaks_real_audio_with_exact_marks() -> None:
    text = "Hello there, my friend! The quick brown fox jumps over the lazy dog."
    pcm, mouths, words, duration_ms = await speak(text)
    assert EspeakEngine().sample_rate == 22050
    assert 2500 < duration_ms < 8000
    assert rms(pcm) > 500  # speech, not silence
    # Word marks: in order, within the audio, and covering every word of the text.
    assert [text[w.offset : w.offset + w.length] for w in words] == re.findall(r"[\w']+", text)
    assert all(a.start_ms <= b.start_ms for a, b in itertools.pairwise(words))
    assert all(w.start_ms <= w.end_ms <= duration_ms for w in words)
    # Mouth keys: Oculus names, strictly increasing, within the audio, closing with silence.
    assert {m.viseme for m in mouths} <= set(VISEMES)
    assert all(a.time_ms < b.time_ms for a, b in itertools.pairwise(mouths))
    assert mouths[-1].viseme == "sil" and mouths[-1].time_ms <= duration_ms
    assert {"PP", "aa", "FF"} <= {m.viseme for m in mouths}  # my, brown, fox, ...
    # The lips close for "my" while the word "my" is heard.
    my = next(w for w in words if text[w.offset : w.offset + w.length] == "my")
    assert any(m.viseme == "PP" and my.start_ms <= m.time_ms < my.end_ms for m in mouths)


async def test_audio_is_loud_where_words_are_and_quiet_in_pauses() -> None:
    text = "One. Two."
    pcm, _, words, _ = await speak(text)
    rate = 22050
    first, second = words
    gap = pcm[int(first.end_ms * rate / 1000) * 2 + 2000 : int(second.start_ms * rate / 1000) * 2]
    word = pcm[int(first.start_ms * rate / 1000) * 2 : int(first.end_ms * rate / 1000) * 2]
    assert rms(word) > 5 * max(1.0, rms(gap))


async def test_offsets_count_characters_not_bytes() -> None:
    text = "Café naïve, hello."
    _, _, words, _ = await speak(text)
    assert [text[w.offset : w.offset + w.length] for w in words] == ["Café", "naïve", "hello"]


async def test_rate_and_pitch_change_the_audio() -> None:
    text = "This sentence is spoken at two speeds."
    _, _, _, normal = await speak(text)
    _, _, _, fast = await speak(text, prosody=Prosody(rate=1.5, pitch=1.2))
    assert fast < normal * 0.8


async def test_voices_and_variants() -> None:
    engine = EspeakEngine()
    voices = await engine.voices()
    ids = {v.voice_id for v in voices}
    assert {"en-us", "en-gb", "fr-fr", "de"} <= ids
    assert all(v.engine == "espeak" and v.name for v in voices)
    assert await engine.has_voice("en-us+f3")
    assert not await engine.has_voice("no-such-voice")


async def test_synthesis_runs_off_the_event_loop_one_at_a_time() -> None:
    engine = EspeakEngine()
    loop_thread = threading.get_ident()
    seen: set[int] = set()
    original = engine._lib.synth

    def spy(*args: object) -> None:
        seen.add(threading.get_ident())
        original(*args)  # type: ignore[arg-type]

    engine._lib.synth = spy  # type: ignore[method-assign]
    try:
        texts = [f"Sentence number {n} is spoken now." for n in range(6)]

        async def one(t: str) -> int:
            return sum(
                [
                    len(p.pcm)
                    async for p in engine.synthesize(t, voice="en-us", prosody=Prosody())
                    if isinstance(p, Audio)
                ]
            )

        sizes = await asyncio.gather(*(one(t) for t in texts))
    finally:
        engine._lib.synth = original  # type: ignore[method-assign]
    assert loop_thread not in seen and len(seen) == 1
    assert all(s > 10_000 for s in sizes)


def test_ipa_maps_to_oculus_visemes() -> None:
    assert ipa_sounds("ˈaɪ") == [("AA", "1"), ("IH", "1")]
    assert [v for _, v, _ in ipa_visemes("ˈaɪ")] == ["aa", "I"]
    assert [v for _, v, _ in ipa_visemes("tʃ")] == ["CH"]
    assert [v for _, v, _ in ipa_visemes("ˈɛɹ")] == ["E", "RR"]
    assert ipa_visemes("") == [(0.0, "sil", 1.0)]
    assert [v for _, v, _ in ipa_visemes("h", "O")] == ["O"]  # /h/ borrows the next shape


@pytest.mark.parametrize(
    "text",
    ["Hello there! How are you?  I am fine.\nNo end", "x" * 950, "a " * 500, "   ", "3.5 cats."],
)
def test_segments_cover_the_text(text: str) -> None:
    parts = segments(text, max_chars=400)
    assert all(0 < len(p) <= 400 for _, p in parts)
    assert "".join(p for _, p in parts).strip() == text.strip() or not text.strip()
    for (o1, p1), (o2, _) in itertools.pairwise(parts):
        assert o1 + len(p1) == o2 or not text[o1 + len(p1) : o2].strip()
    assert all(text[o : o + len(p)] == p for o, p in parts)

"""Throughput of the marker parser on marker-rich replies.

Run from the repository root: ``python bench/bench_markers.py [--mb 4] [--seed 7]``. Prints one
JSON line with MB/s (of raw reply input) for whole replies and for replies streamed as
deltas of about 4 characters (LLM token size) and about 32 characters (batched deltas).
``make bench`` reports the same measurement as figure (f).
A benchmark with a report, not a timed test.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.markers import (
    EMOTIONS,
    GESTURES,
    POSES,
    TONES,
    MarkerParser,
    parse_markers,
)

_SAMPLE = (
    "I think that is a great idea and we could try it together tomorrow morning if you like "
    "the weather looks nice so let us go outside for a walk near the river honestly "
    "you know what I mean right it costs about 3.5 dollars per person see Dr. Smith"
)
WORDS = _SAMPLE.split()
ODD_BRACKETS = ("[1]", "[sic]", "a[i]", "[see note]", "[link](url)", "[Note: see below]")


def make_reply(rng: random.Random, target_chars: int) -> str:
    """One reply: sentences with a marker group every few words, some of them unusual."""
    parts: list[str] = []
    size = 0
    while size < target_chars:
        roll = rng.random()
        if roll < 0.10:
            items = [f"emotion:{rng.choice(EMOTIONS)}"]
            if rng.random() < 0.5:
                items[0] += f":{rng.random():.2f}"
            if rng.random() < 0.5:
                items.append(f"gesture:{rng.choice(GESTURES)}")
            if rng.random() < 0.3:
                items.append(f"tone:{rng.choice(TONES)}")
            if rng.random() < 0.1:
                items.append(f"pose:{rng.choice(POSES)}")
            piece = "[" + ",".join(items) + "]"
        elif roll < 0.13:
            piece = rng.choice(("[emotion:joyous]", "[mood:happy]", "[Gesture: Thumbs Up]"))
        elif roll < 0.15:
            piece = rng.choice(ODD_BRACKETS)
        elif roll < 0.25:
            piece = rng.choice(WORDS) + rng.choice((".", "!", "?", ","))
        else:
            piece = rng.choice(WORDS)
        parts.append(piece)
        size += len(piece) + 1
    return " ".join(parts)


def split(reply: str, rng: random.Random, mean: int) -> list[str]:
    deltas: list[str] = []
    at = 0
    while at < len(reply):
        step = rng.randint(1, 2 * mean - 1)
        deltas.append(reply[at : at + step])
        at += step
    return deltas


def run_whole(replies: list[str]) -> None:
    for reply in replies:
        parse_markers(reply)


def run_streamed(streams: list[list[str]]) -> None:
    parser = MarkerParser()
    for deltas in streams:
        for delta in deltas:
            parser.feed(delta)
        parser.finish()


def best_seconds(fn: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure(mb: float = 4.0, seed: int = 7, repeat: int = 5) -> dict[str, object]:
    """MB/s (of raw reply input) for whole replies and for 4- and 32-character deltas."""
    rng = random.Random(seed)
    replies: list[str] = []
    total = 0
    while total < mb * 1_000_000:
        reply = make_reply(rng, rng.randint(200, 2000))
        replies.append(reply)
        total += len(reply.encode())
    corpus_mb = total / 1_000_000
    groups = sum(r.count("[") for r in replies)
    markers = sum(len(parse_markers(r).markers) for r in replies)
    tokens = [split(r, rng, 4) for r in replies]
    batched = [split(r, rng, 32) for r in replies]

    whole_s = best_seconds(lambda: run_whole(replies), repeat)
    tokens_s = best_seconds(lambda: run_streamed(tokens), repeat)
    batched_s = best_seconds(lambda: run_streamed(batched), repeat)
    return {
        "bench": "markers",
        "python": platform.python_version(),
        "corpus_mb": round(corpus_mb, 3),
        "replies": len(replies),
        "brackets_per_kb": round(groups / (total / 1000), 1),
        "markers": markers,
        "whole_mb_s": round(corpus_mb / whole_s, 1),
        "stream_4char_deltas_mb_s": round(corpus_mb / tokens_s, 1),
        "stream_32char_deltas_mb_s": round(corpus_mb / batched_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=float, default=4.0, help="corpus size in MB (default 4)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=5, help="best of N runs (default 5)")
    args = ap.parse_args()
    print(json.dumps(measure(args.mb, args.seed, args.repeat)))


if __name__ == "__main__":
    main()

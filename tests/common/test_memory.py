"""Freed memory goes back to the OS after a wave of closes, not on every close."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from services.common.memory import ReleaseAfterDrop, release_freed_memory


def test_release_freed_memory_runs_on_glibc() -> None:
    assert release_freed_memory() is True  # this platform's C library is glibc


async def test_releases_once_after_the_count_halves_and_settles() -> None:
    calls: list[int] = []
    tracker = ReleaseAfterDrop(min_drop=10, delay_s=0.05, release=lambda: calls.append(1) or True)
    for n in range(1, 41):
        tracker.update(n)
    for n in range(39, 24, -1):  # 40 -> 25: not half yet
        tracker.update(n)
    await asyncio.sleep(0.1)
    assert calls == []
    for n in range(24, 4, -1):  # down to 5: half and at least 10 fewer
        tracker.update(n)
    await asyncio.sleep(0.1)
    assert calls == [1]
    assert tracker.releases == 1
    tracker.update(4)  # a further small drop from the new peak (5) does not release again
    await asyncio.sleep(0.1)
    assert calls == [1]


async def test_a_new_peak_cancels_a_pending_release() -> None:
    calls: list[int] = []
    tracker = ReleaseAfterDrop(min_drop=2, delay_s=0.1, release=lambda: calls.append(1) or True)
    tracker.update(10)
    tracker.update(2)
    tracker.update(11)
    await asyncio.sleep(0.2)
    assert calls == []
    tracker.close()


async def test_small_counts_never_release() -> None:
    calls: list[int] = []
    tracker = ReleaseAfterDrop(min_drop=100, delay_s=0.01, release=lambda: calls.append(1) or True)
    for n in (50, 0):
        tracker.update(n)
    await asyncio.sleep(0.05)
    assert calls == []


def test_startup_objects_are_kept_out_of_every_collection() -> None:
    # In a child process: freezing is for the life of a process.
    script = """
import gc
from services.speech import lookup, warm_up
from services.common.memory import freeze_startup_objects
warm_up()
frozen = freeze_startup_objects()
tracked = len(gc.get_objects())
later = [[i] for i in range(1000)]
print(frozen, tracked, len(gc.get_objects()) - tracked, lookup("hello") is not None)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    frozen, tracked, grown, works = int(out[0]), int(out[1]), int(out[2]), out[3]
    assert frozen > 130_000  # the pronouncing dictionary's entries among them
    assert tracked < 1_000  # what a full collection still walks
    assert grown >= 1_000  # objects made later are collected as usual
    assert works == "True"

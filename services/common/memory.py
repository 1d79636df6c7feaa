"""Giving memory back to the operating system after a burst of work has gone.

CPython frees its own small-object arenas when they empty, but the C allocator (glibc's
malloc, used by gRPC's core and by CPython for larger blocks) keeps freed pages for reuse.
After many streams close, `malloc_trim` hands those pages back, so a replica's RSS falls
back towards where it was instead of staying at its peak.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("arconv.memory")


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_TRIM = _load_trim()


def release_freed_memory() -> bool:
    """Collects garbage cycles (closed streams leave some: cancelled tasks, their tracebacks
    and frames) and returns freed C heap pages to the OS (bench figure (d), RSS after
    close); False where the C library cannot
    (not glibc)."""
    gc.collect()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def freeze_startup_objects() -> int:
    """Moves everything alive now (modules, the pronouncing dictionary, settings, clients)
    out of the garbage collector's sight; returns how many objects that was.

    Called once a service has started and before it serves. Those objects live as long as
    the process, but a full collection would still walk every one of them: with the CMU
    dictionary loaded that is a pause of about a tenth of a second in the event loop, in
    the middle of someone's reply. Objects made later are collected as usual (bench figure
    (b), p99 ms).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class ReleaseAfterDrop:
    """Calls `release` once a count (open streams, say) has dropped to half its peak or less,
    by at least `min_drop`, and stayed there for `delay_s`."""

    def __init__(
        self,
        *,
        min_drop: int = 100,
        delay_s: float = 0.5,
        release: Callable[[], bool] = release_freed_memory,
    ) -> None:
        self._min_drop = min_drop
        self._delay_s = delay_s
        self._release = release
        self._peak = 0
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self.releases = 0

    def update(self, count: int) -> None:
        self._count = count
        if count > self._peak:
            self._peak = count
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if (
            self._timer is None
            and self._peak - count >= self._min_drop
            and count <= self._peak // 2
        ):
            self._timer = asyncio.get_running_loop().call_later(self._delay_s, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._peak = self._count
        if self._release():
            self.releases += 1
            log.info("returned freed memory to the OS", extra={"fields": {"open": self._count}})

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

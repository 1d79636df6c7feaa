"""Small helpers: statistics, free ports, the machine description, interleaved rounds."""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import platform
import statistics
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Series:
    """One figure's value per round: median and min-max over the rounds."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    def summary(self) -> dict[str, Any]:
        vals = [v for v in self.values if v == v]
        if not vals:
            return {"median": None, "min": None, "max": None, "rounds": []}
        return {
            "median": statistics.median(vals),
            "min": min(vals),
            "max": max(vals),
            "rounds": [round(v, 6) for v in self.values],
        }


async def interleave(
    rounds: int, first: Callable[[int], Awaitable[None]], second: Callable[[int], Awaitable[None]]
) -> None:
    """Runs `first` and `second` once per round, swapping their order every round."""
    for i in range(rounds):
        order = (first, second) if i % 2 == 0 else (second, first)
        for step in order:
            await step(i)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import grpc

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in load],
    }


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def client_gc_paused() -> Iterator[None]:
    """No garbage collection in this process (the client) while a measurement runs.

    The client holds every turn it measured; a full collection over them stopped its event
    loop for 40 to 70 ms in a round, which showed as server latency. Cycles are collected
    between measurements instead; the servers collect as they always do.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()

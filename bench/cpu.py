"""CPU time by process over a measurement: where each chunk or call spends the machine.

On a machine whose cores the client, the services, PostgreSQL and Redis share, a rate is
bound by the CPU time that one unit of work costs all of them together. Reading each
process's CPU time (Linux /proc) around a measurement tells that cost per unit, per process.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

_HZ = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _HZ


def _by_name(names: tuple[str, ...]) -> float:
    """CPU seconds of every process whose command name starts with one of `names` (the
    PostgreSQL backends of all connections, the Redis server)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm.startswith(names):
                total += process_cpu_s(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


class CpuMeter:
    """CPU seconds of named processes, this one (the client) and the database servers."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = dict(pids)

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pid in self._pids.items():
            try:
                out[name] = process_cpu_s(pid)
            except OSError:
                out[name] = 0.0
        t = os.times()
        out["client"] = t.user + t.system
        out["postgresql"] = _by_name(("postgres",))
        out["redis"] = _by_name(("redis-server",))
        return out

    @staticmethod
    def per_unit(
        before: dict[str, float], after: dict[str, float], units: float
    ) -> dict[str, float]:
        """Microseconds of CPU per unit of work by process, with their "total"."""
        if units <= 0:
            return {k: 0.0 for k in (*before, "total")}
        out = {k: 1e6 * max(0.0, after[k] - before[k]) / units for k in before}
        out["total"] = sum(out.values())
        return out


def summarize(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Median per process over rounds (of per_unit results), keeping processes that matter."""
    keys = rounds[0].keys() if rounds else ()
    med = {k: statistics.median(r[k] for r in rounds) for k in keys}
    return {k: round(v, 1) for k, v in med.items() if v >= 0.5 or k == "total"}

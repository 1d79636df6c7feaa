"""(d) memory per idle open stream, and whether it comes back after the streams close."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.clients import Channels, EchoTalker, Talker
from bench.procs import Mesh, Proc, start_echo
from bench.streaming import open_all
from bench.util import Series, interleave


async def _settled_rss(proc: Proc, wait_s: float = 0.5, tries: int = 20) -> int:
    """RSS once two readings `wait_s` apart differ by less than 1%."""
    last = proc.rss_kb()
    for _ in range(tries):
        await asyncio.sleep(wait_s)
        now = proc.rss_kb()
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


async def _wait_gauge(mesh: Mesh, want: float, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while await mesh.open_streams() != want:
        if loop.time() > deadline:
            raise TimeoutError(f"open streams did not reach {want}")
        await asyncio.sleep(0.1)


async def idle_memory(
    mesh: Mesh, replies_file: Path, rooms: dict[str, str], n: int, rounds: int
) -> dict[str, Any]:
    """Each round starts a fresh server process (the stream service, or an echo server), so
    its growth is not hidden by memory an earlier round freed and the allocator kept."""
    users = list(rooms)[:n]
    if len(users) < n:
        raise ValueError(f"need {n} rooms, have {len(users)}")
    per = {"mesh": Series(), "echo": Series()}
    back = {"mesh": Series(), "echo": Series()}
    rss: dict[str, list[tuple[int, int, int]]] = {"mesh": [], "echo": []}

    def runner(which: str) -> Callable[[int], Awaitable[None]]:
        async def run(_: int) -> None:
            if which == "mesh":
                proc = await mesh.start_stream(**mesh.stream_args)
            else:
                proc = await start_echo(mesh.workdir, replies_file)
            try:
                chans = Channels(f"127.0.0.1:{proc.port}", n)
                if which == "mesh":
                    items: list[Any] = [Talker(chans[i], u, rooms[u]) for i, u in enumerate(users)]
                else:
                    items = [EchoTalker(chans[i], u) for i, u in enumerate(users)]
                # One open/close of a few streams first: first-use allocations are not per stream.
                await open_all(items[:10])
                for item in items[:10]:
                    item.close()
                if which == "mesh":
                    await _wait_gauge(mesh, 0)
                before = await _settled_rss(proc)
                try:
                    await open_all(items)
                    if which == "mesh":
                        await _wait_gauge(mesh, n)
                    opened = await _settled_rss(proc)
                finally:
                    for item in items:
                        item.close()
                    await chans.close()
                if which == "mesh":
                    await _wait_gauge(mesh, 0)
                after = await _settled_rss(proc, wait_s=1.0)
            finally:
                if which == "echo":
                    await proc.stop()
            per[which].add((opened - before) / n)
            back[which].add(100 * (after - before) / before)
            rss[which].append((before, opened, after))

        return run

    await interleave(rounds, runner("mesh"), runner("echo"))
    ratio = Series()
    for m, e in zip(per["mesh"].values, per["echo"].values, strict=True):
        ratio.add(m / e if e > 0 and m > 0 else float("nan"))
    median = ratio.summary()["median"]
    mesh_back = back["mesh"].summary()["max"]
    ok_ratio = median is not None and median <= 1.5
    ok_back = mesh_back is not None and mesh_back <= 10.0
    return {
        "streams": n,
        "bus": mesh.stream_config.get("bus"),
        "mesh_kib_per_stream": per["mesh"].summary(),
        "echo_kib_per_stream": per["echo"].summary(),
        "ratio": ratio.summary(),
        "mesh_rss_after_close_vs_before_pct": back["mesh"].summary(),
        "echo_rss_after_close_vs_before_pct": back["echo"].summary(),
        "rss_kib_before_open_after": rss,
        "target": "<= 1.5x the echo server, and RSS back within 10% after close",
        "pass_ratio": ok_ratio,
        "pass_back": ok_back,
        "pass": ok_ratio and ok_back,
    }

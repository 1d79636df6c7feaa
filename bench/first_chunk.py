"""(g) First chunk through the edge: the embedded default (SQLite) against PostgreSQL.

Each back end gets its own mesh (avatar, rooms and token on it; the stream service with its
zero pacing: full load, and the in-process bus) behind Envoy; `n` conversations send their next
message as soon as a reply ends. The figure is the time from writing a message to the first
`stream_chunk` of its reply at the client: the message stored, the history read, the reply
started, all while the other conversations store their replies.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench.clients import Channels, Talker, create_rooms, new_tag, story
from bench.procs import Mesh
from bench.streaming import STAGGER_S, _drive, open_all
from bench.util import Series, percentile
from services.edge import EdgeConfig, envoy_log, start_envoy, wait_envoy_ready
from services.ports import free_port

BACKENDS = ("postgresql", "sqlite")


async def _one_backend(
    work: Path, sqlite: bool, n: int, seconds: float, rounds: int
) -> dict[str, Any]:
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    mesh = Mesh(work, sqlite=sqlite)
    envoy: Any = None
    p50, p99, turns_per_s = Series(), Series(), Series()
    try:
        await mesh.start()
        await mesh.start_stream(pacing_ms=0, redis=False)
        edge = EdgeConfig(listen_port=free_port(), admin_port=free_port(), upstreams=mesh.ports)
        envoy = await start_envoy(edge, work / "envoy", quiet=True)
        await wait_envoy_ready(edge.admin_port, process=envoy, log=envoy_log(edge, work / "envoy"))
        users = [f"bench-g{i}" for i in range(n)]
        rooms = await create_rooms(mesh.ports["rooms"], users)
        channels = Channels(f"127.0.0.1:{edge.listen_port}", n)
        talkers = [Talker(channels[i], u, rooms[u]) for i, u in enumerate(users)]
        try:
            await open_all(talkers)
            for _ in range(rounds):
                turns, took = await _drive(
                    n, seconds, lambda w, k: talkers[w].turn(story(new_tag())), STAGGER_S
                )
                firsts = [(t.chunks[0][1] - t.sent_ns) / 1e6 for t in turns if t.chunks]
                p50.add(percentile(firsts, 50))
                p99.add(percentile(firsts, 99))
                turns_per_s.add(len(turns) / took if took > 0 else float("nan"))
        finally:
            for t in talkers:
                t.close()
            await channels.close()
    finally:
        if envoy is not None and envoy.returncode is None:
            envoy.terminate()
            await envoy.wait()
        await mesh.close()
    return {
        "first_chunk_p50_ms": p50.summary(),
        "first_chunk_p99_ms": p99.summary(),
        "turns_per_s": turns_per_s.summary(),
    }


async def first_chunk_by_database(
    work: Path, n: int, seconds: float, rounds: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "conversations": n,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "target": "SQLite p99 <= 2 x PostgreSQL p99",
    }
    for name in BACKENDS:
        out[name] = await _one_backend(work / name, name == "sqlite", n, seconds, rounds)
    pg = out["postgresql"]["first_chunk_p99_ms"]["median"]
    lite = out["sqlite"]["first_chunk_p99_ms"]["median"]
    out["p99_ratio"] = lite / pg if pg and lite else None
    out["pass"] = out["p99_ratio"] is not None and out["p99_ratio"] <= 2.0
    return out

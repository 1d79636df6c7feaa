"""`make bench`: the mesh against the bare grpc.aio floor, side by side, as ratios.

    python -m bench [--quick] [--only abcdefgpv] [--out DIR]

Starts avatar, rooms and token (PostgreSQL, one fresh database each), the stream service
(restarted per configuration: zero pacing for throughput, 30 ms pacing for latency, the
in-process bus or the real local Redis), the bare echo server, and Envoy for (c); all in
separate processes from this client; (g) starts its own meshes, one per database back end;
(p) runs the procedural avatar generator in this process.
Writes bench/report.md and bench/report.json; a run of some figures (--only) keeps the other
figures of the report it finds there.
`--quick` runs every figure small and short, to check the harness (minutes, not a result).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bench_markers
from bench.clients import Channels, EchoTalker, Stamps, Talker, create_rooms
from bench.cpu import CpuMeter
from bench.first_chunk import first_chunk_by_database
from bench.memory import idle_memory
from bench.notes import NOTES
from bench.procs import Mesh, Proc, start_echo
from bench.report import HERE, write
from bench.streaming import (
    FAILURES,
    edge_latency,
    latency_ladder,
    open_all,
    record_replies,
    throughput,
)
from bench.unary import unary_rates
from bench.util import Series, machine
from bench.voice import first_audio

FULL = {
    "rounds": 5,
    "a_conversations": 8,
    "a_seconds": 4.0,
    "b_levels": (1, 50, 200),
    "b_seconds": 5.0,
    "b_rounds": 3,
    "c_conversations": 50,
    "c_seconds": 4.0,
    "c_rounds": 3,
    "d_streams": 1000,
    "d_rounds": 3,
    "e_concurrency": 16,
    "e_seconds": 2.0,
    "f_mb": 2.0,
    "v_requests": 200,
    "g_conversations": 8,
    "g_seconds": 4.0,
    "g_rounds": 3,
    "p_rounds": 7,
}
QUICK = {
    "rounds": 2,
    "a_conversations": 4,
    "a_seconds": 1.0,
    "b_levels": (1, 20),
    "b_seconds": 1.5,
    "b_rounds": 2,
    "c_conversations": 5,
    "c_seconds": 1.5,
    "c_rounds": 2,
    "d_streams": 100,
    "d_rounds": 1,
    "e_concurrency": 8,
    "e_seconds": 0.5,
    "f_mb": 0.3,
    "v_requests": 20,
    "g_conversations": 4,
    "g_seconds": 1.0,
    "g_rounds": 1,
    "p_rounds": 2,
}


ALL = "abcdefgpv"


def keep_others(doc: dict[str, Any], only: set[str], out: Path) -> dict[str, Any]:
    """A run of some figures updates those in the report found in `out`, keeping the others
    (and that report's machine and set-up lines); each figure run here records its machine."""
    previous = out / "report.json"
    if set(ALL) <= only or not previous.exists():
        return doc
    old: dict[str, Any] = json.loads(previous.read_text())
    old.setdefault("figures", {}).update(doc["figures"])
    old["notes"] = doc["notes"]
    old.setdefault("partial_runs", []).append(
        {"figures": sorted(doc["figures"]), "machine": doc["machine"], "config": doc["config"]}
    )
    return old


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def meter(mesh: Mesh, echo: Proc) -> CpuMeter:
    """CPU of every service process as it runs now, and of the echo floor."""
    return CpuMeter({**{n: p.pid for n, p in mesh.procs.items()}, "echo": echo.pid})


def markers_figure(mb: float, rounds: int, repeat: int = 3) -> dict[str, Any]:
    keys = ("whole_mb_s", "stream_4char_deltas_mb_s", "stream_32char_deltas_mb_s")
    series = {k: Series() for k in keys}
    info: dict[str, Any] = {}
    for r in range(rounds):
        info = bench_markers.measure(mb, seed=7 + r, repeat=repeat)
        for k in keys:
            series[k].add(float(info[k]))
    out: dict[str, Any] = {k: series[k].summary() for k in keys}
    out.update(
        corpus_mb=info["corpus_mb"],
        brackets_per_kb=info["brackets_per_kb"],
        repeat=repeat,
        rounds=rounds,
        target=">= 10 MB/s",
    )
    out["pass"] = all(out[k]["median"] >= 10 for k in keys)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = QUICK if args.quick else FULL
    only = set(args.only)
    figures: dict[str, Any] = {}
    doc: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "quick": args.quick,
            **{k: v for k, v in cfg.items()},
            "setup": (
                "every service in its own process started as `make run` starts it"
                " (python -m services.<name>; the stream service through bench/stream_server.py,"
                " which only adds the delta stamp recorder around the configured provider),"
                " default settings except the per-user limits a load test trips on purpose"
                " (messages per minute, open streams, token issue rate and plan quotas),"
                " logs at INFO to files; avatar, rooms and token on the local PostgreSQL"
                " (a fresh database each); the client in this process; one user and room per"
                " conversation; the echo floor is bench/echo_server.py, a grpc.aio server with"
                " no interceptor, in its own process."
            ),
        },
        "figures": figures,
        "notes": NOTES,
    }
    if "f" in only:
        say("(f) marker parser")
        figures["f"] = markers_figure(cfg["f_mb"], cfg["rounds"])
    if "v" in only:
        say("(v) voice: first audio")
        figures["v"] = await voice_figure(cfg["v_requests"], cfg["rounds"])
    if "g" in only:
        say("(g) first chunk through the edge, SQLite vs PostgreSQL")
        figures["g"] = await first_chunk_by_database(
            Path(tempfile.mkdtemp(prefix="arconv-bench-g-")),
            cfg["g_conversations"],
            cfg["g_seconds"],
            cfg["g_rounds"],
        )
        figures["g"]["machine"] = doc["machine"]
    if "p" in only:
        from bench import avatar_gen

        say("(p) procedural avatar generation")
        figures["p"] = avatar_gen.measure(cfg["p_rounds"])
        figures["p"]["machine"] = doc["machine"]
    if not only & set("abcde"):
        return doc
    work = Path(tempfile.mkdtemp(prefix="arconv-bench-"))
    say(f"work dir {work}")
    mesh = Mesh(work)
    echo: Proc | None = None
    envoy: Any = None
    try:
        await mesh.start()
        await mesh.start_stream(pacing_ms=0, redis=False)
        n_rooms = max(cfg["d_streams"], max(cfg["b_levels"]), 64)
        users = [f"bench-u{i}" for i in range(n_rooms)]
        say(f"creating {n_rooms} rooms")
        rooms = await create_rooms(mesh.ports["rooms"], users)
        stamps = Stamps(mesh.stamps)
        n_a = cfg["a_conversations"]
        ch_mesh = Channels(f"127.0.0.1:{mesh.ports['stream']}", n_a)
        talkers = [Talker(ch_mesh[i], u, rooms[u]) for i, u in enumerate(users[:n_a])]
        await open_all(talkers)
        replies = await record_replies(talkers, work / "replies.json")
        echo = await start_echo(work, work / "replies.json")
        if "a" in only:
            say("(a) chunk throughput")
            ch_echo = Channels(f"127.0.0.1:{echo.port}", n_a)
            echoes = [EchoTalker(ch_echo[i], u) for i, u in enumerate(users[:n_a])]
            await open_all(echoes)
            # Warm both paths once before measuring.
            await asyncio.gather(*(t.turn(f"warm up {i}") for i, t in enumerate(talkers)))
            await asyncio.gather(*(e.turn(0) for e in echoes))
            figures["a"] = await throughput(
                talkers, echoes, len(replies), cfg["a_seconds"], cfg["rounds"], meter(mesh, echo)
            )
            for e in echoes:
                e.close()
            await ch_echo.close()
        for t in talkers:
            t.close()
        await ch_mesh.close()
        if only & set("bcd"):
            await mesh.start_stream(pacing_ms=30, redis=False, profile=args.profile)
            if "b" in only and args.bus in ("both", "memory"):
                say("(b) latency, in-process bus")
                figures.setdefault("b", {})["in-process"] = await latency_ladder(
                    stamps,
                    mesh.ports["stream"],
                    echo.port,
                    rooms,
                    cfg["b_levels"],
                    len(replies),
                    cfg["b_seconds"],
                    cfg["b_rounds"],
                )
            if "c" in only:
                from services.edge import EdgeConfig, envoy_log, start_envoy, wait_envoy_ready
                from services.ports import free_port

                say("(c) Envoy vs direct")
                edge = EdgeConfig(
                    listen_port=free_port(), admin_port=free_port(), upstreams=mesh.ports
                )
                envoy = await start_envoy(edge, work / "envoy", quiet=True)
                await wait_envoy_ready(
                    edge.admin_port, process=envoy, log=envoy_log(edge, work / "envoy")
                )
                figures["c"] = await edge_latency(
                    stamps,
                    mesh.ports["stream"],
                    edge.listen_port,
                    rooms,
                    cfg["c_conversations"],
                    cfg["c_seconds"],
                    cfg["c_rounds"],
                )
            if "d" in only:
                say(f"(d) memory, {cfg['d_streams']} idle streams")
                figures["d"] = await idle_memory(
                    mesh, work / "replies.json", rooms, cfg["d_streams"], cfg["d_rounds"]
                )
            if "b" in only and args.bus in ("both", "redis"):
                await mesh.start_stream(pacing_ms=30, redis=True, profile=args.profile)
                say("(b) latency, Redis bus")
                figures.setdefault("b", {})["redis"] = await latency_ladder(
                    stamps,
                    mesh.ports["stream"],
                    echo.port,
                    rooms,
                    cfg["b_levels"],
                    len(replies),
                    cfg["b_seconds"],
                    cfg["b_rounds"],
                )
        if "e" in only:
            say("(e) unary calls")
            figures["e"] = await unary_rates(
                mesh.ports,
                echo.port,
                rooms,
                cfg["e_concurrency"],
                cfg["e_seconds"],
                cfg["rounds"],
                meter(mesh, echo),
            )
    finally:
        if envoy is not None and envoy.returncode is None:
            envoy.terminate()
            await envoy.wait()
        if echo is not None:
            await echo.stop()
        await mesh.close()
        doc["failed_turns"] = {"count": len(FAILURES), "first": FAILURES[:5]}
    return doc


async def voice_figure(requests: int, rounds: int) -> dict[str, Any]:
    from services.common.config import Settings
    from services.common.server import authority_from

    work = Path(tempfile.mkdtemp(prefix="arconv-bench-voice-"))
    mesh = Mesh(work)
    try:
        await mesh.start()
        await mesh.start_voice()
        user = authority_from(Settings()).mint("bench-voice", ttl_s=3600)
        return await first_audio(mesh.ports, user, requests, rounds)
    finally:
        await mesh.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small, short runs (harness check)")
    ap.add_argument("--only", default=ALL, help="figures to run, e.g. --only af")
    ap.add_argument("--out", default=str(HERE), help="where report.md/.json go")
    ap.add_argument("--profile", default="", help="cProfile the stream server (latency runs)")
    ap.add_argument(
        "--bus", choices=("both", "memory", "redis"), default="both", help="buses for (b)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    doc = asyncio.run(run(args))
    doc["config"]["wall_time_s"] = round(time.perf_counter() - started, 1)
    write(keep_others(doc, set(args.only), Path(args.out)), Path(args.out))
    say(f"done in {doc['config']['wall_time_s']} s: {args.out}/report.md")


if __name__ == "__main__":
    main()

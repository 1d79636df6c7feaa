"""(a) chunk throughput, (b) delta → client latency, (c) the latency Envoy adds."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx
from arconv.stream.v1 import stream_service_pb2_grpc as pb_grpc

from bench.clients import (
    Channels,
    EchoTalker,
    Stamps,
    Subscriber,
    Talker,
    Turn,
    WebSubscriber,
    new_tag,
    story,
)
from bench.cpu import CpuMeter, summarize
from bench.util import Series, client_gc_paused, interleave, percentile

PACING_MS = 30  # the persona's default pacing, about one LLM token every 30 ms
# Conversations start at random moments within about one persona reply (60 to 70 deltas at
# PACING_MS), so their turns do not all begin together.
STAGGER_S = 2.0


async def open_all(items: Sequence[Any], concurrency: int = 50) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(item: Any) -> None:
        async with sem:
            await item.open()

    await asyncio.gather(*(one(i) for i in items))


async def record_replies(talkers: list[Talker], path: Path, count: int = 6) -> list[list[bytes]]:
    """Real replies captured off the wire, so the echo floor sends the same bytes."""
    replies: list[list[bytes]] = []
    for i in range(count):
        turn = await talkers[i % len(talkers)].turn(story(new_tag()), record=True)
        replies.append(turn.wire)
    text = json.dumps([[base64.b64encode(m).decode() for m in r] for r in replies])
    await asyncio.to_thread(path.write_text, text)
    return replies


TURN_TIMEOUT_S = 60.0
FAILURES: list[str] = []  # turns that failed (call ended, reply never ended): reported


async def _drive(
    workers: int, seconds: float, run_turn: Callable[[int, int], Awaitable[Turn]], stagger_s: float
) -> tuple[list[Turn], float]:
    """Each worker starts at a random moment within `stagger_s`, then runs turns back to back;
    returns the turns that started in the `seconds` after the stagger, and the time they took.

    The stagger spreads the conversations' turns the way independent conversations' are
    spread, and counting starts once every worker runs, so the load is the full load.
    A worker whose turn fails (its call ended, or no stream_ended within TURN_TIMEOUT_S) stops
    and the failure is recorded in FAILURES.
    """
    turns: list[Turn] = []
    with client_gc_paused():
        count_from = time.perf_counter() + stagger_s
        end = count_from + seconds

        async def worker(w: int) -> None:
            if stagger_s:
                await asyncio.sleep(random.uniform(0, stagger_s))
            n = 0
            while (began := time.perf_counter()) < end:
                try:
                    turn = await asyncio.wait_for(run_turn(w, n), TURN_TIMEOUT_S)
                except (TimeoutError, RuntimeError, grpc.aio.AioRpcError) as exc:
                    FAILURES.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    return
                if began >= count_from:
                    turns.append(turn)
                n += 1

        await asyncio.gather(*(worker(w) for w in range(workers)))
        return turns, time.perf_counter() - count_from


# --- (a) ----------------------------------------------------------------------------------------


async def throughput(
    talkers: list[Talker],
    echoes: list[EchoTalker],
    n_replies: int,
    seconds: float,
    rounds: int,
    cpu: CpuMeter,
) -> dict[str, Any]:
    mesh, echo, ratio = Series(), Series(), Series()
    mesh_cpu: list[dict[str, float]] = []
    echo_cpu: list[dict[str, float]] = []
    errors = 0

    async def run_mesh(_: int) -> None:
        nonlocal errors
        before = cpu.snapshot()
        turns, elapsed = await _drive(
            len(talkers), seconds, lambda w, n: talkers[w].turn(story(new_tag())), 0
        )
        chunks = sum(len(t.chunks) for t in turns)
        mesh_cpu.append(cpu.per_unit(before, cpu.snapshot(), chunks))
        errors += sum(1 for t in turns if t.error)
        mesh.add(chunks / elapsed)

    async def run_echo(_: int) -> None:
        before = cpu.snapshot()
        turns, elapsed = await _drive(
            len(echoes), seconds, lambda w, n: echoes[w].turn((w + n) % n_replies), 0
        )
        chunks = sum(len(t.chunks) for t in turns)
        echo_cpu.append(cpu.per_unit(before, cpu.snapshot(), chunks))
        echo.add(chunks / elapsed)

    await interleave(rounds, run_mesh, run_echo)
    for m, e in zip(mesh.values, echo.values, strict=True):
        ratio.add(m / e)
    spent = {"mesh": summarize(mesh_cpu), "echo": summarize(echo_cpu)}
    return {
        "conversations": len(talkers),
        "seconds_per_round": seconds,
        "mesh_chunks_per_s": mesh.summary(),
        "echo_chunks_per_s": echo.summary(),
        "ratio": ratio.summary(),
        "cpu_us_per_chunk": spent,
        # With every core busy, S/E can be at most the inverse ratio of CPU per chunk.
        "cpu_bound_ratio": round(spent["echo"]["total"] / spent["mesh"]["total"], 3),
        "reply_errors": errors,
        "target": ">= 0.6",
        "pass": ratio.summary()["median"] >= 0.6,
    }


# --- (b) ----------------------------------------------------------------------------------------


def _lat_summary(p50: Series, p99: Series) -> dict[str, Any]:
    return {"p50_ms": p50.summary(), "p99_ms": p99.summary()}


async def latency(
    stamps: Stamps,
    talkers: list[Talker],
    echoes: list[EchoTalker],
    n_replies: int,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    """Delta → client latency with `len(talkers)` conversations, against the paced echo floor."""
    m50, m99, e50, e99 = Series(), Series(), Series(), Series()
    samples = 0
    missing = 0
    stagger = STAGGER_S

    async def run_mesh(_: int) -> None:
        nonlocal samples, missing
        turns, _e = await _drive(
            len(talkers), seconds, lambda w, n: talkers[w].turn(story(new_tag())), stagger
        )
        lat, miss = stamps.latencies_us(turns)
        samples += len(lat)
        missing += miss
        m50.add(percentile(lat, 50) / 1000)
        m99.add(percentile(lat, 99) / 1000)

    async def run_echo(_: int) -> None:
        turns, _e = await _drive(
            len(echoes),
            seconds,
            lambda w, n: echoes[w].turn((w + n) % n_replies, PACING_MS),
            stagger,
        )
        lat = [
            (recv - sent) / 1000
            for t in turns
            for (_raw, recv), sent in zip(t.chunks, t.stamps, strict=True)
        ]
        e50.add(percentile(lat, 50) / 1000)
        e99.add(percentile(lat, 99) / 1000)

    await interleave(rounds, run_mesh, run_echo)
    return {
        "conversations": len(talkers),
        "mesh": _lat_summary(m50, m99),
        "echo": _lat_summary(e50, e99),
        "mesh_samples": samples,
        "turns_unmatched": missing,
    }


async def latency_ladder(
    stamps: Stamps,
    stream_port: int,
    echo_port: int,
    rooms: dict[str, str],
    levels: Sequence[int],
    n_replies: int,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    users = list(rooms)
    for n in levels:
        mesh_ch = Channels(f"127.0.0.1:{stream_port}", n)
        echo_ch = Channels(f"127.0.0.1:{echo_port}", n)
        talkers = [Talker(mesh_ch[i], users[i], rooms[users[i]]) for i in range(n)]
        echoes = [EchoTalker(echo_ch[i], users[i]) for i in range(n)]
        try:
            await open_all(talkers)
            await open_all(echoes)
            out[str(n)] = await latency(stamps, talkers, echoes, n_replies, seconds, rounds)
        except Exception as exc:  # a failed level is reported, the others still run
            out[str(n)] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for t in (*talkers, *echoes):
                t.close()
            await mesh_ch.close()
            await echo_ch.close()
    top = out[str(max(levels))].get("mesh")
    p50 = top["p50_ms"]["median"] if top else None
    p99 = top["p99_ms"]["median"] if top else None
    out["target"] = f"p50 <= 1 ms and p99 <= 5 ms at {max(levels)} conversations"
    out["pass"] = p50 is not None and p50 <= 1.0 and p99 <= 5.0
    return out


# --- (c) ----------------------------------------------------------------------------------------


async def edge_latency(
    stamps: Stamps,
    stream_port: int,
    envoy_port: int,
    rooms: dict[str, str],
    n: int,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    """Converse through Envoy vs direct, and Subscribe over gRPC-web through Envoy vs direct."""
    users = list(rooms)[:n]
    direct = Channels(f"127.0.0.1:{stream_port}", n)
    edge = Channels(f"127.0.0.1:{envoy_port}", n)
    web = httpx.AsyncClient(
        timeout=None, limits=httpx.Limits(max_connections=None, max_keepalive_connections=None)
    )
    sender = pb_grpc.StreamServiceStub(direct[0])
    groups: dict[str, list[Any]] = {
        "converse_direct": [Talker(direct[i], u, rooms[u]) for i, u in enumerate(users)],
        "converse_envoy": [Talker(edge[i], u, rooms[u]) for i, u in enumerate(users)],
        "subscribe_direct": [Subscriber(direct[i], u, rooms[u]) for i, u in enumerate(users)],
        "subscribe_grpc_web_envoy": [
            WebSubscriber(web, f"http://127.0.0.1:{envoy_port}", u, rooms[u]) for u in users
        ],
    }
    series = {k: (Series(), Series()) for k in groups}
    stagger = STAGGER_S

    def runner(name: str) -> Callable[[int], Awaitable[None]]:
        async def run(_: int) -> None:
            items = groups[name]
            await open_all(items)
            try:
                if name.startswith("converse"):
                    turns, _e = await _drive(
                        n, seconds, lambda w, k: items[w].turn(story(new_tag())), stagger
                    )
                else:
                    turns, _e = await _drive(
                        n, seconds, lambda w, k: items[w].turn(story(new_tag()), sender), stagger
                    )
            finally:
                for item in items:
                    item.close()
            lat, _miss = stamps.latencies_us(turns)
            series[name][0].add(percentile(lat, 50) / 1000)
            series[name][1].add(percentile(lat, 99) / 1000)

        return run

    try:
        for pair in (
            ("converse_direct", "converse_envoy"),
            ("subscribe_direct", "subscribe_grpc_web_envoy"),
        ):
            await interleave(rounds, runner(pair[0]), runner(pair[1]))
            # Let closed calls finish on the server before the next pair opens new ones.
            await asyncio.sleep(0.5)
    finally:
        await web.aclose()
        await direct.close()
        await edge.close()
    out: dict[str, Any] = {"conversations": n}
    ok = True
    for via, base in (
        ("converse_envoy", "converse_direct"),
        ("subscribe_grpc_web_envoy", "subscribe_direct"),
    ):
        added50, added99 = Series(), Series()
        for a, b in zip(series[via][0].values, series[base][0].values, strict=True):
            added50.add(a - b)
        for a, b in zip(series[via][1].values, series[base][1].values, strict=True):
            added99.add(a - b)
        out[via] = {
            "via_envoy": _lat_summary(*series[via]),
            "direct": _lat_summary(*series[base]),
            "added_p50_ms": added50.summary(),
            "added_p99_ms": added99.summary(),
        }
        ok = ok and added99.summary()["median"] <= 1.0
    out["target"] = "<= 1 ms added at p99"
    out["pass"] = ok
    return out

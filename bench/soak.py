"""`make soak`: N conversations for M minutes through the edge, on Redis, with faults.

    python -m bench.soak [--conversations N] [--minutes M] [--out DIR]

(SOAK_CONVERSATIONS, default 20, and SOAK_MINUTES, default 3, set the defaults.)

The replicated topology of `make cluster` (two replicas of every service behind Envoy, the
local PostgreSQL in a database of its own) on a redis-server this run owns, without
persistence. Each conversation is one user typing to the agent on one Converse stream
(bench/soak_client.py), resuming as a real client does. A third of the way in, stream replica
0 is killed with SIGKILL (and started again 5 s later, as an orchestrator would); two thirds
of the way in, Redis is restarted and loses every key. Every 15 s the run samples the load
average, and every minute the RSS of each process, Redis's memory and its keys by kind.
At the end it counts lost human messages (acknowledged, not in the history), events repeated
or missing after a resume, and replies left running (rooms whose join still names a running
reply once every client has stopped). Writes bench/soak.md and bench/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
from arconv.stream.v1 import stream_service_pb2 as pb
from arconv.stream.v1 import stream_service_pb2_grpc as pb_grpc

from bench.clients import Channels, user_md
from bench.procs import PG_ADMIN_URL
from bench.soak_client import SoakConversation, Tally
from bench.soak_report import write
from bench.util import machine, percentile, rss_kb
from services.ports import free_port

DEFAULT_CONVERSATIONS = 20
DEFAULT_MINUTES = 3.0
KILL_AT = 1 / 3  # of the run: SIGKILL of stream replica 0
RESTART_REPLICA_AFTER_S = 5.0
REDIS_RESTART_AT = 2 / 3  # of the run: Redis restarted without persistence
LOAD_EVERY_S = 15.0
SAMPLE_EVERY_S = 60.0
SETTLE_S = 5.0  # after the last client stopped, before looking for replies left running


def _positive(kind: type[int] | type[float], what: str) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{what} must be positive, got {text!r}")
        return value

    return parse


def parse_args(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    """The command line over SOAK_CONVERSATIONS and SOAK_MINUTES; bad values exit (code 2)."""
    conversations = _positive(int, "conversations")
    minutes = _positive(float, "minutes")
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument(
        "--conversations",
        type=conversations,
        default=env.get("SOAK_CONVERSATIONS", str(DEFAULT_CONVERSATIONS)),
    )
    parser.add_argument(
        "--minutes", type=minutes, default=env.get("SOAK_MINUTES", str(DEFAULT_MINUTES))
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    # argparse converts string defaults with `type` too: a bad SOAK_* value exits here.
    return args


def say(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- sampling ----------------------------------------------------------------------------------

_ID = re.compile(r"^(?:[0-9a-f]{8,}|[0-9a-f-]{36}|\d+|[a-z]+-\d+)$")


def key_kind(key: str, prefix: str) -> str:
    """A Redis key with its ids replaced by `*`: `stream:open-streams:*`, `bus:room:*:events`."""
    parts = key.removeprefix(prefix).split(":")
    return ":".join("*" if _ID.match(p) else p for p in parts)


async def redis_sample(url: str, prefix: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
    try:
        info = await client.info("memory")
        kinds: Counter[str] = Counter()
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            kinds[key_kind(key, prefix)] += 1
        return {
            "used_memory_mb": round(info["used_memory"] / 2**20, 2),
            "used_memory_rss_mb": round(info["used_memory_rss"] / 2**20, 2),
            "keys": int(await client.dbsize()),
            "keys_by_kind": dict(sorted(kinds.items())),
        }
    except Exception as exc:  # Redis down for its restart: recorded as such
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        await client.aclose()


def rss_sample(pids: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in sorted(pids.items()):
        with contextlib.suppress(OSError, RuntimeError):
            out[name] = round(rss_kb(pid) / 1024, 1)
    return out


# -- the run -----------------------------------------------------------------------------------


async def _replies_left_running(channel: grpc.aio.Channel, convs: list[SoakConversation]) -> int:
    """Rooms whose join still names a running reply, every client having stopped."""
    stub = pb_grpc.StreamServiceStub(channel)
    running = 0
    for conv in convs:
        call = stub.Converse(metadata=user_md(conv.user))
        try:
            await call.write(pb.ConverseRequest(join=pb.Join(room_id=conv.room_id)))
            first = await call.read()
            if first is not grpc.aio.EOF and first.joined.active_stream_id:
                running += 1
        finally:
            call.cancel()
    return running


async def _lost_messages(convs: list[SoakConversation]) -> tuple[int, int]:
    """(acknowledged messages the history lacks, messages sent but never acknowledged)."""
    lost = unacked = 0
    for conv in convs:
        stored = {m.content for m in await conv.history()}
        lost += sum(1 for c in set(conv.acked) if c not in stored)
        unacked += sum(1 for c in set(conv.sent) - set(conv.acked) if c not in stored)
    return lost, unacked


def _ms(value: float) -> float | None:
    return None if value != value else round(value, 1)  # NaN: no turn to measure


def per_minute(tally: Tally, minutes: float) -> list[dict[str, Any]]:
    rows = []
    for m in range(max(1, int(-(-minutes // 1)))):
        ms = [v for at, v in tally.first_chunk if m * 60 <= at < (m + 1) * 60]
        rows.append(
            {
                "minute": m + 1,
                "turns": len(ms),
                "first_chunk_p50_ms": _ms(percentile(ms, 50)),
                "first_chunk_p99_ms": _ms(percentile(ms, 99)),
                "errors": sum(1 for at in tally.errors_at if m * 60 <= at < (m + 1) * 60),
            }
        )
    return rows


async def soak(conversations: int, minutes: float, workdir: Path) -> dict[str, Any]:
    from services.cluster import start_cluster
    from services.mesh import SERVICES
    from tests.faults.own_redis import OwnRedis

    tag = uuid.uuid4().hex[:10]
    database = f"arconv_soak_{tag}"
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    prefix = "arconv-soak:"
    redis = OwnRedis(workdir)
    await redis.start()
    env = {
        "ARCONV_DATABASE_URL": f"{base}/{database}",
        "ARCONV_REDIS_URL": redis.url,
        "ARCONV_REDIS_PREFIX": prefix,
        "ARCONV_TOKEN_KV_PREFIX": f"{prefix}token:",
        "ARCONV_VAR_DIR": str(workdir / "var"),
        "ARCONV_LOG_LEVEL": "ERROR",
        # One message a turn per conversation; far under this, whatever the machine's speed.
        "ARCONV_STREAM_MESSAGES_PER_MINUTE": "1000",
    }
    names = [*SERVICES, "voice_http"]
    ports = {name: [free_port(), free_port()] for name in names}
    doc: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "conversations": conversations,
            "minutes": minutes,
            "replicas": 2,
            "bus": "Redis (a redis-server of the run's own, no persistence)",
            "database": "PostgreSQL",
            "llm": "persona, default pacing",
            "think_s": 1.0,
        },
    }
    load: list[tuple[float, list[float]]] = []
    samples: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    try:
        say(f"starting the cluster (2 replicas of {', '.join(SERVICES)}, Envoy)")
        async with start_cluster(
            env, ports=ports, edge_port=free_port(), admin_port=free_port(), quiet_edge=True
        ) as cluster:
            edge = f"127.0.0.1:{cluster.edge.listen_port}"
            channels = Channels(edge, conversations)
            rooms = await _create_rooms(channels[0], conversations)
            t0 = time.monotonic()
            until = t0 + minutes * 60
            convs = [
                SoakConversation(channels[i], user, room, t0)
                for i, (user, room) in enumerate(rooms.items())
            ]

            def pids() -> dict[str, int]:
                out = {n: p.pid for n, p in cluster.processes().items() if p.returncode is None}
                if redis.proc is not None:
                    out["redis-server"] = redis.proc.pid
                out["client"] = os.getpid()
                return out

            async def sampler() -> None:
                next_sample = t0
                while True:
                    now = time.monotonic()
                    load.append((round(now - t0, 1), [round(x, 2) for x in os.getloadavg()]))
                    if now >= next_sample:
                        samples.append(
                            {
                                "at_s": round(now - t0, 1),
                                "rss_mb": rss_sample(pids()),
                                "redis": await redis_sample(redis.url, prefix),
                            }
                        )
                        next_sample += SAMPLE_EVERY_S
                    await asyncio.sleep(LOAD_EVERY_S)

            async def inject() -> None:
                await asyncio.sleep(minutes * 60 * KILL_AT)
                pid = cluster.kill("stream", 0)
                faults.append(
                    {
                        "at_s": round(time.monotonic() - t0, 1),
                        "fault": f"SIGKILL of stream replica 0 (pid {pid})",
                    }
                )
                say(faults[-1]["fault"])
                await asyncio.sleep(RESTART_REPLICA_AFTER_S)
                await cluster.start("stream", 0)
                faults.append(
                    {
                        "at_s": round(time.monotonic() - t0, 1),
                        "fault": "stream replica 0 started again",
                    }
                )
                say(faults[-1]["fault"])
                await asyncio.sleep(
                    max(0.0, t0 + minutes * 60 * REDIS_RESTART_AT - time.monotonic())
                )
                await redis.restart()
                faults.append(
                    {
                        "at_s": round(time.monotonic() - t0, 1),
                        "fault": "Redis restarted without persistence (every key lost)",
                    }
                )
                say(faults[-1]["fault"])

            say(f"{conversations} conversations for {minutes:g} minutes through {edge}")
            background = [asyncio.ensure_future(sampler()), asyncio.ensure_future(inject())]
            try:
                await asyncio.gather(*(c.run(until) for c in convs))
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            ran_s = time.monotonic() - t0
            samples.append(
                {
                    "at_s": round(ran_s, 1),
                    "rss_mb": rss_sample(pids()),
                    "redis": await redis_sample(redis.url, prefix),
                }
            )
            await asyncio.sleep(SETTLE_S)
            say("checking: history of every room, replies left running")
            lost, unacked = await _lost_messages(convs)
            left = await _replies_left_running(channels[0], convs)
            await channels.close()
    finally:
        await redis.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(_drop_database, database)
    total = Tally()
    for c in convs:
        total.add(c.tally)
    ones = [x[0] for _, x in load]
    doc.update(
        ran_s=round(ran_s, 1),
        faults=faults,
        load_average_1min={
            "min": min(ones),
            "mean": round(statistics.fmean(ones), 2),
            "max": max(ones),
            "samples": load,
        },
        minutes=per_minute(total, minutes),
        first_chunk_all={
            "p50_ms": _ms(percentile([v for _, v in total.first_chunk], 50)),
            "p99_ms": _ms(percentile([v for _, v in total.first_chunk], 99)),
        },
        totals={
            "turns": total.turns,
            "answered": total.answered,
            "answered_from_history": total.answered_from_history,
            "unanswered": total.unanswered,
            "replies_cut": dict(total.replies_cut),
            "resent": total.resent,
            "duplicates_acknowledged": total.duplicates_acknowledged,
            "events": total.events,
            "events_repeated": total.events_repeated,
            "events_missing": total.events_missing,
            "human_messages_lost": lost,
            "human_messages_never_acknowledged": unacked,
            "replies_left_running": left,
            "resumes": dict(total.resumes),
            "errors": dict(total.errors),
        },
        error_details=dict(total.details.most_common()),
        unanswered_turns=total.unanswered_turns,
        samples=samples,
    )
    return doc


async def _create_rooms(channel: grpc.aio.Channel, n: int) -> dict[str, str]:
    from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
    from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc

    stub = rooms_grpc.RoomServiceStub(channel)
    out = {}
    for i in range(n):
        user = f"soak-{i}"
        r = await stub.CreateRoom(
            rooms_pb.CreateRoomRequest(agent_id="nova"), metadata=user_md(user), timeout=30
        )
        out[user] = r.room.room_id
    return out


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv, dict(os.environ))
    with tempfile.TemporaryDirectory(prefix="arconv-soak-") as tmp:
        doc = asyncio.run(soak(args.conversations, args.minutes, Path(tmp)))
    write(doc, args.out)
    t = doc["totals"]
    say(
        f"done: {t['turns']} turns, lost {t['human_messages_lost']}, events repeated"
        f" {t['events_repeated']} missing {t['events_missing']}, replies left running"
        f" {t['replies_left_running']}; report in {args.out / 'soak.md'}"
    )


if __name__ == "__main__":
    main()

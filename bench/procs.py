"""The processes under test: the four services (as `make run` starts them) and the echo floor.

Every service runs in its own process, on PostgreSQL (one fresh database per service, dropped
at the end) and, for the stream service, the in-process bus or the real local Redis under a
unique key prefix (deleted at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.util import rss_kb
from services.edge import parent_death_launcher
from services.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "ARCONV_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
).replace("postgresql+psycopg://", "postgresql://")
REDIS_URL = os.environ.get("ARCONV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Proc:
    """A child process with its log file."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def spawn(name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int) -> Proc:
    """Starts `python -m bench.child <argv...>`, which dies with this process (see
    bench/child.py: no preexec_fn)."""
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:  # noqa: ASYNC230 - opening a log file before a spawn
        proc = await asyncio.create_subprocess_exec(
            *parent_death_launcher(),
            sys.executable,
            *("-m", "bench.child", *argv),
            env=env,
            cwd=str(ROOT),
            stdout=out,
            stderr=out,
        )
    return Proc(name, proc, port, log)


async def wait_healthy(p: Proc, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            if p.proc.returncode is not None:
                raise RuntimeError(f"{p.name} exited ({p.proc.returncode}); see {p.log}")
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"{p.name} on :{p.port} not healthy; see {p.log}")
            await asyncio.sleep(0.1)


async def start_echo(workdir: Path, replies_file: Path | None) -> Proc:
    try:
        return await _start_echo(workdir, replies_file)
    except RuntimeError:  # a free port taken meanwhile, once in a while: one more try
        return await _start_echo(workdir, replies_file)


async def _start_echo(workdir: Path, replies_file: Path | None) -> Proc:
    port = free_port()
    env = {**os.environ, "ARCONV_BENCH_ECHO_PORT": str(port)}
    if replies_file is not None:
        env["ARCONV_BENCH_ECHO_REPLIES"] = str(replies_file)
    p = await spawn("echo", ["bench.echo_server"], env, workdir, port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return p
        except OSError:
            if loop.time() > deadline or p.proc.returncode is not None:
                await p.stop()
                raise RuntimeError(f"echo server did not start; see {p.log}") from None
            await asyncio.sleep(0.1)


# The limits a benchmark would trip on purpose-built load; everything else is the default.
_BENCH_LIMITS = {
    "ARCONV_STREAM_MESSAGES_PER_MINUTE": "10000",
    "ARCONV_STREAM_MAX_OPEN_STREAMS": "1000",
    "ARCONV_TOKEN_ISSUE_PER_MINUTE": "1000000",
    "ARCONV_TOKEN_REFRESH_PER_MINUTE": "1000000",
    "ARCONV_TOKEN_PLANS": json.dumps(
        {"free": {"daily_characters": 10**12, "requests_per_token_per_hour": 10**9}}
    ),
}


class Mesh:
    """avatar, rooms and token on PostgreSQL (or, with `sqlite`, on the embedded default: a
    SQLite file each under the work dir); stream restartable with another configuration."""

    def __init__(
        self, workdir: Path, profile: dict[str, str] | None = None, *, sqlite: bool = False
    ) -> None:
        self.workdir = workdir
        # service name -> cProfile output file (see bench/child.py)
        self.profile = profile or {}
        self.tag = uuid.uuid4().hex[:10]
        self.ports = {n: free_port() for n in ("rooms", "stream", "avatar", "token")}
        self.dbs = (
            {}
            if sqlite
            else {n: f"arconv_bench_{self.tag}_{n}" for n in ("rooms", "avatar", "token")}
        )
        self.redis_prefix = f"arconv-bench:{self.tag}:"
        self.stamps = workdir / "stamps.jsonl"
        self.procs: dict[str, Proc] = {}
        self.stream_metrics_port = 0
        self.stream_config: dict[str, Any] = {}
        self.stream_args: dict[str, Any] = {}

    def _env(self, name: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCONV_")}
        env.update(_BENCH_LIMITS)
        env.update({f"ARCONV_{n.upper()}_ADDR": f"127.0.0.1:{p}" for n, p in self.ports.items()})
        env.update(
            {
                "ARCONV_PORT": str(self.ports[name]),
                "ARCONV_METRICS_PORT": "-1",
                "ARCONV_VAR_DIR": str(self.workdir / "var"),
            }
        )
        if name in self.dbs:
            base = PG_ADMIN_URL.rsplit("/", 1)[0].split("://", 1)[1]
            env["ARCONV_DATABASE_URL"] = f"postgresql+psycopg://{base}/{self.dbs[name]}"
        env.update(extra)
        return env

    def _pg(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql)

    async def start(self) -> None:
        for db in self.dbs.values():
            await asyncio.to_thread(self._pg, f'CREATE DATABASE "{db}"')
        for name in ("avatar", "rooms", "token"):
            argv = [f"services.{name}"]
            if name in self.profile:
                argv.append(self.profile[name])
            p = await spawn(name, argv, self._env(name), self.workdir, self.ports[name])
            self.procs[name] = p
        for name in ("avatar", "rooms", "token"):
            await wait_healthy(self.procs[name])
        from services.avatar.demo import seed_demo_agents
        from services.common.config import Settings

        await seed_demo_agents(Settings(), f"127.0.0.1:{self.ports['avatar']}")

    async def start_voice(self) -> Proc:
        """The voice service (espeak), in front of the token service."""
        self.ports["voice"] = free_port()
        env = self._env("voice", ARCONV_VOICE_HTTP_PORT="-1")
        p = await spawn("voice", ["services.voice"], env, self.workdir, self.ports["voice"])
        self.procs["voice"] = p
        await wait_healthy(p)
        return p

    async def start_stream(self, *, pacing_ms: int, redis: bool, profile: str = "") -> Proc:
        """(Re)starts the stream service with the delta stamp recorder."""
        self.stream_args = {"pacing_ms": pacing_ms, "redis": redis, "profile": profile}
        old = self.procs.pop("stream", None)
        if old is not None:
            await old.stop()
        self.stream_metrics_port = free_port()
        extra = {
            "ARCONV_LLM_PACING_MS": str(pacing_ms),
            "ARCONV_BENCH_STAMPS": str(self.stamps),
            "ARCONV_METRICS_PORT": str(self.stream_metrics_port),
        }
        if redis:
            extra["ARCONV_REDIS_URL"] = REDIS_URL
            extra["ARCONV_REDIS_PREFIX"] = self.redis_prefix
        if profile:
            extra["ARCONV_BENCH_PROFILE"] = profile
        p = await spawn(
            "stream",
            ["bench.stream_server"],
            self._env("stream", **extra),
            self.workdir,
            self.ports["stream"],
        )
        self.procs["stream"] = p
        await wait_healthy(p)
        self.stream_config = {"pacing_ms": pacing_ms, "bus": "redis" if redis else "in-process"}
        return p

    async def open_streams(self) -> float:
        """The stream service's arconv_stream_open_streams gauge."""
        r, w = await asyncio.open_connection("127.0.0.1", self.stream_metrics_port)
        w.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        await w.drain()
        body = (await r.read()).decode()
        w.close()
        for line in body.splitlines():
            if line.startswith("arconv_stream_open_streams "):
                return float(line.split()[1])
        return float("nan")

    async def close(self) -> None:
        for p in reversed(list(self.procs.values())):
            await p.stop()
        for db in self.dbs.values():
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._pg, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._clear_redis)

    def _clear_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{self.redis_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

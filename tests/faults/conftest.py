"""Faults injected for real: a Redis server the test owns (stopped and started again without
persistence), stream replicas as processes (killed with SIGKILL), clients that stop reading.

The rooms and avatar services run in the test's process (their faults are not these tests'
subject); the stream replicas a test kills run as `python -m services.stream` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import JwtAuthority
from services.common.server import RunningServer
from services.ports import free_port
from services.stream.app import StreamSettings
from tests.conftest import bearer
from tests.faults.own_redis import OwnRedis, own_redis  # noqa: F401
from tests.stream.conftest import (  # noqa: F401
    BASE,
    NOVA_PROMPT,
    Conversation,
    Mesh,
    bus_backend,
    converse,
    make_mesh,
    start_avatar_rooms,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Replica:
    """A stream replica running as its own process."""

    port: int
    proc: asyncio.subprocess.Process
    log: Path

    def kill(self) -> None:
        """kill -9: no shutdown, no cleanup; its leases and running replies are left behind."""
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


@dataclass
class ProcessMesh:
    """Avatar and rooms in this process; stream replicas as processes, on one Redis."""

    tmp: Path
    authority: JwtAuthority
    redis: OwnRedis
    clients: Mesh  # rooms and avatar calls: room(), messages(), md()
    stream_env: dict[str, str]
    replicas: list[Replica] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def md(self, user: str) -> tuple[tuple[str, str], ...]:
        return bearer(self.authority.mint(user, ttl_s=600))

    def ch(self, port: int) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.channels.append(channel)
        return channel

    async def start_replica(self, **env: str) -> Replica:
        port = free_port()
        log = self.tmp / f"stream-{port}.log"
        full = {**os.environ, **self.stream_env, "ARCONV_PORT": str(port), **env}
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.stream",
                cwd=ROOT,
                env=full,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        replica = Replica(port, proc, log)
        self.replicas.append(replica)
        for _ in range(600):
            if proc.returncode is not None:
                break
            # A new channel each time: a refused connection would back off for seconds.
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            try:
                got = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5
                )
                if got.status == health_pb2.HealthCheckResponse.SERVING:
                    return replica
            except grpc.aio.AioRpcError:
                pass
            finally:
                await channel.close()
            await asyncio.sleep(0.05)
        raise RuntimeError(f"stream replica did not start:\n{log.read_text()[-3000:]}")

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        for replica in self.replicas:
            await replica.stop()


@pytest.fixture
async def process_mesh(tmp_path: Path, own_redis: OwnRedis) -> AsyncIterator[ProcessMesh]:  # noqa: F811
    """Rooms and avatar (SQLite, in this process) and a factory of stream replica processes
    on the test's own Redis."""
    stack = contextlib.AsyncExitStack()
    servers: list[RunningServer] = []
    async with stack:
        authority, avatar, rooms = await start_avatar_rooms(tmp_path, stack)
        servers += [avatar, rooms]
        env = {
            "ARCONV_ENV": "test",
            "ARCONV_METRICS_PORT": "-1",
            "ARCONV_LOG_FORMAT": "text",
            "ARCONV_SHUTDOWN_GRACE_S": "0.5",
            "ARCONV_VAR_DIR": str(tmp_path),
            "ARCONV_ROOMS_ADDR": f"127.0.0.1:{rooms.port}",
            "ARCONV_AVATAR_ADDR": f"127.0.0.1:{avatar.port}",
            "ARCONV_REDIS_URL": own_redis.url,
            "ARCONV_REDIS_PREFIX": "faults:",
        }
        settings = StreamSettings(
            **BASE,
            var_dir=tmp_path,
            rooms_addr=f"127.0.0.1:{rooms.port}",
            avatar_addr=f"127.0.0.1:{avatar.port}",
        )
        clients = Mesh(tmp_path, authority, settings, rooms.port, avatar.port)
        mesh = ProcessMesh(tmp_path, authority, own_redis, clients, env)
        try:
            await clients.add_agent()
            yield mesh
        finally:
            await mesh.close()
            await clients.close()
            for server in reversed(servers):
                await server.stop(0)

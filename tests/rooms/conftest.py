"""Fixtures for the rooms service: its real server on SQLite or PostgreSQL, the real avatar
server with seeded agents, and a recording server standing in for the stream and token
services' internal notification RPCs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2_grpc as pb_grpc
from arconv.stream.v1 import stream_service_pb2 as stream_pb
from arconv.stream.v1 import stream_service_pb2_grpc as stream_grpc
from arconv.token.v1 import token_service_pb2 as token_pb
from arconv.token.v1 import token_service_pb2_grpc as token_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.auth import principal
from services.common.db import create_engine
from services.common.server import RunningServer, ServiceSpec
from services.ports import free_port
from services.rooms.app import RoomSettings, open_spec
from tests.common.log_capture import LogCapture
from tests.conftest import StartServer

AGENTS = ("nova", "atlas", "sage", "pixel", "orbit")


def room_settings(tmp_path: Path, **overrides: Any) -> RoomSettings:
    values: dict[str, Any] = {
        "env": "test",
        "var_dir": tmp_path,
        "metrics_port": -1,
        "log_format": "text",
        "shutdown_grace_s": 0.5,
        "rooms_notify_timeout_s": 2.0,
        "call_attempts": 3,
    }
    values.update(overrides)
    return RoomSettings(**values)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: connections to it are refused."""
    return free_port()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Empty for the default SQLite file under var_dir, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return ""


# --- the recording stand-in for NotifyRoomState and RevokeRoomTokens -------------------------


@dataclass
class Received:
    rpc: str
    room_id: str
    status: int  # RoomStatus value for NotifyRoomState, 0 for RevokeRoomTokens
    caller: str
    user: str


@dataclass
class Recorder:
    port: int = 0
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    # Status codes to fail the next calls with, in order.
    failures: list[grpc.StatusCode] = field(default_factory=list)

    def seen(self, room_id: str) -> list[tuple[str, int]]:
        return [(r.rpc, r.status) for r in self.received if r.room_id == room_id]

    async def _record(self, ctx: grpc.aio.ServicerContext, item: Received) -> None:
        self.attempts += 1
        if self.failures:
            code = self.failures.pop(0)
            await ctx.abort(code, "failing on purpose")
        self.received.append(item)


class _Stream(stream_grpc.StreamInternalServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self._rec = rec

    async def NotifyRoomState(self, request: Any, context: Any) -> Any:
        p = principal()
        await self._rec._record(
            context,
            Received("NotifyRoomState", request.room_id, request.status, p.subject, p.user_id),
        )
        return stream_pb.NotifyRoomStateResponse()


class _Token(token_grpc.TokenInternalServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self._rec = rec

    async def RevokeRoomTokens(self, request: Any, context: Any) -> Any:
        p = principal()
        await self._rec._record(
            context, Received("RevokeRoomTokens", request.room_id, 0, p.subject, p.user_id)
        )
        return token_pb.RevokeRoomTokensResponse(revoked_count=0)


@pytest.fixture
async def recorder(tmp_path: Path, start_server: StartServer) -> Recorder:
    """Serves both internal RPCs behind the mesh interceptor, so only service tokens pass."""
    rec = Recorder()

    def register(server: grpc.aio.Server) -> None:
        stream_grpc.add_StreamInternalServiceServicer_to_server(_Stream(rec), server)
        token_grpc.add_TokenInternalServiceServicer_to_server(_Token(rec), server)

    spec = ServiceSpec(
        name="recorder",
        grpc_service="arconv.stream.v1.StreamService",
        register=register,
    )
    running = await start_server(room_settings(tmp_path), spec)
    rec.port = running.port
    return rec


# --- the real avatar service -------------------------------------------------------------------


@pytest.fixture
async def avatar_port(
    tmp_path: Path,
    database_url: str,
    start_server: StartServer,
    service_md: Callable[..., Any],
) -> AsyncIterator[int]:
    """The real avatar server on the same back end, with AGENTS seeded via UpsertAgent."""
    from services.avatar.app import AvatarSettings
    from services.avatar.app import open_spec as avatar_open_spec

    settings = AvatarSettings(
        env="test",
        var_dir=tmp_path / "avatar",
        metrics_port=-1,
        log_format="text",
        database_url=database_url,
    )
    async with avatar_open_spec(settings) as spec:
        running = await start_server(settings, spec)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = avatar_grpc.AvatarInternalServiceStub(ch)
            for agent_id in AGENTS:
                await stub.UpsertAgent(
                    avatar_pb.UpsertAgentRequest(agent=_agent(agent_id)), metadata=service_md()
                )
        yield running.port
        await running.stop(0)


def _agent(agent_id: str) -> avatar_pb.Agent:
    return avatar_pb.Agent(
        agent_id=agent_id,
        name=agent_id.capitalize(),
        persona=avatar_pb.Persona(system_prompt=f"You are {agent_id.capitalize()}."),
        appearance=avatar_pb.Appearance(style=avatar_pb.AVATAR_STYLE_CARTOON),
        voice=avatar_pb.Voice(provider="elevenlabs", voice_id=f"{agent_id}-voice"),
    )


# --- the rooms server under test ---------------------------------------------------------------


@dataclass
class Rooms:
    """A running rooms server and a stub for it."""

    server: RunningServer
    stub: pb_grpc.RoomServiceStub
    internal: pb_grpc.RoomInternalServiceStub
    settings: RoomSettings
    # The test's own engine on the server's database, for looking behind the server's back.
    engine: AsyncEngine

    async def count(self, sql: str) -> int:
        """Runs a COUNT query against the server's own database."""
        async with self.engine.connect() as conn:
            return int((await conn.execute(text(sql))).scalar_one())


StartRooms = Callable[..., Awaitable[Rooms]]


@pytest.fixture
async def start_rooms(
    tmp_path: Path, database_url: str, start_server: StartServer, recorder: Recorder
) -> AsyncIterator[StartRooms]:
    """Starts rooms servers on one database (settings overridable per call)."""
    stack = contextlib.AsyncExitStack()
    channels: list[grpc.aio.Channel] = []

    async def start(**overrides: Any) -> Rooms:
        values: dict[str, Any] = {
            "database_url": database_url,
            "stream_addr": f"127.0.0.1:{recorder.port}",
            "token_addr": f"127.0.0.1:{recorder.port}",
        }
        values.update(overrides)
        settings = room_settings(tmp_path, **values)
        spec = await stack.enter_async_context(open_spec(settings))
        running = await start_server(settings, spec)
        # Stop serving before the spec closes its engine and channels.
        stack.push_async_callback(running.stop, 0)
        engine = create_engine(settings.service_database_url("rooms"))
        stack.push_async_callback(engine.dispose)
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        channels.append(ch)
        return Rooms(
            running,
            pb_grpc.RoomServiceStub(ch),
            pb_grpc.RoomInternalServiceStub(ch),
            settings,
            engine,
        )

    yield start
    for ch in channels:
        await ch.close()
    await stack.aclose()


@pytest.fixture
async def rooms(start_rooms: StartRooms, avatar_port: int) -> Rooms:
    """The rooms server wired to the real avatar service and the recorder."""
    return await start_rooms(avatar_addr=f"127.0.0.1:{avatar_port}")


@pytest.fixture
def rpc_log() -> Iterator[LogCapture]:
    """The `arconv.rpc` log lines (one per call) while the test runs."""
    capture = LogCapture("test")
    logger = logging.getLogger("arconv.rpc")
    logger.addHandler(capture)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield capture
    logger.removeHandler(capture)
    logger.setLevel(level)

"""Ids of the wrong shape (a 3 MB stream id, a room id that is not a UUID) are refused with
INVALID_ARGUMENT before any storage sees them: the test's own Redis, watched with MONITOR,
never receives a command that carries them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb
from arconv.token.v1 import token_service_pb2 as token_pb
from arconv.token.v1 import token_service_pb2_grpc as token_grpc

from services.common.kv import RedisKV
from tests.faults import own_redis as own_redis_fixtures
from tests.faults.own_redis import OwnRedis
from tests.stream import conftest as stream_fixtures
from tests.stream.conftest import Mesh, MeshFactory, converse
from tests.token import conftest as token_fixtures

make_mesh = stream_fixtures.make_mesh
own_redis = own_redis_fixtures.own_redis
mesh_factory = token_fixtures.mesh_factory
kv_backend = token_fixtures.kv_backend

MARK = "bogus-id-"
HUGE = MARK + "z" * 3_000_000
NOT_A_UUID = [HUGE, MARK + "1", "00000000-0000-4000-8000-000000000000\n"]
NOT_AN_AGENT_ID = [HUGE, MARK + "Upper"]
NOT_A_TOKEN_ID = [HUGE, MARK + "has space"]


class Monitor:
    """Every command the Redis server receives, as text."""

    def __init__(self, url: str) -> None:
        self._client = aioredis.Redis.from_url(url)
        self.commands: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()

    async def __aenter__(self) -> Monitor:
        started = asyncio.Event()

        async def watch() -> None:
            async with self._client.monitor() as m:
                started.set()
                async for cmd in m.listen():
                    text = str(cmd.get("command", ""))
                    self.commands.append(text)
                    if "monitor-end" in text:
                        self._ended.set()

        self._task = asyncio.ensure_future(watch())
        await asyncio.wait_for(started.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        # A last command that the monitor sees after everything before it.
        await self._client.execute_command("ECHO", "monitor-end")
        assert self._task is not None
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._ended.wait(), 5)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        await self._client.aclose()

    def carrying(self, mark: str) -> list[str]:
        return [c[:80] for c in self.commands if mark in c]


async def _invalid(call: Awaitable[Any], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{err.code()}: {err.details()}"
    assert field in (err.details() or ""), err.details()
    assert len(err.details() or "") < 2_000


@pytest.fixture
async def mesh(make_mesh: MeshFactory, own_redis: OwnRedis) -> Mesh:
    return await make_mesh(bus={"redis_url": own_redis.url, "redis_prefix": "ids:"})


async def test_stream_ids_are_checked_before_redis(mesh: Mesh, own_redis: OwnRedis) -> None:
    md = mesh.md("alice")
    room_id = await mesh.room("alice")
    stream = mesh.stream()
    conv = await converse(mesh, "alice", room_id)
    async with Monitor(own_redis.url) as seen:
        await _invalid(
            stream.Interrupt(pb.InterruptRequest(room_id=room_id, stream_id=HUGE), metadata=md),
            "stream_id",
        )
        await _invalid(
            stream.Interrupt(
                pb.InterruptRequest(room_id=room_id, stream_id="has space"), metadata=md
            ),
            "stream_id",
        )
        for bad in NOT_A_UUID:
            await _invalid(
                stream.Interrupt(pb.InterruptRequest(room_id=bad), metadata=md), "room_id"
            )
            await _invalid(
                stream.PauseStream(pb.PauseStreamRequest(room_id=bad), metadata=md), "room_id"
            )
            await _invalid(
                stream.SendMessage(
                    pb.SendMessageRequest(room_id=bad, content="hi", client_message_id="c"),
                    metadata=md,
                ),
                "room_id",
            )

            async def subscribe(bad: str = bad) -> None:
                async for _ in stream.Subscribe(pb.SubscribeRequest(room_id=bad), metadata=md):
                    pass

            await _invalid(subscribe(), "room_id")
        # On an open Converse stream, an interrupt with a malformed id is a stream_error.
        await conv.send(pb.ConverseRequest(interrupt=pb.Interrupt(stream_id=HUGE)))
        error = (await conv.until_kind("stream_error"))[-1].stream_error
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "stream_id" in error.message
    assert seen.carrying(MARK) == []
    assert seen.commands, "the monitor saw nothing at all"
    await conv.call.done_writing()


async def test_rooms_avatar_and_token_ids_are_checked_first(
    mesh_factory: Callable[..., Any], own_redis: OwnRedis
) -> None:
    mesh = await mesh_factory()
    kv = RedisKV(own_redis.url, prefix="ids:")
    try:
        token_srv = await mesh.start_token(kv=kv, redis_url=own_redis.url)
        token = token_grpc.TokenServiceStub(mesh._ch(token_srv.port))
        avatar = avatar_grpc.AvatarServiceStub(mesh._ch(mesh.avatar_port))
        md = mesh.md("alice")
        async with Monitor(own_redis.url) as seen:
            for bad in NOT_A_UUID:
                await _invalid(
                    token.IssueProviderToken(
                        token_pb.IssueProviderTokenRequest(
                            room_id=bad, operations=["tts.synthesize"]
                        ),
                        metadata=md,
                    ),
                    "room_id",
                )
                await _invalid(
                    mesh.rooms.GetRoom(rooms_pb.GetRoomRequest(room_id=bad), metadata=md),
                    "room_id",
                )
                await _invalid(
                    mesh.rooms.ListMessages(rooms_pb.ListMessagesRequest(room_id=bad), metadata=md),
                    "room_id",
                )
            for bad in NOT_A_TOKEN_ID:
                await _invalid(
                    token.RevokeProviderToken(
                        token_pb.RevokeProviderTokenRequest(token_id=bad), metadata=md
                    ),
                    "token_id",
                )
            for bad in NOT_AN_AGENT_ID:
                await _invalid(
                    avatar.GetAgent(avatar_pb.GetAgentRequest(agent_id=bad), metadata=md),
                    "agent_id",
                )
                await _invalid(
                    avatar.GetAvatar(avatar_pb.GetAvatarRequest(agent_id=bad), metadata=md),
                    "agent_id",
                )
                await _invalid(
                    mesh.rooms.CreateRoom(rooms_pb.CreateRoomRequest(agent_id=bad), metadata=md),
                    "agent_id",
                )
        assert seen.carrying(MARK) == []
    finally:
        await kv.close()

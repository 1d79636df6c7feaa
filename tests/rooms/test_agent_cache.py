"""The rooms service's cache of what the avatar service says about agents.

The cache itself against a counting directory and a fake clock, then the rooms server against a
counting stand-in for the avatar service (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as pb

from services.common.server import ServiceSpec
from services.rooms.agents import CachedAgentDirectory
from services.rooms.app import RoomSettings
from services.rooms.domain import AgentNotFound, AgentSummary, AvatarServiceUnavailable
from tests.conftest import FakeClock, StartServer
from tests.rooms.conftest import StartRooms, room_settings
from tests.rooms.helpers import expect_error

TTL = 5.0


class Directory:
    """An AgentDirectory that counts its calls. Calls wait while `gate` is clear."""

    def __init__(self, *agents: str) -> None:
        self.names = {a: a.capitalize() for a in agents}
        self.calls: Counter[str] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None
        self.unavailable = False

    async def _enter(self, what: str) -> None:
        self.calls[what] += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error

    async def require_agent(self, agent_id: str) -> None:
        await self._enter("require_agent")
        if agent_id not in self.names:
            raise AgentNotFound(agent_id)

    async def summary(self, agent_id: str) -> AgentSummary:
        await self._enter("summary")
        if self.unavailable or agent_id not in self.names:
            return AgentSummary(agent_id=agent_id, unavailable=True)
        return AgentSummary(agent_id=agent_id, name=self.names[agent_id])


def cached(
    inner: Directory, clock: FakeClock, ttl_s: float = TTL, **kw: Any
) -> CachedAgentDirectory:
    return CachedAgentDirectory(inner, ttl_s=ttl_s, clock=clock, **kw)


async def test_a_second_summary_comes_from_the_cache() -> None:
    inner, clock = Directory("nova"), FakeClock()
    agents = cached(inner, clock)
    first = await agents.summary("nova")
    clock.now += TTL - 0.01
    assert await agents.summary("nova") == first == AgentSummary(agent_id="nova", name="Nova")
    assert inner.calls == {"summary": 1}


async def test_a_summary_expires_after_the_ttl() -> None:
    inner, clock = Directory("nova"), FakeClock()
    agents = cached(inner, clock)
    await agents.summary("nova")
    clock.now += TTL
    inner.names["nova"] = "Nova II"
    assert (await agents.summary("nova")).name == "Nova II"
    assert inner.calls == {"summary": 2}


async def test_existence_is_cached_and_a_cached_summary_answers_it() -> None:
    inner, clock = Directory("nova", "atlas"), FakeClock()
    agents = cached(inner, clock)
    await agents.require_agent("nova")
    await agents.require_agent("nova")
    await agents.summary("atlas")
    await agents.require_agent("atlas")
    assert inner.calls == {"require_agent": 1, "summary": 1}
    clock.now += TTL
    await agents.require_agent("nova")
    assert inner.calls["require_agent"] == 2


async def test_an_unknown_agent_is_not_remembered() -> None:
    inner, clock = Directory(), FakeClock()
    agents = cached(inner, clock)
    with pytest.raises(AgentNotFound):
        await agents.require_agent("nova")
    # An agent added a moment later is usable at once.
    inner.names["nova"] = "Nova"
    await agents.require_agent("nova")
    assert inner.calls == {"require_agent": 2}


async def test_errors_and_unavailable_summaries_are_not_remembered() -> None:
    inner, clock = Directory("nova"), FakeClock()
    agents = cached(inner, clock)
    inner.error = AvatarServiceUnavailable("UNAVAILABLE")
    with pytest.raises(AvatarServiceUnavailable):
        await agents.require_agent("nova")
    inner.error = None
    await agents.require_agent("nova")
    assert inner.calls["require_agent"] == 2

    inner.unavailable = True
    assert (await agents.summary("nova")).unavailable
    inner.unavailable = False
    assert not (await agents.summary("nova")).unavailable
    assert inner.calls["summary"] == 2
    await agents.summary("nova")
    assert inner.calls["summary"] == 2


async def test_concurrent_misses_share_one_call() -> None:
    inner, clock = Directory("nova"), FakeClock()
    agents = cached(inner, clock)
    inner.gate.clear()
    waiting = [asyncio.ensure_future(agents.summary("nova")) for _ in range(10)]
    exists = [asyncio.ensure_future(agents.require_agent("nova")) for _ in range(10)]
    await asyncio.sleep(0)
    inner.gate.set()
    summaries = await asyncio.gather(*waiting, *exists)
    assert {s.name for s in summaries[:10]} == {"Nova"}
    assert inner.calls == {"summary": 1, "require_agent": 1}


async def test_a_shared_error_reaches_every_caller_and_is_not_kept() -> None:
    inner, clock = Directory("nova"), FakeClock()
    agents = cached(inner, clock)
    inner.gate.clear()
    inner.error = AvatarServiceUnavailable("DEADLINE_EXCEEDED")
    waiting = [asyncio.ensure_future(agents.require_agent("nova")) for _ in range(5)]
    await asyncio.sleep(0)
    inner.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, AvatarServiceUnavailable) for r in results)
    assert inner.calls == {"require_agent": 1}
    inner.error = None
    await agents.require_agent("nova")
    assert inner.calls == {"require_agent": 2}


async def test_a_cancelled_caller_does_not_cancel_the_shared_call() -> None:
    inner, clock = Directory("nova"), FakeClock()
    agents = cached(inner, clock)
    inner.gate.clear()
    first = asyncio.ensure_future(agents.summary("nova"))
    second = asyncio.ensure_future(agents.summary("nova"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    inner.gate.set()
    assert (await second).name == "Nova"
    assert first.cancelled()
    await agents.summary("nova")
    assert inner.calls == {"summary": 1}


async def test_a_ttl_of_zero_asks_every_time() -> None:
    inner, clock = Directory("nova"), FakeClock()
    agents = cached(inner, clock, ttl_s=0)
    await agents.summary("nova")
    await agents.summary("nova")
    await agents.require_agent("nova")
    await agents.require_agent("nova")
    inner.gate.clear()
    waiting = [asyncio.ensure_future(agents.summary("nova")) for _ in range(3)]
    await asyncio.sleep(0)
    inner.gate.set()
    await asyncio.gather(*waiting)
    assert inner.calls == {"summary": 5, "require_agent": 2}


async def test_the_cache_keeps_the_most_recently_used_agents() -> None:
    inner, clock = Directory("nova", "atlas", "sage"), FakeClock()
    agents = cached(inner, clock, max_entries=2)
    for agent_id in ("nova", "atlas", "nova", "sage"):
        await agents.summary(agent_id)
    assert inner.calls == {"summary": 3}
    await agents.summary("nova")
    await agents.summary("sage")
    assert inner.calls == {"summary": 3}
    await agents.summary("atlas")
    assert inner.calls == {"summary": 4}


# --- through the rooms server ------------------------------------------------------------------


@dataclass
class Avatar:
    """A stand-in for the avatar service's GetAgent and GetAvatar that counts the calls."""

    port: int = 0
    agents: set[str] = field(default_factory=lambda: {"nova", "atlas"})
    calls: Counter[str] = field(default_factory=Counter)
    # Status codes to fail the next GetAgent calls with, in order.
    failures: list[grpc.StatusCode] = field(default_factory=list)


class _AvatarServicer(avatar_grpc.AvatarServiceServicer):
    def __init__(self, avatar: Avatar) -> None:
        self._a = avatar

    async def GetAgent(self, request: Any, context: Any) -> Any:
        self._a.calls["GetAgent"] += 1
        if self._a.failures:
            await context.abort(self._a.failures.pop(0), "failing on purpose")
        if request.agent_id not in self._a.agents:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such agent")
        agent = avatar_pb.Agent(agent_id=request.agent_id, name=request.agent_id.capitalize())
        return avatar_pb.GetAgentResponse(agent=agent)

    async def GetAvatar(self, request: Any, context: Any) -> Any:
        self._a.calls["GetAvatar"] += 1
        await context.abort(grpc.StatusCode.NOT_FOUND, "no avatar was ever requested")


@pytest.fixture
async def avatar(tmp_path: Path, start_server: StartServer) -> Avatar:
    a = Avatar()

    def register(server: grpc.aio.Server) -> None:
        avatar_grpc.add_AvatarServiceServicer_to_server(_AvatarServicer(a), server)

    spec = ServiceSpec(
        name="avatar", grpc_service="arconv.avatar.v1.AvatarService", register=register
    )
    a.port = (await start_server(room_settings(tmp_path), spec)).port
    return a


async def test_rooms_ask_the_avatar_service_once_per_agent_within_the_ttl(
    start_rooms: StartRooms, avatar: Avatar, user_md
) -> None:
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{avatar.port}")
    md = user_md("alice")
    room = (await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)).room
    assert avatar.calls == {"GetAgent": 1}
    for _ in range(3):
        got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.room_id), metadata=md)
        assert got.room.agent.name == "Nova" and not got.room.agent.unavailable
    await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=user_md("bob"))
    assert avatar.calls == {"GetAgent": 2, "GetAvatar": 1}


async def test_rooms_with_a_ttl_of_zero_ask_every_time(
    start_rooms: StartRooms, avatar: Avatar, user_md
) -> None:
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{avatar.port}", rooms_agent_cache_ttl_s=0)
    md = user_md("alice")
    room = (await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)).room
    for _ in range(2):
        await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=room.room_id), metadata=md)
    await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)
    assert avatar.calls == {"GetAgent": 4, "GetAvatar": 2}


async def test_rooms_do_not_remember_avatar_service_errors(
    start_rooms: StartRooms, avatar: Avatar, user_md
) -> None:
    # One attempt per call, so the avatar service's error reaches the rooms service.
    rooms = await start_rooms(avatar_addr=f"127.0.0.1:{avatar.port}", call_attempts=1)
    md = user_md("alice")
    avatar.failures = [grpc.StatusCode.UNAVAILABLE]
    await expect_error(
        grpc.StatusCode.UNAVAILABLE,
        rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md),
    )
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="orbit"), metadata=md),
    )
    avatar.agents.add("orbit")
    for agent_id in ("nova", "orbit"):
        await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id=agent_id), metadata=md)
    assert avatar.calls == {"GetAgent": 4}


def test_the_ttl_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCONV_ROOMS_AGENT_CACHE_TTL_S", raising=False)
    assert RoomSettings().rooms_agent_cache_ttl_s == 5.0
    monkeypatch.setenv("ARCONV_ROOMS_AGENT_CACHE_TTL_S", "0")
    assert RoomSettings().rooms_agent_cache_ttl_s == 0

"""The avatar service as the rooms service sees it: does an agent exist, and its summary."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import grpc
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc

from services.common.cache import TtlCache
from services.common.errors import InvalidArgument
from services.rooms.domain import AgentNotFound, AgentSummary, AvatarServiceUnavailable

log = logging.getLogger("arconv.rooms.agents")
T = TypeVar("T")

AGENT_CACHE_MAX_ENTRIES = 1024


class AgentDirectory(Protocol):
    async def require_agent(self, agent_id: str) -> None:
        """Returns if the agent exists; AgentNotFound, or AvatarServiceUnavailable."""

    async def summary(self, agent_id: str) -> AgentSummary:
        """Name and avatar of the agent; `unavailable` set when they cannot be had."""


class GrpcAgentDirectory:
    """AgentDirectory over AvatarService (GetAgent, GetAvatar), called as this service."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self._stub = avatar_grpc.AvatarServiceStub(channel)
        self._timeout = timeout_s

    async def require_agent(self, agent_id: str) -> None:
        try:
            await self._stub.GetAgent(
                avatar_pb.GetAgentRequest(agent_id=agent_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise AgentNotFound(agent_id) from exc
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(
                    f"agent_id {agent_id!r} is not valid: {exc.details()}",
                    violations=[("agent_id", "rejected by the avatar service")],
                ) from exc
            log.warning(
                "GetAgent failed", extra={"fields": {"agent_id": agent_id, "code": code.name}}
            )
            raise AvatarServiceUnavailable(code.name) from exc

    async def summary(self, agent_id: str) -> AgentSummary:
        agent_res, avatar_res = await asyncio.gather(
            _outcome(
                self._stub.GetAgent(
                    avatar_pb.GetAgentRequest(agent_id=agent_id), timeout=self._timeout
                )
            ),
            _outcome(
                self._stub.GetAvatar(
                    avatar_pb.GetAvatarRequest(agent_id=agent_id), timeout=self._timeout
                )
            ),
        )
        if isinstance(agent_res, grpc.aio.AioRpcError):
            log.warning(
                "agent summary unavailable",
                extra={"fields": {"agent_id": agent_id, "code": agent_res.code().name}},
            )
            return AgentSummary(agent_id=agent_id, unavailable=True)
        name = agent_res.agent.name
        if isinstance(avatar_res, grpc.aio.AioRpcError):
            if avatar_res.code() == grpc.StatusCode.NOT_FOUND:
                return AgentSummary(agent_id=agent_id, name=name)
            log.warning(
                "avatar summary unavailable",
                extra={"fields": {"agent_id": agent_id, "code": avatar_res.code().name}},
            )
            return AgentSummary(agent_id=agent_id, unavailable=True)
        avatar = avatar_res.avatar
        url = ""
        if avatar.status == avatar_pb.AVATAR_STATUS_READY:
            url = next((lod.url for lod in avatar.lods if lod.level == 0), "")
        return AgentSummary(
            agent_id=agent_id,
            name=name,
            avatar_status=avatar_pb.AvatarStatus.Name(avatar.status),
            avatar_url=url,
        )


async def _outcome(call: Awaitable[T]) -> T | grpc.aio.AioRpcError:
    """The response, or the RPC error as a value (other exceptions propagate)."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        return exc


class CachedAgentDirectory:
    """An AgentDirectory that remembers the avatar service's answers for `ttl_s` seconds.

    Cached: that an agent exists, and summaries the avatar service gave in full. Never
    cached: errors (an unknown agent, an unreachable avatar service) and `unavailable`
    summaries, so a new agent is usable at once and an outage is not remembered. A name
    or avatar changed in the avatar service shows in GetRoom at most `ttl_s` later.
    Concurrent misses for one agent share one call to the avatar service. A `ttl_s` of 0
    turns all of this off: every call goes to the avatar service (bench figure
    (e), CreateRoom and GetRoom calls/s).
    """

    def __init__(
        self,
        inner: AgentDirectory,
        *,
        ttl_s: float,
        max_entries: int = AGENT_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._on = ttl_s > 0
        self._exists: TtlCache[bool] = TtlCache(ttl_s, max_entries, clock)
        self._summaries: TtlCache[AgentSummary] = TtlCache(ttl_s, max_entries, clock)

    async def require_agent(self, agent_id: str) -> None:
        if not self._on:
            await self._inner.require_agent(agent_id)
        elif self._summaries.get(agent_id) is None:
            await self._exists.get_or_load(agent_id, lambda: self._confirm(agent_id))

    async def _confirm(self, agent_id: str) -> bool:
        await self._inner.require_agent(agent_id)
        return True

    async def summary(self, agent_id: str) -> AgentSummary:
        if not self._on:
            return await self._inner.summary(agent_id)
        return await self._summaries.get_or_load(
            agent_id, lambda: self._inner.summary(agent_id), keep=_complete
        )


def _complete(summary: AgentSummary) -> bool:
    return not summary.unavailable

"""The avatar service as the rooms service sees it: does an agent exist, and its summary."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol, TypeVar

import grpc
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc

from services.common.errors import InvalidArgument
from services.rooms.domain import AgentNotFound, AgentSummary, AvatarServiceUnavailable

log = logging.getLogger("arconv.rooms.agents")
T = TypeVar("T")


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

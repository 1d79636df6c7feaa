"""What the token service asks other services: the caller's room (rooms) and its agent's voice
(avatar). Calls act for the user, so the rooms service enforces ownership."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import grpc
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc

from services.common.cache import TtlCache
from services.common.clients import ServiceChannels, for_user
from services.common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.common.status import TRANSIENT_CODES


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room_id: str
    user_id: str
    agent_id: str
    ended: bool


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    provider: str
    voice_id: str


class Directory(Protocol):
    async def room(self, *, user_id: str, room_id: str) -> RoomInfo: ...

    async def voice(self, *, user_id: str, agent_id: str) -> VoiceInfo: ...


@contextlib.contextmanager
def _rpc_errors(service: str, not_found: Callable[[], DomainError]) -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.NOT_FOUND:
            raise not_found() from exc
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise InvalidArgument(
                f"the {service} service refused the request: {exc.details()}"
            ) from exc
        if code in TRANSIENT_CODES:
            raise Unavailable(f"the {service} service is unavailable; retry") from exc
        raise Unavailable(
            f"the {service} service failed ({code.name}); retry later", reason="DEPENDENCY_FAILED"
        ) from exc


class GrpcDirectory:
    """Rooms and avatar over the mesh. Addresses are read from `addresses()` at call time."""

    def __init__(self, channels: ServiceChannels, addresses: Callable[[], tuple[str, str]]) -> None:
        self._channels = channels
        self._addresses = addresses

    async def room(self, *, user_id: str, room_id: str) -> RoomInfo:
        stub = rooms_grpc.RoomServiceStub(self._channels.channel(self._addresses()[0]))
        with _rpc_errors("rooms", lambda: NotFound("room", room_id)):
            resp = await stub.GetRoom(
                rooms_pb.GetRoomRequest(room_id=room_id), metadata=for_user(user_id)
            )
        room = resp.room
        if room.user_id != user_id:
            # Defense in depth: the rooms service already answers NOT_FOUND for this.
            raise NotFound("room", room_id)
        return RoomInfo(
            room_id=room.room_id,
            user_id=room.user_id,
            agent_id=room.agent_id,
            ended=room.status == rooms_pb.ROOM_STATUS_ENDED,
        )

    async def voice(self, *, user_id: str, agent_id: str) -> VoiceInfo:
        stub = avatar_grpc.AvatarServiceStub(self._channels.channel(self._addresses()[1]))

        def gone() -> DomainError:
            return FailedPrecondition(
                f"the room's agent {agent_id!r} no longer exists",
                reason="AGENT_NOT_FOUND",
                subject=f"agents/{agent_id}",
            )

        with _rpc_errors("avatar", gone):
            resp = await stub.GetAgent(
                avatar_pb.GetAgentRequest(agent_id=agent_id), metadata=for_user(user_id)
            )
        voice = resp.agent.voice
        if not voice.provider or not voice.voice_id:
            raise FailedPrecondition(
                f"the agent {agent_id!r} has no voice",
                reason="AGENT_HAS_NO_VOICE",
                subject=f"agents/{agent_id}",
            )
        return VoiceInfo(provider=voice.provider, voice_id=voice.voice_id)


VOICE_CACHE_MAX_ENTRIES = 4096


class CachedDirectory:
    """A Directory that remembers agents' voices for `ttl_s` seconds.

    Rooms are always asked for (a room that ended must get no new token). A voice changed
    in the avatar service is used for new tokens at most `ttl_s` later; errors (an agent
    gone or without a voice, an unreachable avatar service) are never remembered.
    Concurrent misses for one agent share one call. A `ttl_s` of 0 keeps nothing.
    No avatar call per issued token (bench figure (e), IssueProviderToken calls/s).
    """

    def __init__(
        self,
        inner: Directory,
        *,
        ttl_s: float,
        max_entries: int = VOICE_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._voices: TtlCache[VoiceInfo] = TtlCache(ttl_s, max_entries, clock)

    async def room(self, *, user_id: str, room_id: str) -> RoomInfo:
        return await self._inner.room(user_id=user_id, room_id=room_id)

    async def voice(self, *, user_id: str, agent_id: str) -> VoiceInfo:
        return await self._voices.get_or_load(
            agent_id, lambda: self._inner.voice(user_id=user_id, agent_id=agent_id)
        )

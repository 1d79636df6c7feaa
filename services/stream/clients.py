"""gRPC adapters of `Rooms` and `Agents`: the rooms and avatar services, acting for a user."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

import grpc
from arconv.avatar.v1 import avatar_service_pb2 as avatar_pb
from arconv.avatar.v1 import avatar_service_pb2_grpc as avatar_grpc
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2

from services.common.cache import TtlCache
from services.common.clients import for_user
from services.common.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.common.status import TRANSIENT_CODES, status_details
from services.stream import mapping
from services.stream.ports import (
    Agents,
    MessageStatus,
    Persona,
    RoomInfo,
    RoomStatus,
    Sender,
    StoredMessage,
)


@contextlib.contextmanager
def _translate(service: str, resource: str, name: str) -> Iterator[None]:
    """Turns the callee's status into this service's domain errors."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.NOT_FOUND:
            raise NotFound(resource, name) from exc
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            info = _error_info(exc)
            raise FailedPrecondition(
                details,
                reason=info.reason if info is not None and info.reason else None,
                metadata=dict(info.metadata) if info is not None else None,
                subject=name,
            ) from exc
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            raise InvalidArgument(details) from exc
        if code in TRANSIENT_CODES:
            raise Unavailable(f"the {service} service is unavailable: {details}") from exc
        raise Internal(f"the {service} service failed: {code.name}: {details}") from exc


def _error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The callee's ErrorInfo (reason and metadata), if its status carries one."""
    try:
        details = status_details(exc)
    except (ValueError, DecodeError):  # unreadable or mismatched details: ignore them
        return None
    return next((d for d in details if isinstance(d, error_details_pb2.ErrorInfo)), None)


def _room(room: rooms_pb.Room) -> RoomInfo:
    status = mapping.ROOM_STATUS_FROM_PB.get(room.status)
    if status is None:
        raise Internal(f"the rooms service returned room status {room.status}")
    return RoomInfo(room.room_id, room.user_id, room.agent_id, status)


def _message(m: rooms_pb.Message) -> StoredMessage:
    return StoredMessage(
        message_id=m.message_id,
        sender=mapping.SENDER_FROM_PB.get(m.sender_type, Sender.HUMAN),
        content=m.content,
        text=m.text,
        stream_id=m.stream_id,
        status=mapping.MESSAGE_STATUS_FROM_PB.get(m.status, MessageStatus.COMPLETE),
    )


class GrpcRooms:
    """`Rooms` over arconv.rooms.v1.RoomService and RoomInternalService (AppendMessage)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = rooms_grpc.RoomServiceStub(channel)
        self._internal = rooms_grpc.RoomInternalServiceStub(channel)

    async def get_room(self, user_id: str, room_id: str) -> RoomInfo:
        with _translate("rooms", "room", room_id):
            r = await self._stub.GetRoom(
                rooms_pb.GetRoomRequest(room_id=room_id), metadata=for_user(user_id)
            )
        return _room(r.room)

    async def append_message(
        self,
        user_id: str,
        room_id: str,
        *,
        sender: Sender,
        content: str,
        idempotency_key: str,
        text: str = "",
        stream_id: str = "",
        status: MessageStatus = MessageStatus.COMPLETE,
    ) -> tuple[StoredMessage, bool]:
        request = rooms_pb.AppendMessageRequest(
            room_id=room_id,
            sender_type=mapping.SENDER_TO_PB[sender],
            content=content,
            text=text,
            stream_id=stream_id,
            status=mapping.MESSAGE_STATUS_TO_PB[status],
            idempotency_key=idempotency_key,
        )
        with _translate("rooms", "room", room_id):
            r = await self._internal.AppendMessage(request, metadata=for_user(user_id))
        return _message(r.message), r.created

    async def recent_messages(
        self, user_id: str, room_id: str, limit: int
    ) -> Sequence[StoredMessage]:
        if limit <= 0:
            return []  # a page_size of 0 would ask the rooms service for its default page
        with _translate("rooms", "room", room_id):
            r = await self._stub.ListMessages(
                rooms_pb.ListMessagesRequest(room_id=room_id, page_size=limit, latest=True),
                metadata=for_user(user_id),
            )
        return [_message(m) for m in r.messages]

    async def pause_room(self, user_id: str, room_id: str) -> RoomStatus:
        with _translate("rooms", "room", room_id):
            r = await self._stub.PauseRoom(
                rooms_pb.PauseRoomRequest(room_id=room_id), metadata=for_user(user_id)
            )
        return _room(r.room).status

    async def resume_room(self, user_id: str, room_id: str) -> RoomStatus:
        with _translate("rooms", "room", room_id):
            r = await self._stub.ResumeRoom(
                rooms_pb.ResumeRoomRequest(room_id=room_id), metadata=for_user(user_id)
            )
        return _room(r.room).status


class GrpcAgents:
    """`Agents` over arconv.avatar.v1.AvatarService."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = avatar_grpc.AvatarServiceStub(channel)

    async def get_persona(self, user_id: str, agent_id: str) -> Persona:
        with _translate("avatar", "agent", agent_id):
            r = await self._stub.GetAgent(
                avatar_pb.GetAgentRequest(agent_id=agent_id), metadata=for_user(user_id)
            )
        a = r.agent
        return Persona(a.agent_id, a.name, a.persona.system_prompt, a.persona.model)


PERSONA_CACHE_MAX_ENTRIES = 4096


class CachedAgents:
    """`Agents` that remembers each persona for `ttl_s` seconds, per user and agent.

    A conversation asks for the persona on every reply; within `ttl_s` the answer comes
    from memory. Errors (an unknown agent, an unreachable avatar service) are never cached,
    and callers missing the same persona at once share one call. A persona changed in the
    avatar service reaches replies at most `ttl_s` later. A `ttl_s` of 0 asks every time.
    No avatar call per reply (bench figure (a), chunks/s).
    """

    def __init__(
        self,
        inner: Agents,
        *,
        ttl_s: float,
        max_entries: int = PERSONA_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._on = ttl_s > 0
        self._personas: TtlCache[Persona] = TtlCache(ttl_s, max_entries, clock)

    async def get_persona(self, user_id: str, agent_id: str) -> Persona:
        if not self._on:
            return await self._inner.get_persona(user_id, agent_id)
        return await self._personas.get_or_load(
            f"{user_id}\0{agent_id}", lambda: self._inner.get_persona(user_id, agent_id)
        )

"""RoomService over gRPC: validate, call the use case, map to protobuf."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import grpc
from arconv.rooms.v1 import rooms_service_pb2 as pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as pb_grpc
from google.protobuf import timestamp_pb2

from services.common.auth import principal
from services.markers import strip_markers
from services.rooms import domain
from services.rooms.domain import Action, AgentSummary, Message, MessageStatus, Room, SenderType
from services.rooms.service import Rooms

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_ROOM_STATUS = {
    domain.RoomStatus.ACTIVE: pb.ROOM_STATUS_ACTIVE,
    domain.RoomStatus.PAUSED: pb.ROOM_STATUS_PAUSED,
    domain.RoomStatus.ENDED: pb.ROOM_STATUS_ENDED,
}
_SENDER_FROM_PB = {pb.SENDER_TYPE_HUMAN: SenderType.HUMAN, pb.SENDER_TYPE_AGENT: SenderType.AGENT}
_SENDER_TO_PB = {v: k for k, v in _SENDER_FROM_PB.items()}
_MSG_STATUS_FROM_PB = {
    pb.MESSAGE_STATUS_UNSPECIFIED: MessageStatus.COMPLETE,
    pb.MESSAGE_STATUS_COMPLETE: MessageStatus.COMPLETE,
    pb.MESSAGE_STATUS_INTERRUPTED: MessageStatus.INTERRUPTED,
    pb.MESSAGE_STATUS_FAILED: MessageStatus.FAILED,
}
_MSG_STATUS_TO_PB = {
    MessageStatus.COMPLETE: pb.MESSAGE_STATUS_COMPLETE,
    MessageStatus.INTERRUPTED: pb.MESSAGE_STATUS_INTERRUPTED,
    MessageStatus.FAILED: pb.MESSAGE_STATUS_FAILED,
}


def _ts(t: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


def room_pb(room: Room, agent: AgentSummary | None = None) -> pb.Room:
    out = pb.Room(
        room_id=room.room_id,
        user_id=room.user_id,
        agent_id=room.agent_id,
        status=_ROOM_STATUS[room.status],
        create_time=_ts(room.create_time),
        last_activity_time=_ts(room.last_activity_time),
    )
    if room.end_time is not None:
        out.end_time.CopyFrom(_ts(room.end_time))
    if agent is not None:
        out.agent.CopyFrom(
            pb.AgentSummary(
                agent_id=agent.agent_id,
                name=agent.name,
                avatar_status=agent.avatar_status or "AVATAR_STATUS_UNSPECIFIED",
                avatar_url=agent.avatar_url,
                unavailable=agent.unavailable,
            )
        )
    return out


def message_pb(m: Message) -> pb.Message:
    return pb.Message(
        message_id=m.message_id,
        room_id=m.room_id,
        sender_id=m.sender_id,
        sender_type=_SENDER_TO_PB[m.sender_type],
        content=m.content,
        text=m.text,
        stream_id=m.stream_id,
        status=_MSG_STATUS_TO_PB[m.status],
        create_time=_ts(m.create_time),
    )


class RoomServicer(pb_grpc.RoomServiceServicer):
    def __init__(self, *, rooms: Rooms) -> None:
        self._rooms = rooms

    async def CreateRoom(
        self, request: pb.CreateRoomRequest, context: Ctx
    ) -> pb.CreateRoomResponse:
        user = principal().require_user()
        agent_id = domain.validate_agent_id(request.agent_id)
        room, resumed = await self._rooms.create(user_id=user, agent_id=agent_id)
        return pb.CreateRoomResponse(room=room_pb(room), resumed=resumed)

    async def GetRoom(self, request: pb.GetRoomRequest, context: Ctx) -> pb.GetRoomResponse:
        user = principal().require_user()
        room_id = domain.validate_room_id(request.room_id)
        room, agent = await self._rooms.get(user_id=user, room_id=room_id)
        return pb.GetRoomResponse(room=room_pb(room, agent))

    async def ListRooms(self, request: pb.ListRoomsRequest, context: Ctx) -> pb.ListRoomsResponse:
        user = principal().require_user()
        rooms, token = await self._rooms.list_rooms(
            user_id=user,
            page_size=request.page_size,
            page_token=request.page_token,
            include_ended=request.include_ended,
        )
        return pb.ListRoomsResponse(rooms=[room_pb(r) for r in rooms], next_page_token=token)

    async def _change(self, room_id: str, action: Action) -> pb.Room:
        user = principal().require_user()
        rid = domain.validate_room_id(room_id)
        return room_pb(await self._rooms.change(user_id=user, room_id=rid, action=action))

    async def PauseRoom(self, request: pb.PauseRoomRequest, context: Ctx) -> pb.PauseRoomResponse:
        return pb.PauseRoomResponse(room=await self._change(request.room_id, Action.PAUSE))

    async def ResumeRoom(
        self, request: pb.ResumeRoomRequest, context: Ctx
    ) -> pb.ResumeRoomResponse:
        return pb.ResumeRoomResponse(room=await self._change(request.room_id, Action.RESUME))

    async def EndRoom(self, request: pb.EndRoomRequest, context: Ctx) -> pb.EndRoomResponse:
        return pb.EndRoomResponse(room=await self._change(request.room_id, Action.END))

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Ctx
    ) -> pb.ListMessagesResponse:
        user = principal().require_user()
        room_id = domain.validate_room_id(request.room_id)
        messages, token = await self._rooms.messages(
            user_id=user,
            room_id=room_id,
            page_size=request.page_size,
            page_token=request.page_token,
            latest=request.latest,
        )
        return pb.ListMessagesResponse(
            messages=[message_pb(m) for m in messages], next_page_token=token
        )


class RoomInternalServicer(pb_grpc.RoomInternalServiceServicer):
    """RoomInternalService: the rooms service's RPCs for the other services of the mesh."""

    def __init__(self, *, rooms: Rooms) -> None:
        self._rooms = rooms

    async def AppendMessage(
        self, request: pb.AppendMessageRequest, context: Ctx
    ) -> pb.AppendMessageResponse:
        user = principal().require_user()
        room_id = domain.validate_room_id(request.room_id)
        new = domain.validate_new_message(
            sender_type=_SENDER_FROM_PB.get(request.sender_type),
            content=request.content,
            text=request.text,
            stream_id=request.stream_id,
            status=_MSG_STATUS_FROM_PB.get(request.status),
            idempotency_key=request.idempotency_key,
            strip=strip_markers,
        )
        message, created = await self._rooms.append(user_id=user, room_id=room_id, message=new)
        return pb.AppendMessageResponse(message=message_pb(message), created=created)

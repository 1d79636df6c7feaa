"""RoomService over gRPC: validate, call the use case, map to protobuf."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from arconv.rooms.v1 import rooms_service_pb2 as pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as pb_grpc

from services.common.auth import principal
from services.markers import strip_markers
from services.rooms import domain, mapping
from services.rooms.domain import Action
from services.rooms.service import Rooms

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class RoomServicer(pb_grpc.RoomServiceServicer):
    def __init__(self, *, rooms: Rooms) -> None:
        self._rooms = rooms

    async def CreateRoom(
        self, request: pb.CreateRoomRequest, context: Ctx
    ) -> pb.CreateRoomResponse:
        user = principal().require_user()
        agent_id = domain.validate_agent_id(request.agent_id)
        room, resumed = await self._rooms.create(user_id=user, agent_id=agent_id)
        return pb.CreateRoomResponse(room=mapping.room_pb(room), resumed=resumed)

    async def GetRoom(self, request: pb.GetRoomRequest, context: Ctx) -> pb.GetRoomResponse:
        user = principal().require_user()
        room_id = domain.validate_room_id(request.room_id)
        room, agent = await self._rooms.get(user_id=user, room_id=room_id)
        return pb.GetRoomResponse(room=mapping.room_pb(room, agent))

    async def ListRooms(self, request: pb.ListRoomsRequest, context: Ctx) -> pb.ListRoomsResponse:
        user = principal().require_user()
        rooms, token = await self._rooms.list_rooms(
            user_id=user,
            page_size=request.page_size,
            page_token=request.page_token,
            include_ended=request.include_ended,
        )
        return pb.ListRoomsResponse(
            rooms=[mapping.room_pb(r) for r in rooms], next_page_token=token
        )

    async def _change(self, room_id: str, action: Action) -> pb.Room:
        user = principal().require_user()
        rid = domain.validate_room_id(room_id)
        return mapping.room_pb(await self._rooms.change(user_id=user, room_id=rid, action=action))

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
            messages=[mapping.message_pb(m) for m in messages], next_page_token=token
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
            sender_type=mapping.SENDER_FROM_PB.get(request.sender_type),
            content=request.content,
            text=request.text,
            stream_id=request.stream_id,
            status=mapping.MESSAGE_STATUS_FROM_PB.get(request.status),
            idempotency_key=request.idempotency_key,
            strip=strip_markers,
        )
        message, created = await self._rooms.append(user_id=user, room_id=room_id, message=new)
        return pb.AppendMessageResponse(message=mapping.message_pb(message), created=created)

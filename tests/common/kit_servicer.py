"""A small RoomService and RoomInternalService that exercise the server kit itself
(auth, errors, metrics)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from arconv.rooms.v1 import rooms_service_pb2 as pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as pb_grpc
from arconv.stream.v1 import stream_service_pb2 as spb
from arconv.stream.v1 import stream_service_pb2_grpc as spb_grpc

from services.common.auth import principal
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.server import ServiceSpec


class KitRooms(pb_grpc.RoomServiceServicer):
    async def GetRoom(self, request: pb.GetRoomRequest, context: Any) -> pb.GetRoomResponse:
        p = principal()
        if request.room_id == "missing":
            raise NotFound("room", request.room_id)
        if request.room_id == "":
            raise InvalidArgument("room_id is required", violations=[("room_id", "required")])
        if request.room_id == "ended":
            raise FailedPrecondition("room ended", metadata={"status": "ROOM_STATUS_ENDED"})
        if request.room_id == "boom":
            raise RuntimeError("an unexpected bug")
        return pb.GetRoomResponse(room=pb.Room(room_id=request.room_id, user_id=p.user_id))


class KitRoomsInternal(pb_grpc.RoomInternalServiceServicer):
    async def AppendMessage(
        self, request: pb.AppendMessageRequest, context: Any
    ) -> pb.AppendMessageResponse:
        p = principal()
        return pb.AppendMessageResponse(
            message=pb.Message(room_id=request.room_id, sender_id=p.user_id or p.subject)
        )


class KitStream(spb_grpc.StreamServiceServicer):
    async def Subscribe(
        self, request: spb.SubscribeRequest, context: Any
    ) -> AsyncIterator[spb.SubscribeResponse]:
        for i in range(3):
            yield spb.SubscribeResponse(event=spb.ConverseResponse(event_id=i + 1))
        if request.room_id == "fail-late":
            raise NotFound("room", request.room_id)


def kit_spec() -> ServiceSpec:
    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_RoomServiceServicer_to_server(KitRooms(), server)
        pb_grpc.add_RoomInternalServiceServicer_to_server(KitRoomsInternal(), server)
        spb_grpc.add_StreamServiceServicer_to_server(KitStream(), server)

    return ServiceSpec(
        name="kit",
        grpc_service="arconv.rooms.v1.RoomService",
        register=register,
    )

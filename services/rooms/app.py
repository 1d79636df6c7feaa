"""The rooms service: settings, wiring and entry point."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
from arconv.rooms.v1 import rooms_service_pb2_grpc

from services.common.app import run_service
from services.common.config import Settings
from services.common.server import ServiceSpec

SERVICE = "arconv.rooms.v1.RoomService"
INTERNAL_METHODS = ("/arconv.rooms.v1.RoomService/AppendMessage",)
PUBLIC_METHODS = ()


class RoomSettings(Settings):
    pass


@contextlib.asynccontextmanager
async def open_spec(settings: RoomSettings) -> AsyncIterator[ServiceSpec]:
    servicer = rooms_service_pb2_grpc.RoomServiceServicer()

    def register(server: grpc.aio.Server) -> None:
        rooms_service_pb2_grpc.add_RoomServiceServicer_to_server(servicer, server)

    yield ServiceSpec(
        name="rooms",
        grpc_service=SERVICE,
        register=register,
        internal_methods=INTERNAL_METHODS,
        public_methods=PUBLIC_METHODS,
    )


def main() -> None:
    run_service("rooms", RoomSettings, open_spec)

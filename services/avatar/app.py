"""The avatar service: settings, wiring and entry point."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
from arconv.avatar.v1 import avatar_service_pb2_grpc

from services.common.app import run_service
from services.common.config import Settings
from services.common.server import ServiceSpec

SERVICE = "arconv.avatar.v1.AvatarService"
INTERNAL_METHODS = ("/arconv.avatar.v1.AvatarService/UpsertAgent",)
PUBLIC_METHODS = ()


class AvatarSettings(Settings):
    pass


@contextlib.asynccontextmanager
async def open_spec(settings: AvatarSettings) -> AsyncIterator[ServiceSpec]:
    servicer = avatar_service_pb2_grpc.AvatarServiceServicer()

    def register(server: grpc.aio.Server) -> None:
        avatar_service_pb2_grpc.add_AvatarServiceServicer_to_server(servicer, server)

    yield ServiceSpec(
        name="avatar",
        grpc_service=SERVICE,
        register=register,
        internal_methods=INTERNAL_METHODS,
        public_methods=PUBLIC_METHODS,
    )


def main() -> None:
    run_service("avatar", AvatarSettings, open_spec)

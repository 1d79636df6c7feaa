"""The token service: settings, wiring and entry point."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
from arconv.token.v1 import token_service_pb2_grpc

from services.common.app import run_service
from services.common.config import Settings
from services.common.server import ServiceSpec

SERVICE = "arconv.token.v1.TokenService"
INTERNAL_METHODS = ("/arconv.token.v1.TokenService/VerifyProviderToken", "/arconv.token.v1.TokenService/RevokeRoomTokens")
PUBLIC_METHODS = ("/arconv.token.v1.TokenService/GetJwks",)


class TokenSettings(Settings):
    pass


@contextlib.asynccontextmanager
async def open_spec(settings: TokenSettings) -> AsyncIterator[ServiceSpec]:
    servicer = token_service_pb2_grpc.TokenServiceServicer()

    def register(server: grpc.aio.Server) -> None:
        token_service_pb2_grpc.add_TokenServiceServicer_to_server(servicer, server)

    yield ServiceSpec(
        name="token",
        grpc_service=SERVICE,
        register=register,
        internal_methods=INTERNAL_METHODS,
        public_methods=PUBLIC_METHODS,
    )


def main() -> None:
    run_service("token", TokenSettings, open_spec)

"""The rooms service: settings, wiring and entry point."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from arconv.rooms.v1 import rooms_service_pb2_grpc
from pydantic import Field
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.app import run_service
from services.common.clients import ServiceChannels
from services.common.config import Settings
from services.common.db import create_engine, is_sqlite, migrate_async
from services.common.server import ServiceSpec
from services.rooms.agents import AgentDirectory, CachedAgentDirectory, GrpcAgentDirectory
from services.rooms.notifier import GrpcRoomNotifier, RoomNotifier
from services.rooms.repository import SQLITE_READ, RoomRepository
from services.rooms.service import Rooms
from services.rooms.servicer import RoomInternalServicer, RoomServicer

SERVICE = "arconv.rooms.v1.RoomService"
PUBLIC_METHODS = ()

log = logging.getLogger("arconv.rooms")


class RoomSettings(Settings):
    """The shared settings plus the rooms service's own (ARCONV_ROOMS_*)."""

    # Deadline of one GetAgent / GetAvatar call to the avatar service.
    rooms_agent_timeout_s: float = Field(default=2.0, gt=0, le=30)
    # How long an agent's existence and summary are reused; 0 asks the avatar service each time.
    rooms_agent_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)
    # Deadline of one NotifyRoomState / RevokeRoomTokens call, its retries included
    # (ARCONV_CALL_ATTEMPTS).
    rooms_notify_timeout_s: float = Field(default=1.0, gt=0, le=30)


def open_engine(url: str) -> AsyncEngine:
    """The service's engine. On SQLite every transaction that may write is BEGIN IMMEDIATE.

    SQLite takes the write lock up front, so a transaction that reads then writes never
    fails half way with SQLITE_BUSY, and savepoints work (the driver's own transaction
    handling is switched off, as SQLAlchemy documents for aiosqlite).
    """
    engine = create_engine(url)
    if is_sqlite(url):

        @event.listens_for(engine.sync_engine, "connect")
        def _no_driver_transactions(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            # Reads (RoomRepository.reading) begin deferred: no write lock for them.
            read = conn.get_execution_options().get(SQLITE_READ, False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


@contextlib.asynccontextmanager
async def open_spec(
    settings: RoomSettings,
    *,
    agents: AgentDirectory | None = None,
    notifier: RoomNotifier | None = None,
) -> AsyncIterator[ServiceSpec]:
    """Opens the database (migrating it when asked), the clients, and yields the spec.

    `agents` and `notifier` replace the gRPC collaborators (the avatar, stream and token
    services) when given; what `agents` answers is cached like the avatar service's answers.
    """
    url = settings.service_database_url("rooms")
    if settings.migrate_on_start:
        await migrate_async("rooms", url)
    engine = open_engine(url)
    channels = ServiceChannels(settings, "rooms")
    if agents is None:
        agents = GrpcAgentDirectory(
            channels.channel(settings.avatar_addr), timeout_s=settings.rooms_agent_timeout_s
        )
    if notifier is None:
        notifier = GrpcRoomNotifier(
            stream_channel=channels.channel(settings.stream_addr),
            token_channel=channels.channel(settings.token_addr),
            timeout_s=settings.rooms_notify_timeout_s,
        )
    rooms = Rooms(
        repo=RoomRepository(engine),
        agents=CachedAgentDirectory(agents, ttl_s=settings.rooms_agent_cache_ttl_s),
        notifier=notifier,
        page_secret=settings.page_secret(),
    )
    servicer = RoomServicer(rooms=rooms)

    def register(server: grpc.aio.Server) -> None:
        rooms_service_pb2_grpc.add_RoomServiceServicer_to_server(servicer, server)
        rooms_service_pb2_grpc.add_RoomInternalServiceServicer_to_server(
            RoomInternalServicer(rooms=rooms), server
        )

    try:
        yield ServiceSpec(
            name="rooms",
            grpc_service=SERVICE,
            register=register,
            public_methods=PUBLIC_METHODS,
        )
    finally:
        await notifier.aclose()
        await channels.close()
        await engine.dispose()


def main() -> None:
    run_service("rooms", RoomSettings, open_spec)

"""Telling the rest of the mesh that a room changed state, after the change commits.

The stream service hears every status change (NotifyRoomState) so live streams hold, resume
or close; the token service hears when a room ends (RevokeRoomTokens) so its provider tokens
stop working. Delivery is best effort: a short deadline, the retries of the channel's service
config (services/common/clients.py) when the other side is UNAVAILABLE, a log line on failure.
The state change itself is already committed and is never undone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc
from arconv.stream.v1 import stream_service_pb2 as stream_pb
from arconv.stream.v1 import stream_service_pb2_grpc as stream_grpc
from arconv.token.v1 import token_service_pb2 as token_pb
from arconv.token.v1 import token_service_pb2_grpc as token_grpc

from services.common.clients import for_user
from services.rooms.domain import Room, RoomStatus
from services.rooms.mapping import ROOM_STATUS_TO_PB

log = logging.getLogger("arconv.rooms.notifier")


class RoomNotifier(Protocol):
    async def state_changed(self, room: Room) -> None:
        """Tells the mesh that `room` now has `room.status`. Never raises for delivery."""

    async def aclose(self) -> None:
        """Waits for deliveries still in flight."""


class GrpcRoomNotifier:
    """RoomNotifier over StreamInternalService.NotifyRoomState and
    TokenInternalService.RevokeRoomTokens."""

    def __init__(
        self,
        *,
        stream_channel: grpc.aio.Channel,
        token_channel: grpc.aio.Channel,
        timeout_s: float = 1.0,
    ) -> None:
        self._stream = stream_grpc.StreamInternalServiceStub(stream_channel)
        self._token = token_grpc.TokenInternalServiceStub(token_channel)
        self._timeout = timeout_s
        self._inflight: set[asyncio.Future[Any]] = set()

    async def state_changed(self, room: Room) -> None:
        md = for_user(room.user_id)
        calls: list[Awaitable[None]] = [
            self._deliver(
                "NotifyRoomState",
                room,
                lambda: self._stream.NotifyRoomState(
                    stream_pb.NotifyRoomStateRequest(
                        room_id=room.room_id, status=ROOM_STATUS_TO_PB[room.status]
                    ),
                    timeout=self._timeout,
                    metadata=md,
                ),
            )
        ]
        if room.status is RoomStatus.ENDED:
            calls.append(
                self._deliver(
                    "RevokeRoomTokens",
                    room,
                    lambda: self._token.RevokeRoomTokens(
                        token_pb.RevokeRoomTokensRequest(room_id=room.room_id),
                        timeout=self._timeout,
                        metadata=md,
                    ),
                )
            )
        task: asyncio.Future[Any] = asyncio.gather(*calls)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        # If the caller goes away, delivery still completes; the caller sees the cancellation.
        await asyncio.shield(task)

    async def _deliver(self, rpc: str, room: Room, call: Callable[[], Awaitable[Any]]) -> None:
        fields: dict[str, object] = {
            "rpc": rpc,
            "room_id": room.room_id,
            "status": room.status.value,
        }
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            fields["code"] = exc.code().name
            log.warning("room notification not delivered", extra={"fields": fields})

    async def aclose(self) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

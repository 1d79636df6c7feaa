"""StreamService over gRPC: validates, calls the conversation core, maps to protobuf."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from arconv.stream.v1 import stream_service_pb2 as pb
from arconv.stream.v1 import stream_service_pb2_grpc as pb_grpc

from services.common import ids
from services.common.auth import principal
from services.common.errors import (
    DomainError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from services.common.status import abort as abort_with
from services.stream import events, mapping
from services.stream.core import ConversationCore
from services.stream.session import AbortFn, Session

log = logging.getLogger("arconv.stream.servicer")


def _aborter(context: grpc.aio.ServicerContext) -> AbortFn:
    """Ends the call from outside its handler, which may be stuck writing to a client that
    stopped reading: the status is queued behind what was written (a client that reads on
    gets it), then the handler is cancelled, so its session, slot and queue go at once."""
    handler = asyncio.current_task()

    async def abort(err: DomainError) -> None:
        sending = asyncio.ensure_future(abort_with(context, err))
        sending.add_done_callback(_retrieve)
        await asyncio.sleep(0)  # the status batch is submitted before the cancel
        if handler is not None and handler is not asyncio.current_task():
            handler.cancel()

    return abort


def _retrieve(fut: asyncio.Future[None]) -> None:
    # context.abort ends by raising AbortError (or is cancelled with the call): expected.
    if not fut.cancelled():
        fut.exception()


class StreamServicer(pb_grpc.StreamServiceServicer):
    def __init__(self, *, core: ConversationCore) -> None:
        self._core = core

    async def Converse(
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ConverseResponse | bytes]:
        # Room events are yielded in their wire form (see services.common.interceptor).
        user = principal().require_user()
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            raise InvalidArgument(
                "the stream closed before a join; send join first",
                violations=[("join", "required as the first request")],
            ) from None
        if first.WhichOneof("kind") != "join":
            raise InvalidArgument(
                "the first request must be a join",
                violations=[("join", "required as the first request")],
            )
        room_id = ids.room_id(first.join.room_id, "join.room_id")
        session, joined = await self._core.join(
            user, room_id, first.join.after_event_id, _aborter(context)
        )
        try:
            await session.start()
            yield joined
            reader = asyncio.create_task(self._read(request_iterator, session, user, room_id))
            try:
                async for event in session.events():
                    yield event
            finally:
                reader.cancel()
                await asyncio.wait({reader})
        finally:
            await self._core.leave(session)

    async def _read(
        self,
        requests: AsyncIterator[pb.ConverseRequest],
        session: Session,
        user: str,
        room_id: str,
    ) -> None:
        try:
            async for req in requests:
                await self._handle(req, session, user, room_id)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError:
            return
        except DomainError as exc:  # an undecodable request: the stream ends with its status
            session.end(exc)
            return
        except Exception:
            log.exception("reading Converse requests failed")
        session.drain()

    async def _handle(
        self, req: pb.ConverseRequest, session: Session, user: str, room_id: str
    ) -> None:
        kind = req.WhichOneof("kind")
        client_message_id = req.message.client_message_id if kind == "message" else ""
        try:
            if kind == "message":
                await self._core.send_message(
                    user, room_id, req.message.content, client_message_id, session=session
                )
            elif kind == "interrupt":
                await self._core.interrupt(
                    user,
                    room_id,
                    ids.stream_id(req.interrupt.stream_id, "interrupt.stream_id", required=False),
                    req.interrupt.played_chars,
                )
            elif kind == "pause":
                await self._core.pause(user, room_id)
            elif kind == "resume":
                await self._core.resume(user, room_id)
            elif kind == "join":
                raise InvalidArgument(
                    "this stream has already joined a room; open a new stream for another",
                    violations=[("join", "only as the first request")],
                )
            else:
                raise InvalidArgument("empty request", violations=[("kind", "required")])
        except DomainError as exc:
            await session.push(
                events.error(
                    exc,
                    retryable=isinstance(exc, Unavailable | ResourceExhausted),
                    client_message_id=client_message_id,
                )
            )

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SubscribeResponse | bytes]:
        user = principal().require_user()
        room_id = ids.room_id(request.room_id)
        session, joined = await self._core.join(
            user, room_id, request.after_event_id, _aborter(context)
        )
        try:
            await session.start()
            yield pb.SubscribeResponse(event=joined)
            wrap = events.subscribe_wire
            async for data in session.events():
                yield wrap(data)
        finally:
            await self._core.leave(session)

    async def SendMessage(
        self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendMessageResponse:
        user = principal().require_user()
        accepted = await self._core.send_message(
            user, ids.room_id(request.room_id), request.content, request.client_message_id
        )
        return pb.SendMessageResponse(
            message_id=accepted.message_id,
            stream_id=accepted.stream_id,
            duplicate=accepted.duplicate,
        )

    async def Interrupt(
        self, request: pb.InterruptRequest, context: grpc.aio.ServicerContext
    ) -> pb.InterruptResponse:
        user = principal().require_user()
        stopped = await self._core.interrupt(
            user,
            ids.room_id(request.room_id),
            ids.stream_id(request.stream_id, required=False),
            request.played_chars,
        )
        return pb.InterruptResponse(interrupted=stopped)

    async def PauseStream(
        self, request: pb.PauseStreamRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseStreamResponse:
        user = principal().require_user()
        status = await self._core.pause(user, ids.room_id(request.room_id))
        return pb.PauseStreamResponse(status=mapping.ROOM_STATUS_TO_PB[status])

    async def ResumeStream(
        self, request: pb.ResumeStreamRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeStreamResponse:
        user = principal().require_user()
        status = await self._core.resume(user, ids.room_id(request.room_id))
        return pb.ResumeStreamResponse(status=mapping.ROOM_STATUS_TO_PB[status])


class StreamInternalServicer(pb_grpc.StreamInternalServiceServicer):
    """StreamInternalService: the stream service's RPCs for the other services of the mesh."""

    def __init__(self, *, core: ConversationCore) -> None:
        self._core = core

    async def NotifyRoomState(
        self, request: pb.NotifyRoomStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.NotifyRoomStateResponse:
        room_id = ids.room_id(request.room_id)
        status = mapping.ROOM_STATUS_FROM_PB.get(request.status)
        if status is None:
            raise InvalidArgument(
                "status must be ROOM_STATUS_ACTIVE, ROOM_STATUS_PAUSED or ROOM_STATUS_ENDED",
                violations=[("status", f"got {request.status}")],
            )
        await self._core.notify_room_state(room_id, status)
        return pb.NotifyRoomStateResponse()

"""One agent reply: LLM deltas → marker-free chunks and speech cues on the room's log → stored.

A `Generation` runs on the replica that accepted the message. It publishes every event to the
room's log (so every connection of the room, on any replica, delivers it), stops within one
provider delta when interrupted (the pending read is cancelled, which closes the provider's
HTTP stream), and stores what was delivered as the AGENT message, linked to the stream id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Final

from arconv.stream.v1 import stream_service_pb2 as pb

from services.common.bus import Bus, ReplyPhase, ReplyState
from services.common.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    Internal,
    Unavailable,
)
from services.llm import (
    ChatMessage,
    LLMProvider,
    ProviderError,
    ProviderTimeout,
    close_stream,
)
from services.markers import MarkerParser, ParsedChunk
from services.speech import compute_cue
from services.stream import events
from services.stream.metrics import COMPLETIONS, GENERATIONS, INTERRUPTIONS
from services.stream.ports import (
    Agents,
    MessageStatus,
    Persona,
    RoomInfo,
    Rooms,
    Sender,
    StoredMessage,
)
from services.stream.prompt import build_messages
from services.stream.reply import DeliveredReply, cap_delta, clean_delta
from services.stream.sentences import Sentence, SentenceAccumulator
from services.stream.state import CoreConfig

log = logging.getLogger("arconv.stream.generation")

_STOPPED: Final = object()

_STATUS = {
    pb.STREAM_END_REASON_COMPLETED: MessageStatus.COMPLETE,
    pb.STREAM_END_REASON_INTERRUPTED: MessageStatus.INTERRUPTED,
    pb.STREAM_END_REASON_FAILED: MessageStatus.FAILED,
}


class Generation:
    """The reply to one human message, in one room, identified by `stream_id`."""

    def __init__(
        self,
        *,
        bus: Bus,
        rooms: Rooms,
        agents: Agents,
        provider: LLMProvider,
        config: CoreConfig,
        replica: str,
        user_id: str,
        room: RoomInfo,
        message: StoredMessage,
        stream_id: str,
    ) -> None:
        self._bus = bus
        self._rooms = rooms
        self._agents = agents
        self._provider = provider
        self._config = config
        self._replica = replica
        self.user_id = user_id
        self.room = room
        self.message = message
        self.stream_id = stream_id
        self._stop = asyncio.Event()
        # While the reply waits for the provider's next delta: the task to cancel on an
        # interrupt (the read is cancelled, which closes the provider's HTTP stream).
        self._reading: asyncio.Task[object] | None = None
        self._cancelled_read = False
        self.stop_reason = ""
        self.played_chars = 0
        self._parser = MarkerParser()
        self._sentences = SentenceAccumulator()
        self.reply = DeliveredReply()
        self.abandoned = False

    def abandon(self) -> None:
        """The reply lost its room's lease and was ended elsewhere: stop, and store and
        publish nothing more."""
        self.abandoned = True
        self.interrupt(reason="takeover")

    def interrupt(self, *, played_chars: int = 0, reason: str = "client") -> None:
        """Stops the reply at the next await; the first interrupt's details win."""
        if self._stop.is_set():
            return
        self.stop_reason = reason
        self.played_chars = played_chars
        self._stop.set()
        if self._reading is not None and not self._cancelled_read:
            self._cancelled_read = True
            self._reading.cancel()

    async def _emit(self, event: pb.ConverseResponse) -> int:
        return await self._bus.publish(
            self.room.room_id, events.kind_of(event), event.SerializeToString()
        )

    async def run(self) -> pb.StreamEndReason:
        """Streams the reply, stores it and publishes stream_ended; returns the end reason."""
        GENERATIONS.inc()
        try:
            try:
                # The state is written before the event that announces it, so a client that
                # saw the event finds the state (on any replica) already there.
                await self._set_state(ReplyPhase.ACTIVE)
                await self._emit(
                    events.started(self.stream_id, self.message.message_id, self.room.agent_id)
                )
                reason = await self._generate()
            except DomainError as exc:
                # The bus failed under the reply (Redis down): what reached the log is still
                # stored (empty if nothing did, so the history shows the turn ended); the
                # reply's lease lapses, and whoever then ends the reply publishes its
                # stream_ended (unless the log was lost with Redis's data).
                log.warning("reply %s lost the bus: %s", self.stream_id, exc.message)
                INTERRUPTIONS.labels("bus_lost").inc()
                await self._store(pb.STREAM_END_REASON_INTERRUPTED, empty_too=True)
                raise
            if self.abandoned:
                return reason
            agent_message_id = await self._store(reason)
            await self._set_state(
                {
                    pb.STREAM_END_REASON_COMPLETED: ReplyPhase.COMPLETED,
                    pb.STREAM_END_REASON_INTERRUPTED: ReplyPhase.INTERRUPTED,
                }.get(reason, ReplyPhase.FAILED)
            )
            await self._emit(
                events.ended(self.stream_id, self.reply.chunks, reason, agent_message_id)
            )
            return reason
        finally:
            GENERATIONS.dec()

    async def _set_state(self, phase: ReplyPhase) -> None:
        await self._bus.set_reply_state(
            self.stream_id, ReplyState(self.room.room_id, phase, self._replica)
        )

    async def _generate(self) -> pb.StreamEndReason:
        try:
            if self._stop.is_set():
                return self._interrupted()
            # The persona and the history are independent: ask for both at once.
            persona_call = asyncio.ensure_future(
                self._agents.get_persona(self.user_id, self.room.agent_id)
            )
            try:
                history = await self._rooms.recent_messages(
                    self.user_id, self.room.room_id, self._config.history_messages
                )
            except BaseException:
                persona_call.cancel()
                await asyncio.wait({persona_call})
                if not persona_call.cancelled():
                    persona_call.exception()  # retrieved: the history's error is the one raised
                raise
            persona = await persona_call
            stopped = await self._produce(build_messages(persona, history, self.message), persona)
            if stopped:
                return self._interrupted()
            COMPLETIONS.labels("completed").inc()
            return pb.STREAM_END_REASON_COMPLETED
        except ProviderError as exc:
            log.warning("reply %s failed: %s", self.stream_id, exc)
            message = f"the language model failed: {exc.message}"
            failure: DomainError = Unavailable(message) if exc.retryable else Internal(message)
            if isinstance(exc, ProviderTimeout):
                failure = DeadlineExceeded(message)
            await self._fail(failure, exc.retryable)
        except DomainError as exc:
            log.warning("reply %s failed: %s", self.stream_id, exc.message)
            retryable = isinstance(exc, Unavailable)
            await self._fail(exc, retryable)
        except Exception:
            # A bug or an unexpected provider answer: the reply still ends, and what was
            # delivered is still stored, so no client waits for a stream_ended forever.
            log.exception("reply %s failed unexpectedly", self.stream_id)
            await self._fail(
                Internal("the reply failed unexpectedly; send the message again"), True
            )
        return pb.STREAM_END_REASON_FAILED

    def _interrupted(self) -> pb.StreamEndReason:
        INTERRUPTIONS.labels(self.stop_reason or "client").inc()
        return pb.STREAM_END_REASON_INTERRUPTED

    async def _fail(self, err: DomainError, retryable: bool) -> None:
        COMPLETIONS.labels("failed").inc()
        await self._flush(self._sentences.finish())
        await self._emit(events.error(err, stream_id=self.stream_id, retryable=retryable))

    async def _produce(self, messages: list[ChatMessage], persona: Persona) -> bool:
        """Streams the reply; True if it was interrupted."""
        deltas = self._provider.stream(messages, model=persona.model or None)
        fed = 0
        capped = False
        try:
            while True:
                delta = await self._next(deltas)
                if delta is _STOPPED:
                    return True
                if delta is None:
                    break
                assert isinstance(delta, str)
                piece, capped = cap_delta(clean_delta(delta), fed)
                fed += len(piece)
                chunk = self._parser.feed(piece)
                if chunk is not None:
                    await self._deliver(chunk)
                if capped:
                    # The rooms limit: stop here; a marker cut by the cap is dropped, not spoken.
                    log.info("reply %s reached the content limit", self.stream_id)
                    break
        finally:
            await close_stream(deltas)
        if not capped:
            tail = self._parser.finish()
            if tail is not None:
                await self._deliver(tail)
        await self._flush(self._sentences.finish())
        return False

    async def _next(self, deltas: AsyncIterator[str]) -> object:
        """The next delta, None at the end, or _STOPPED if interrupted first.

        The read runs in the reply's own task (no task per delta); `interrupt` cancels that
        task while it waits here, and the cancellation is taken back once it has stopped
        the read. Any other cancellation (a shutdown) propagates.
        """
        if self._stop.is_set():
            return _STOPPED
        task = asyncio.current_task()
        assert task is not None
        self._reading = task
        try:
            return await anext(deltas)
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if not self._cancelled_read:
                raise
            self._cancelled_read = False
            if task.uncancel() > 0:
                raise  # cancelled from outside as well
            return _STOPPED
        finally:
            self._reading = None
            if self._cancelled_read:
                # The interrupt came after the read finished but before this frame left:
                # the cancel is pending on the task; take it back, the loop sees _stop.
                self._cancelled_read = False
                task.uncancel()

    async def _deliver(self, chunk: ParsedChunk) -> None:
        await self._emit(
            events.chunk(self.stream_id, self.reply.chunks, chunk.text, chunk.raw, chunk.markers)
        )
        self.reply.add(chunk)
        await self._flush(self._sentences.feed(chunk))

    async def _flush(self, sentences: list[Sentence]) -> None:
        for s in sentences:
            cue = compute_cue(s.text, s.tone, emotion=s.emotion, gesture=s.gesture)
            await self._emit(events.cue(self.stream_id, cue, s.text, s.start))

    async def unanswered(self, err: DomainError) -> None:
        """The reply could not start (the bus stayed out of reach): stored FAILED and empty,
        so the history shows the turn ended; its stream_ended is published if the bus
        answers again."""
        log.error("reply %s could not start: %s", self.stream_id, err.message)
        COMPLETIONS.labels("failed").inc()
        agent_message_id = await self._store(pb.STREAM_END_REASON_FAILED, empty_too=True)
        try:
            await self._set_state(ReplyPhase.FAILED)
            await self._emit(events.error(err, stream_id=self.stream_id, retryable=True))
            await self._emit(
                events.ended(self.stream_id, 0, pb.STREAM_END_REASON_FAILED, agent_message_id)
            )
        except DomainError as exc:
            log.warning("reply %s: its end not published: %s", self.stream_id, exc.message)

    async def _store(self, reason: pb.StreamEndReason, *, empty_too: bool = False) -> str:
        """Stores what was delivered (cut where the person stopped listening); its id or "".

        A reply with no text is stored only `empty_too` (it was cut off by the bus, not by
        the person or the model)."""
        if reason == pb.STREAM_END_REASON_INTERRUPTED:
            content, text = self.reply.cut(self.played_chars)
        else:
            content, text = self.reply.content, self.reply.text
        if not text.strip() and not empty_too:
            return ""
        for attempt in (1, 2):
            try:
                stored, _ = await self._rooms.append_message(
                    self.user_id,
                    self.room.room_id,
                    sender=Sender.AGENT,
                    content=content,
                    text=text,
                    stream_id=self.stream_id,
                    status=_STATUS[reason],
                    idempotency_key=f"agent:{self.stream_id}",
                )
                return stored.message_id
            except FailedPrecondition as exc:
                # The room ended meanwhile: the rooms service keeps no more messages in it.
                log.warning("reply %s not stored: %s", self.stream_id, exc.message)
                return ""
            except DomainError as exc:
                log.error("storing reply %s failed (attempt %d): %s", self.stream_id, attempt, exc)
        return ""

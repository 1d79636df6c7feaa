"""One client connection to a room: the room's events from a cursor, through a bounded queue.

The bus wakes the session when its room's log grows (`Bus.listen`); the session then takes
what the bus already holds in memory (`Bus.read_nowait`) straight into a bounded queue, within
the wake-up, and the RPC handler takes them out and writes them to the client. Whatever needs
waiting (a read from Redis, a paused room, a full queue) is left to a pump task, which runs
only while there is something to do: a pump with nothing to do for PUMP_IDLE_S ends, so an
idle stream holds no task of its own. Events travel in their wire
form: the payload on the bus plus the event id (`events.wire`), so an event is never decoded
or encoded again on its way to a client; only room-state and stream-ended events, which the
pump acts on, are decoded.

The queue is paced by the client: when it is full the pump waits for the handler to take an
event before it reads on from the log, so a cursor far back (the whole kept window) replays
in order, page by page, as fast as the client reads, and the live events follow without a
gap. A client that takes nothing for `slow_reader_s` while events wait is cut off: the
session ends with RESOURCE_EXHAUSTED carrying the cursor to resume from, and the handler,
which may be stuck writing to that client, is cancelled so its slot and queue are freed at
once (the status still reaches the client if it reads on). No reader slows another: the log
is shared, the queues are not.

Pause: after delivering a `room_state` PAUSED event the pump holds delivery and only scans
ahead for the next `room_state` event (events it passes stay in the log). A later PAUSED
event releases everything up to it; ACTIVE or ENDED releases everything. So nothing is lost
or repeated, and a reconnect, a second device or a resume all use the same cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb

from services.common.bus import Bus, BusEvent
from services.common.errors import DomainError, ResourceExhausted, Unavailable
from services.stream import events
from services.stream.metrics import CHUNK_LATENCY, DISCONNECTS, OPEN_STREAMS
from services.stream.state import CoreConfig

log = logging.getLogger("arconv.stream.session")

AbortFn = Callable[[DomainError], Awaitable[None]]

# A pump with nothing to read for this long ends; events read per bus call.
PUMP_IDLE_S = 2.0
READ_BATCH = 256


@dataclass(frozen=True, slots=True)
class _End:
    error: DomainError | None


class _Mailbox:
    """A FIFO for one consumer, as small as possible while empty (an idle stream holds one):
    no deques until something is queued, one future while the consumer waits."""

    __slots__ = ("_items", "_space", "_waiter")

    def __init__(self) -> None:
        self._items: deque[tuple[bytes, int, int] | _End] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._space: list[asyncio.Future[bool]] | None = None  # producers waiting for a get

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    def put_nowait(self, item: tuple[bytes, int, int] | _End) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> tuple[bytes, int, int] | _End:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        if self._space is not None:
            space, self._space = self._space, None
            for fut in space:
                _settle(fut, True)
        return item

    async def taken(self, timeout_s: float) -> bool:
        """Waits until the consumer takes an item; False if it took none for `timeout_s`."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        if self._space is None:
            self._space = []
        self._space.append(fut)
        timer = loop.call_later(timeout_s, _settle, fut, False)
        try:
            return await fut
        finally:
            timer.cancel()
            if self._space is not None and fut in self._space:
                self._space.remove(fut)


class Session:
    """A client's view of one room from `after_id` on."""

    __slots__ = (
        "_abort_task",
        "_bus",
        "_config",
        "_cut",
        "_deliver",
        "_dirty",
        "_draining",
        "_ended",
        "_held",
        "_idle",
        "_limit",
        "_on_abort",
        "_pending",
        "_pump",
        "_queue",
        "_scan",
        "_unlisten",
        "_writing",
        "_written",
        "last_ns",
        "room_id",
        "running",
        "user_id",
    )

    def __init__(
        self,
        *,
        bus: Bus,
        room_id: str,
        user_id: str,
        after_id: int,
        held: bool,
        config: CoreConfig,
        on_abort: AbortFn,
    ) -> None:
        self._bus = bus
        self.room_id = room_id
        self.user_id = user_id
        self._deliver = after_id
        self._held = held
        self._config = config
        self._on_abort = on_abort
        self._limit = config.subscriber_queue
        # (serialized ConverseResponse, publish time of a chunk or 0, event id or 0) or the
        # end marker; at most `_limit` events, and the end marker always fits.
        self._queue = _Mailbox()
        self._pending: set[str] = set()
        self._draining = False
        self._ended = False
        self._scan = after_id  # while held: how far the pump has looked ahead
        self._pump: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[bool] | None = None  # the pump waiting for a wake
        self._dirty = False  # woken while the pump was reading
        self._unlisten: Callable[[], None] | None = None
        self._abort_task: asyncio.Future[None] | None = None
        self._cut = False
        self._writing = 0.0  # since when the handler has been writing an event (0: it is not)
        # The cursor a client cut off resumes from: the newest event the handler finished
        # writing (it had taken the next one), or the cursor it joined with.
        self._written = after_id
        # The reply this client last saw start and not end, and when the newest event it
        # was given was published: a reply silent for longer than its lease may be dead.
        self.running = ""
        self.last_ns = 0

    async def start(self) -> None:
        self._unlisten = await self._bus.listen(self.room_id, self._deliver, self._wake)
        OPEN_STREAMS.inc()
        self._start_pump()  # whatever is in the log after the cursor already

    async def close(self) -> None:
        if self._unlisten is None:
            return
        unlisten, self._unlisten = self._unlisten, None
        unlisten()
        OPEN_STREAMS.dec()
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done():
            pump.cancel()
            await asyncio.wait({pump})

    # -- what the handler sees --------------------------------------------------------------

    async def events(self) -> AsyncIterator[bytes]:
        """Serialized ConverseResponses to write to the client, in order; ends when the
        session ends (raises its error)."""
        get = self._queue.get
        observe = CHUNK_LATENCY.observe
        taking = 0
        monotonic = time.monotonic
        while True:
            self._writing = 0.0
            item = await get()
            if taking:
                self._written = taking  # the event before was written: the client has it
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            data, sent, taking = item
            if sent:
                observe(max(0.0, (time.time_ns() - sent) / 1e9))
            self._writing = monotonic()
            yield data

    async def push(self, event: pb.ConverseResponse) -> None:
        """A response for this connection only (joined, message_accepted, stream_error)."""
        await self._put(event.SerializeToString())

    def expect_stream(self, stream_id: str) -> None:
        """A reply to a message of this connection is coming (see `drain`)."""
        self._pending.add(stream_id)

    def drain(self) -> None:
        """The client half-closed: end once the replies to its messages have been delivered."""
        self._draining = True
        if not self._pending:
            self.end(None)

    def end(self, error: DomainError | None) -> None:
        """Ends the session after what is queued (with `error` as its status, if any)."""
        if self._ended:
            return
        self._ended = True
        if error is not None and self._queue.qsize() >= self._limit:
            # The reader is stuck behind a full queue; end the call directly.
            self._abort_task = asyncio.ensure_future(self._on_abort(error))
            return
        self._queue.put_nowait(_End(error))

    def resume_cursor(self) -> int:
        """The event id a client cut off now should resume after."""
        return self._written

    # -- the pump ---------------------------------------------------------------------------

    async def _put(self, data: bytes) -> bool:
        """Queues a response of this connection only; False if the session ended."""
        if not await self._room_for_one():
            return False
        self._queue.put_nowait((data, 0, 0))
        return True

    async def _room_for_one(self) -> bool:
        """True once one more event fits: waits while the queue is full for the client to
        read (replay and live events are paced by its reads). A client that takes nothing
        for `slow_reader_s` is cut off (False)."""
        while not self._ended:
            if self._queue.qsize() < self._limit:
                return True
            if not await self._queue.taken(self._config.slow_reader_s):
                await self._cut_off()
        return False

    def stalled(self, now: float) -> bool:
        """True if the handler has been writing one event to the client for longer than
        `slow_reader_s` (the client stopped reading, however few events wait): cut it off."""
        since = self._writing
        return not self._cut and since > 0 and now - since > self._config.slow_reader_s

    async def cut_off(self) -> None:
        await self._cut_off()

    async def lose_slot(self) -> None:
        """Ends the session with UNAVAILABLE and its resume cursor: its open-stream slot was
        given to a resume elsewhere while this replica missed its heartbeats (it looked
        dead), and the user may not hold more streams than the limit."""
        await self._cut_off(slot_lost=True)

    async def _cut_off(self, *, slot_lost: bool = False) -> None:
        if self._cut:
            return
        self._cut = self._ended = True
        DISCONNECTS.inc()
        cursor = self.resume_cursor()
        log.warning(
            "ending a stream whose slot was taken" if slot_lost else "cutting off a slow reader",
            extra={
                "fields": {
                    "room_id": self.room_id,
                    "user_id": self.user_id,
                    "waiting": self._queue.qsize(),
                    "resume_after_event_id": cursor,
                }
            },
        )
        error: DomainError
        if slot_lost:
            error = Unavailable(
                "this replica missed its heartbeats and the stream's slot went to a resume"
                f" elsewhere; reconnect with after_event_id {cursor} (the last event received)",
                reason="STREAM_SLOT_TAKEN",
            )
        else:
            error = ResourceExhausted(
                f"the client read nothing for {self._config.slow_reader_s:g} s while"
                f" {self._queue.qsize()} events were waiting; reconnect with after_event_id"
                f" {cursor} (the last event received)",
                subject=f"stream:{self.room_id}",
                reason="SLOW_READER",
                metadata={"resume_after_event_id": str(cursor)},
            )
        await self._on_abort(error)

    def _accept(self, e: BusEvent) -> bool:
        """Queues the log event right after the cursor and acts on it; False once the
        session has ended or is held (a PAUSED room_state), so delivery stops here."""
        sent = e.time_ns if e.kind == events.CHUNK else 0
        self._queue.put_nowait((events.wire(e), sent, e.event_id))
        self._deliver = e.event_id
        self.last_ns = e.time_ns
        if e.kind == events.STARTED:
            self.running = events.decode(e).stream_started.stream_id
        elif e.kind == events.ENDED:
            stream_id = events.decode(e).stream_ended.stream_id
            if stream_id == self.running:
                self.running = ""
            self._pending.discard(stream_id)
            if self._draining and not self._pending:
                self.end(None)
                return False
        status = _state_of(e)
        if status == rooms_pb.ROOM_STATUS_ENDED:
            self.end(None)
            return False
        if status == rooms_pb.ROOM_STATUS_PAUSED:
            self._held, self._scan = True, e.event_id
            return False
        return not self._ended

    def _wake(self) -> None:
        """The room's log may have grown: deliver what the bus holds in memory at once, or
        make sure a pump reads it."""
        if self._ended or self._unlisten is None:
            return
        pump = self._pump
        if pump is not None and not pump.done() and (self._idle is None or self._idle.done()):
            self._dirty = True  # the pump is reading: it looks again before it waits
            return
        # No pump, or one parked waiting for a wake: nobody else moves the cursor now.
        if self._deliver_now():
            return
        if pump is None or pump.done():
            self._start_pump()
        else:
            assert self._idle is not None
            self._idle.set_result(True)

    def _deliver_now(self) -> bool:
        """Delivers what the bus holds in memory after the cursor, within the wake-up (no
        task switch per event); False if the pump has to go on (the bus needs I/O, the room
        is held, or the queue is full)."""
        try:
            while not self._ended and not self._held:
                batch = self._bus.read_nowait(self.room_id, self._deliver, limit=READ_BATCH)
                if batch is None or self._queue.qsize() + len(batch) > self._limit:
                    return False
                for e in batch:
                    if not self._accept(e):
                        return self._ended
                if len(batch) < READ_BATCH:
                    return True
        except Exception:
            log.exception("delivering events failed; the pump takes over")
            return False
        return self._ended

    def _start_pump(self) -> None:
        if self._ended or self._unlisten is None:
            return
        if self._pump is None or self._pump.done():
            self._dirty = False
            self._pump = asyncio.create_task(self._run(), name=f"session-pump-{self.room_id}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while await self._drain():
                if self._dirty:
                    self._dirty = False
                    continue
                # Caught up: wait a while for more, then leave (a wake starts a new pump).
                idle = self._idle = loop.create_future()
                timer = loop.call_later(PUMP_IDLE_S, _settle, idle, False)
                try:
                    woken = await idle
                finally:
                    timer.cancel()
                    self._idle = None
                if not woken and not self._dirty:
                    return
                self._dirty = False
        except asyncio.CancelledError:
            raise
        except DomainError as exc:
            self.end(exc)
        except Exception:
            log.exception("session pump failed")
            self.end(
                Unavailable(
                    "the stream failed on the server; reconnect with the last event_id received",
                    reason="STREAM_FAILED",
                )
            )

    async def _drain(self) -> bool:
        """Delivers (or, while held, scans) what the log has now; False once the session
        has ended."""
        limit = READ_BATCH
        while not self._ended:
            if not self._held:
                batch = await self._bus.read(self.room_id, self._deliver, limit=limit)
                for e in batch:
                    if not await self._room_for_one():
                        return False
                    if not self._accept(e):
                        if self._ended:
                            return False
                        break  # held: scan ahead
                else:
                    if len(batch) < limit:
                        return True
                continue
            batch = await self._bus.read(self.room_id, self._scan, limit=limit)
            for e in batch:
                self._scan = e.event_id
                status = _state_of(e)
                if status == rooms_pb.ROOM_STATUS_PAUSED:
                    if not await self._release(e.event_id):
                        return False
                elif status is not None:
                    self._held = False
                    break
            else:
                if len(batch) < limit:
                    return True
        return False

    async def _release(self, until: int) -> bool:
        """Delivers the held events up to `until` (a later PAUSED event), staying held."""
        while self._deliver < until:
            for e in await self._bus.read(self.room_id, self._deliver):
                if e.event_id > until:
                    return True
                if not await self._room_for_one():
                    return False
                if not self._accept(e) and self._ended:
                    return False
        return True


def _settle(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def _state_of(e: BusEvent) -> int | None:
    if e.kind != events.STATE:
        return None
    return int(events.decode(e).room_state.status)


@contextlib.asynccontextmanager
async def running(session: Session) -> AsyncIterator[Session]:
    await session.start()
    try:
        yield session
    finally:
        await session.close()

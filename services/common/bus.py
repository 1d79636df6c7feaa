"""The room event bus: a capped, replayable event log per room, control messages, stream state.

Room events are appended to a per-room log and get an id that increases by exactly one per
event within the room, so a reader's cursor (the last id it saw) tells it precisely what it
missed and a gap means events were trimmed away. The log keeps the newest `maxlen` events
(approximately, on Redis: never fewer); a cursor older than the oldest kept event raises
`CursorExpired` (`OUT_OF_RANGE`), and so does a cursor newer than the newest event (a log
that expired, or a made-up cursor). Cursor 0 means "before the oldest event kept".

A log that starts (a room's first event, or the first after the log was lost: a restart of
the embedded bus, a Redis restart without persistence, an expired log) numbers its events
from the time it started, in microseconds (`first_id`), not from 1. So the ids of a log
that was lost are never reused: a cursor from before the loss is older than every event
of the new log, and is refused (`CursorExpired`) instead of silently naming another event.
Only a log that appended more than one event per microsecond of its whole life could
reach the next one's ids. Ids stay below 2^53 (exact as a JavaScript number) until 2255.

Control messages (interrupts, room-state changes) are fire-and-forget broadcasts to whoever
listens on a room's control channel at that moment: the replica that runs the room's
generation subscribes before it announces itself.

A room's running reply holds the room's reply lease (`claim_reply`): one typed record per
room (stream, replica, expiry) that the replica renews every fraction of its few seconds
while the reply runs. A replica that crashes or loses the bus stops renewing: the lease
lapses, the next message in the room takes it at once and learns which reply it must end
(`claim_reply` returns the lapsed lease), and a lapsed lease nobody takes is ended by whoever
finds it (`drop_lapsed_reply`, exactly one finder wins). A lapsed lease stays readable for
REPLY_LAPSED_KEEP_S, then is gone by itself.

The rest of a reply's shared state is typed too: its phase (`ReplyState`: pending, then
active or paused, then how it ended; kept REPLY_STATE_TTL_S), the room's newest reply that
is accepted but not running yet (`mark_pending`), an interrupt that reached such a reply
before it started (`cancel_pending`, collected by `start_pending`), and the last room
status announced to the room's streams (`set_room_status`).

Two implementations pass one contract suite (tests/common/test_bus.py): `InProcessBus` (the
embedded default, one process) and `RedisBus` (ARCONV_REDIS_URL, services.common.redis_bus:
a Redis Stream per room, its new events pushed over pub/sub to the replicas that follow the
room, all on one connection per replica).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import OutOfRange

DEFAULT_PREFIX = "arconv:bus:"
DEFAULT_MAXLEN = 2000
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
# How long a lapsed reply lease stays readable for someone to end its reply.
REPLY_LAPSED_KEEP_S = 600.0
# How long a reply's state (and a pending reply, an early interrupt) is kept.
REPLY_STATE_TTL_S = 3600.0
# How long the last status announced to a room's streams is kept.
ROOM_STATUS_TTL_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One event of a room's log: its id, a short kind tag, the opaque payload, and when it
    was published (wall clock, ns; 0 if unknown)."""

    event_id: int
    kind: str
    data: bytes
    time_ns: int = 0


# Events a process holds are kept as plain tuples (event_id, kind, data, time_ns): the garbage
# collector stops tracking a tuple of ints, strings and bytes after its first collection, so
# thousands of held events cost a full collection nothing (a BusEvent stays tracked, and a
# replica's logs then made each full collection pause the event loop for a tenth of a second)
# (bench figure (b), p99 ms).
Held = tuple[int, str, bytes, int]


def held(event: BusEvent) -> Held:
    return (event.event_id, event.kind, event.data, event.time_ns)


def first_id(now_ns: int | None = None) -> int:
    """The id before the first event of a log that starts now (see the module docstring)."""
    return (time.time_ns() if now_ns is None else now_ns) // 1_000


@dataclass(frozen=True, slots=True)
class ReplyLease:
    """The reply running in a room: its stream, the replica running it, and whether the
    lease lapsed (the replica stopped renewing it: it crashed or lost the bus)."""

    stream_id: str
    replica: str
    lapsed: bool = False


class ReplyPhase(enum.StrEnum):
    """Where a reply is: accepted and not running yet, running, or how it ended."""

    PENDING = "pending"
    ACTIVE = "active"
    PAUSED = "paused"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ReplyState:
    """A reply's room, phase, and the replica that accepted or ran it."""

    room_id: str
    phase: ReplyPhase
    replica: str


def waits_in(state: ReplyState | None, room: str) -> bool:
    """Whether a reply in this state is accepted in `room` and not running yet."""
    return state is not None and state.room_id == room and state.phase is ReplyPhase.PENDING


class CursorExpired(OutOfRange):
    """The cursor is outside the kept log: events after it are gone (or it never existed)."""

    def __init__(self, room: str, cursor: int, oldest: int, newest: int) -> None:
        super().__init__(
            f"event {cursor} of room {room!r} is outside the events kept ({oldest} to {newest});"
            " reload the history and join again with after_event_id 0",
            reason="CURSOR_EXPIRED",
            metadata={"oldest_event_id": str(oldest), "last_event_id": str(newest)},
        )
        self.cursor = cursor
        self.oldest = oldest
        self.newest = newest


class ControlSubscription(abc.ABC):
    """Control messages of one room, received from the moment the subscription was opened."""

    @abc.abstractmethod
    async def get(self) -> bytes:
        """The next control message (waits for one)."""


class Bus(abc.ABC):
    """Room event logs, control channels, and the shared state of rooms' replies."""

    @abc.abstractmethod
    async def publish(self, room: str, kind: str, data: bytes) -> int:
        """Appends an event to the room's log; returns its id (previous id + 1)."""

    @abc.abstractmethod
    async def last_event_id(self, room: str) -> int:
        """The id of the room's newest event; 0 if it has none."""

    @abc.abstractmethod
    async def check_cursor(self, room: str, after_id: int) -> int:
        """Raises CursorExpired unless every event after `after_id` is still kept (0: always).

        Returns the id of the newest event (0 if the room has none).
        """

    @abc.abstractmethod
    async def read(
        self, room: str, after_id: int, *, limit: int = 256, block_s: float | None = None
    ) -> list[BusEvent]:
        """Events after `after_id`, oldest first, at most `limit`.

        With `block_s`, waits up to that long for an event when there is none yet (returns
        an empty list on timeout). Raises CursorExpired when events right after `after_id`
        were trimmed.
        """

    def read_nowait(self, room: str, after_id: int, *, limit: int = 256) -> list[BusEvent] | None:
        """Events after `after_id` that this process holds in memory, without waiting or I/O;
        None when only `read` can tell (it would have to ask the back end, or the cursor is
        not readable here). Lets a woken listener take new events within the wake-up (bench
        figure (a), chunks/s)."""
        return None

    @abc.abstractmethod
    async def listen(
        self, room: str, after_id: int, wake: Callable[[], None]
    ) -> Callable[[], None]:
        """Calls `wake()` (on the event loop, without arguments; it must not block or raise)
        whenever events may have been appended to the room's log after `after_id`; the
        listener then reads them with `read`. Returns the function that stops it.

        Lets an idle reader hold no task: it is woken instead of blocking in `read`.
        """

    @abc.abstractmethod
    async def send_control(self, room: str, data: bytes) -> None:
        """Broadcasts a control message to the room's current control subscribers."""

    @abc.abstractmethod
    def control(self, room: str) -> contextlib.AbstractAsyncContextManager[ControlSubscription]:
        """Subscribes to the room's control messages; subscribed once entered."""

    # -- the room's reply lease (see the module docstring) --------------------------------

    @abc.abstractmethod
    async def claim_reply(
        self, room: str, stream_id: str, replica: str, *, ttl_s: float
    ) -> tuple[bool, ReplyLease | None]:
        """Takes the room's reply lease for `stream_id` for `ttl_s`, unless a live lease of
        another stream holds it. Returns (taken, other): taken with `other` set means that
        lease had lapsed and its reply is the taker's to end; not taken, `other` is the
        live holder."""

    @abc.abstractmethod
    async def renew_reply(self, room: str, stream_id: str, *, ttl_s: float) -> bool:
        """Extends `stream_id`'s lease by `ttl_s` from now; False if it no longer holds it."""

    @abc.abstractmethod
    async def release_reply(self, room: str, stream_id: str) -> bool:
        """Gives the lease up if `stream_id` holds it; True if it did."""

    @abc.abstractmethod
    async def reply_lease(self, room: str) -> ReplyLease | None:
        """The room's lease (live or lapsed), or None."""

    @abc.abstractmethod
    async def drop_lapsed_reply(self, room: str, stream_id: str) -> bool:
        """Removes `stream_id`'s lease if it lapsed; True if removed (the caller then ends
        that reply: of all who find it, exactly one gets True)."""

    # -- a reply's state, the reply waiting in a room, the room's status ------------------

    @abc.abstractmethod
    async def set_reply_state(self, stream_id: str, state: ReplyState) -> None:
        """Stores the reply's state (for REPLY_STATE_TTL_S)."""

    @abc.abstractmethod
    async def reply_state(self, stream_id: str) -> ReplyState | None:
        """The reply's state; None if unknown (never stored, expired or unreadable)."""

    @abc.abstractmethod
    async def mark_pending(self, room: str, stream_id: str, replica: str) -> None:
        """Records a reply accepted on `replica` that is not running yet: its state PENDING,
        and it is the room's newest waiting reply."""

    @abc.abstractmethod
    async def start_pending(self, room: str, stream_id: str) -> int | None:
        """The reply starts: it stops being the room's waiting reply (unless a newer one
        is). Returns the played_chars of an interrupt that reached it before it started
        (`cancel_pending`); None if none did."""

    @abc.abstractmethod
    async def cancel_pending(
        self, room: str, stream_id: str, played_chars: int, *, running: str = ""
    ) -> str:
        """Interrupts a reply of the room that is accepted but not running yet, so that it
        stops as soon as it starts: `stream_id`, or without one the room's newest waiting
        reply; never `running` (the caller interrupts that one). Returns the stream id it
        interrupted; "" if there was none (unknown, another room's, or past PENDING)."""

    @abc.abstractmethod
    async def set_room_status(self, room: str, status: str) -> str | None:
        """Stores the last status announced to the room's streams (for ROOM_STATUS_TTL_S);
        returns the one stored before (None if none)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Releases connections."""


def _check_read(after_id: int, limit: int) -> None:
    if after_id < 0:
        raise ValueError("after_id must not be negative")
    if limit < 1:
        raise ValueError("limit must be at least 1")


# --- in process -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Log:
    events: deque[Held]
    last: int  # the newest event's id; before the first, the log's `first_id`
    # Blocked readers: each waits on its own future, resolved by the next publish.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    listeners: set[Callable[[], None]] = field(default_factory=set)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def wait_woken(waiters: list[asyncio.Future[None]], timeout_s: float) -> None:
    """Waits until a publisher wakes `waiters` (resolves the futures in it) or `timeout_s`
    passes: one future and one timer per blocked read, no task and no lock."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    waiters.append(fut)
    timer = loop.call_later(timeout_s, _wake, fut)
    try:
        await fut
    finally:
        timer.cancel()
        if not fut.done():
            fut.cancel()
        with contextlib.suppress(ValueError):
            waiters.remove(fut)


class _QueueSubscription(ControlSubscription):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def deliver(self, payload: bytes) -> None:
        self.queue.put_nowait(payload)

    def fail(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)

    async def get(self) -> bytes:
        item = await self.queue.get()
        if isinstance(item, Exception):
            self.queue.put_nowait(item)  # every later get fails the same way
            raise item
        return item


class InProcessBus(Bus):
    """The embedded default: per-room deques, asyncio conditions and queues (one event loop)."""

    def __init__(self, *, maxlen: int = DEFAULT_MAXLEN) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._maxlen = maxlen
        self._logs: dict[str, _Log] = {}
        self._subs: dict[str, set[_QueueSubscription]] = {}
        # (family, id) -> (value, expiry by time.monotonic()): reply states, pending replies,
        # early interrupts, room statuses.
        self._state: dict[tuple[str, str], tuple[Any, float]] = {}
        # room -> (stream_id, replica, lease expiry), by time.monotonic().
        self._replies: dict[str, tuple[str, str, float]] = {}

    def _log(self, room: str) -> _Log:
        log = self._logs.get(room)
        if log is None:
            log = self._logs[room] = _Log(deque(maxlen=self._maxlen), first_id())
        return log

    async def publish(self, room: str, kind: str, data: bytes) -> int:
        log = self._log(room)
        log.last += 1
        log.events.append((log.last, kind, data, time.time_ns()))
        if log.waiters:
            waiters, log.waiters = log.waiters, []
            for fut in waiters:
                _wake(fut)
        for wake in tuple(log.listeners):
            wake()
        return log.last

    async def last_event_id(self, room: str) -> int:
        log = self._logs.get(room)
        return log.last if log and log.events else 0

    async def check_cursor(self, room: str, after_id: int) -> int:
        log = self._logs.get(room)
        last = log.last if log and log.events else 0
        if after_id == 0:
            return last
        oldest = log.events[0][0] if log and log.events else last + 1
        if after_id > last or after_id < oldest - 1:
            raise CursorExpired(room, after_id, oldest, last)
        return last

    def _after(self, log: _Log, room: str, after_id: int, limit: int) -> list[BusEvent]:
        if not log.events or after_id >= log.last:
            return []
        oldest = log.events[0][0]
        if after_id == 0:
            after_id = oldest - 1
        elif after_id < oldest - 1:
            raise CursorExpired(room, after_id, oldest, log.last)
        start = after_id + 1 - oldest
        events = log.events
        return [BusEvent(*events[i]) for i in range(start, min(len(events), start + limit))]

    def read_nowait(self, room: str, after_id: int, *, limit: int = 256) -> list[BusEvent] | None:
        log = self._logs.get(room)
        if log is None or after_id < 0 or limit < 1:
            return None
        if not log.events:
            return [] if after_id == 0 else None
        if after_id >= log.last:
            return [] if after_id == log.last else None
        if after_id and after_id < log.events[0][0] - 1:
            return None  # trimmed: `read` raises CursorExpired
        return self._after(log, room, after_id, limit)

    async def read(
        self, room: str, after_id: int, *, limit: int = 256, block_s: float | None = None
    ) -> list[BusEvent]:
        _check_read(after_id, limit)
        log = self._log(room)
        out = self._after(log, room, after_id, limit)
        if out or not block_s:
            return out
        await wait_woken(log.waiters, block_s)
        return self._after(log, room, after_id, limit)

    async def listen(
        self, room: str, after_id: int, wake: Callable[[], None]
    ) -> Callable[[], None]:
        log = self._log(room)
        log.listeners.add(wake)

        def stop() -> None:
            log.listeners.discard(wake)
            # A log that never had an event is only this listener's: forget it.
            idle = not log.events and not log.listeners and not log.waiters
            if idle and self._logs.get(room) is log:
                del self._logs[room]

        return stop

    async def send_control(self, room: str, data: bytes) -> None:
        for sub in list(self._subs.get(room, ())):
            sub.queue.put_nowait(data)

    @contextlib.asynccontextmanager
    async def control(self, room: str) -> AsyncIterator[ControlSubscription]:
        sub = _QueueSubscription()
        self._subs.setdefault(room, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(room)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[room]

    def _lease(self, room: str) -> tuple[str, str, float] | None:
        item = self._replies.get(room)
        if item is not None and item[2] + REPLY_LAPSED_KEEP_S <= time.monotonic():
            del self._replies[room]
            return None
        return item

    async def claim_reply(
        self, room: str, stream_id: str, replica: str, *, ttl_s: float
    ) -> tuple[bool, ReplyLease | None]:
        now = time.monotonic()
        cur = self._lease(room)
        if cur is not None and cur[0] != stream_id and cur[2] > now:
            return False, ReplyLease(cur[0], cur[1])
        self._replies[room] = (stream_id, replica, now + ttl_s)
        if cur is not None and cur[0] != stream_id:
            return True, ReplyLease(cur[0], cur[1], lapsed=True)
        return True, None

    async def renew_reply(self, room: str, stream_id: str, *, ttl_s: float) -> bool:
        cur = self._lease(room)
        if cur is None or cur[0] != stream_id:
            return False
        self._replies[room] = (cur[0], cur[1], time.monotonic() + ttl_s)
        return True

    async def release_reply(self, room: str, stream_id: str) -> bool:
        cur = self._lease(room)
        if cur is None or cur[0] != stream_id:
            return False
        del self._replies[room]
        return True

    async def reply_lease(self, room: str) -> ReplyLease | None:
        cur = self._lease(room)
        if cur is None:
            return None
        return ReplyLease(cur[0], cur[1], lapsed=cur[2] <= time.monotonic())

    async def drop_lapsed_reply(self, room: str, stream_id: str) -> bool:
        cur = self._lease(room)
        if cur is None or cur[0] != stream_id or cur[2] > time.monotonic():
            return False
        del self._replies[room]
        return True

    def _live(self, key: tuple[str, str]) -> Any:
        item = self._state.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._state[key]
            return None
        return item[0]

    def _put(self, key: tuple[str, str], value: object, ttl_s: float) -> None:
        self._state[key] = (value, time.monotonic() + ttl_s)

    async def set_reply_state(self, stream_id: str, state: ReplyState) -> None:
        self._put(("stream", stream_id), state, REPLY_STATE_TTL_S)

    async def reply_state(self, stream_id: str) -> ReplyState | None:
        state: ReplyState | None = self._live(("stream", stream_id))
        return state

    async def mark_pending(self, room: str, stream_id: str, replica: str) -> None:
        self._put(
            ("stream", stream_id), ReplyState(room, ReplyPhase.PENDING, replica), REPLY_STATE_TTL_S
        )
        self._put(("pending", room), stream_id, REPLY_STATE_TTL_S)

    async def start_pending(self, room: str, stream_id: str) -> int | None:
        if self._live(("pending", room)) == stream_id:
            del self._state[("pending", room)]
        played: int | None = self._live(("cancel", stream_id))
        return played

    async def cancel_pending(
        self, room: str, stream_id: str, played_chars: int, *, running: str = ""
    ) -> str:
        candidate = stream_id or self._live(("pending", room)) or ""
        if not candidate or candidate == running:
            return ""
        if not waits_in(self._live(("stream", candidate)), room):
            return ""
        self._put(("cancel", candidate), played_chars, REPLY_STATE_TTL_S)
        return str(candidate)

    async def set_room_status(self, room: str, status: str) -> str | None:
        old: str | None = self._live(("room-status", room))
        self._put(("room-status", room), status, ROOM_STATUS_TTL_S)
        return old

    async def close(self) -> None:
        self._logs.clear()
        self._subs.clear()
        self._state.clear()
        self._replies.clear()


def open_bus(
    redis_url: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    maxlen: int = DEFAULT_MAXLEN,
    timeout_s: float = 5.0,
) -> Bus:
    """Redis when `redis_url` is set (ARCONV_REDIS_URL), else the in-process bus."""
    if redis_url:
        from services.common.redis_bus import RedisBus

        return RedisBus(redis_url, prefix=prefix, maxlen=maxlen, timeout_s=timeout_s)
    return InProcessBus(maxlen=maxlen)

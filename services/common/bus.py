"""The room event bus: a capped, replayable event log per room, control messages, stream state.

Room events are appended to a per-room log and get an id that increases by exactly one per
event within the room (1, 2, 3, ...), so a reader's cursor (the last id it saw) tells it
precisely what it missed and a gap means events were trimmed away. The log keeps the newest
`maxlen` events (approximately, on Redis: never fewer); a cursor older than the oldest kept
event raises `CursorExpired` (`OUT_OF_RANGE`), and so does a cursor newer than the newest
event (a log that expired, or a made-up cursor).

Control messages (interrupts, room-state changes) are fire-and-forget broadcasts to whoever
listens on a room's control channel at that moment: the replica that runs the room's
generation subscribes before it announces itself.

Small state values (which stream runs where, which message was answered) are TTL keys with
set-if-absent and compare-and-delete.

Two implementations pass one contract suite (tests/common/test_bus.py): `InProcessBus` (the
embedded default, one process) and `RedisBus` (ARCONV_REDIS_URL: a Redis Stream per room
appended by a Lua script doing INCR + XADD with an explicit id, read with XREAD BLOCK;
pub/sub channels for control; every key under a prefix). On Redis, blocking reads of every
room a replica follows share one XREAD loop (`_Tails`): a replica with thousands of open
streams holds one connection for them and makes one round trip per batch of events, not one
per stream and event.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import DomainError, OutOfRange, Unavailable
from services.common.kv import command_client, redis_errors

DEFAULT_PREFIX = "arconv:bus:"
DEFAULT_MAXLEN = 2000
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
# Connections for blocking reads and control subscriptions: one per open stream or reply.
DEFAULT_BLOCKING_CONNECTIONS = 10_000


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One event of a room's log: its id, a short kind tag, the opaque payload, and when it
    was published (wall clock, ns; 0 if unknown)."""

    event_id: int
    kind: str
    data: bytes
    time_ns: int = 0


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
    """Room event logs, control channels and state keys."""

    @abc.abstractmethod
    async def publish(self, room: str, kind: str, data: bytes) -> int:
        """Appends an event to the room's log; returns its id (previous id + 1)."""

    @abc.abstractmethod
    async def last_event_id(self, room: str) -> int:
        """The id of the room's newest event; 0 if it has none."""

    @abc.abstractmethod
    async def check_cursor(self, room: str, after_id: int) -> int:
        """Raises CursorExpired unless every event after `after_id` is still kept.

        Returns the id of the newest event.
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
        not readable here). Lets a woken listener take new events within the wake-up."""
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

    @abc.abstractmethod
    async def get_state(self, key: str) -> str | None:
        """A state value, or None."""

    @abc.abstractmethod
    async def set_state(self, key: str, value: str, *, ttl_s: float) -> str | None:
        """Stores a state value; returns the previous one (None if there was none)."""

    @abc.abstractmethod
    async def set_state_if_absent(self, key: str, value: str, *, ttl_s: float) -> bool:
        """Stores a value only if the key does not exist; True if stored."""

    @abc.abstractmethod
    async def delete_state(self, key: str, *, expected: str | None = None) -> bool:
        """Deletes a key (only if it holds `expected`, when given); True if deleted."""

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
    events: deque[BusEvent]
    last: int = 0
    # Blocked readers: each waits on its own future, resolved by the next publish.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    listeners: set[Callable[[], None]] = field(default_factory=set)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _QueueSubscription(ControlSubscription):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

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
        self._state: dict[str, tuple[str, float]] = {}

    def _log(self, room: str) -> _Log:
        log = self._logs.get(room)
        if log is None:
            log = self._logs[room] = _Log(deque(maxlen=self._maxlen))
        return log

    async def publish(self, room: str, kind: str, data: bytes) -> int:
        log = self._log(room)
        log.last += 1
        log.events.append(BusEvent(log.last, kind, data, time.time_ns()))
        if log.waiters:
            waiters, log.waiters = log.waiters, []
            for fut in waiters:
                _wake(fut)
        for wake in tuple(log.listeners):
            wake()
        return log.last

    async def last_event_id(self, room: str) -> int:
        log = self._logs.get(room)
        return log.last if log else 0

    async def check_cursor(self, room: str, after_id: int) -> int:
        log = self._logs.get(room)
        last = log.last if log else 0
        oldest = log.events[0].event_id if log and log.events else last + 1
        if after_id > last or after_id < oldest - 1:
            raise CursorExpired(room, after_id, oldest, last)
        return last

    def _after(self, log: _Log, room: str, after_id: int, limit: int) -> list[BusEvent]:
        if not log.events or after_id >= log.last:
            return []
        oldest = log.events[0].event_id
        if after_id < oldest - 1:
            raise CursorExpired(room, after_id, oldest, log.last)
        start = after_id + 1 - oldest
        return [log.events[i] for i in range(start, min(len(log.events), start + limit))]

    def read_nowait(self, room: str, after_id: int, *, limit: int = 256) -> list[BusEvent] | None:
        log = self._logs.get(room)
        if log is None or after_id < 0 or limit < 1:
            return None
        if not log.events or after_id >= log.last:
            return [] if after_id == log.last else None
        if after_id < log.events[0].event_id - 1:
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
        # One future and one timer per blocked read; no task, no lock.
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        log.waiters.append(fut)
        timer = loop.call_later(block_s, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                log.waiters.remove(fut)
        return self._after(log, room, after_id, limit)

    async def listen(
        self, room: str, after_id: int, wake: Callable[[], None]
    ) -> Callable[[], None]:
        log = self._log(room)
        log.listeners.add(wake)

        def stop() -> None:
            log.listeners.discard(wake)
            # A log that never had an event is only this listener's: forget it.
            idle = not log.last and not log.listeners and not log.waiters
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

    def _live(self, key: str) -> str | None:
        item = self._state.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._state[key]
            return None
        return item[0]

    async def get_state(self, key: str) -> str | None:
        return self._live(key)

    async def set_state(self, key: str, value: str, *, ttl_s: float) -> str | None:
        old = self._live(key)
        self._state[key] = (value, time.monotonic() + ttl_s)
        return old

    async def set_state_if_absent(self, key: str, value: str, *, ttl_s: float) -> bool:
        if self._live(key) is not None:
            return False
        self._state[key] = (value, time.monotonic() + ttl_s)
        return True

    async def delete_state(self, key: str, *, expected: str | None = None) -> bool:
        old = self._live(key)
        if old is None or (expected is not None and old != expected):
            return False
        del self._state[key]
        return True

    async def close(self) -> None:
        self._logs.clear()
        self._subs.clear()
        self._state.clear()


# --- Redis ----------------------------------------------------------------------------------

# KEYS: counter, stream. ARGV: maxlen, kind, data, retention_ms, publish time (ns). Ids are
# gap-free and ordered because the script runs atomically.
_PUBLISH = """
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id .. '-0', 'k', ARGV[2], 'd', ARGV[3],
  't', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return id
"""

# KEYS[1]; ARGV[1]: expected value.
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _entry_id(raw: object) -> int:
    return int(_text(raw).split("-", 1)[0])


class _Controls:
    """Every control subscription of a replica on one pub/sub connection.

    A channel is subscribed while anyone listens on it (and for CONTROL_IDLE_S after, so a
    room's replies do not subscribe and unsubscribe one after another); `subscribe` returns
    once Redis has confirmed. Confirmations come back in the order the commands were sent,
    so each one settles the oldest command still waiting on its channel. If the connection
    fails, every open subscription fails with UNAVAILABLE and the next one reconnects.
    """

    def __init__(self, bus: RedisBus) -> None:
        self._bus = bus
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._subs: dict[str, set[_QueueSubscription]] = {}
        self._idle_since: dict[str, float] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._sending = asyncio.Lock()

    async def subscribe(self, channel: str) -> _QueueSubscription:
        sub = _QueueSubscription()
        subs = self._subs.get(channel)
        if subs is not None:
            subs.add(sub)
            self._idle_since.pop(channel, None)
            pending = self._waiting.get(channel)
            if pending:  # still waiting for this channel's confirmation
                await asyncio.shield(pending[-1])
            return sub
        self._subs[channel] = {sub}
        try:
            with redis_errors("the Redis bus"):
                async with asyncio.timeout(self._bus._timeout_s):
                    await self._command("subscribe", channel)
        except BaseException:
            self.unsubscribe(channel, sub)
            raise
        return sub

    def unsubscribe(self, channel: str, sub: _QueueSubscription) -> None:
        subs = self._subs.get(channel)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            self._idle_since[channel] = time.monotonic()

    async def _command(self, op: str, channel: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # One command at a time: redis-py's PubSub takes its connection on its first command,
        # and concurrent first commands would each take one (all but one never answered).
        async with self._sending:
            if self._pubsub is None:
                self._pubsub = self._bus._blocking.pubsub()
            pubsub = self._pubsub
            pending = self._waiting.setdefault(channel, deque())
            pending.append(fut)
            try:
                await getattr(pubsub, op)(channel)
            except BaseException:
                with contextlib.suppress(ValueError):
                    pending.remove(fut)  # never sent: no confirmation will settle it
                raise
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(pubsub), name="redis-bus-control")
        if op == "subscribe":
            await asyncio.shield(fut)

    async def _read(self, pubsub: Any) -> None:
        try:
            while self._pubsub is pubsub:
                with redis_errors("the Redis bus"):
                    msg = await pubsub.get_message(timeout=CONTROL_IDLE_S / 2)
                if msg is not None:
                    self._dispatch(msg)
                await self._sweep()
        except Unavailable as exc:
            self._fail(pubsub, exc)
            await _close_quietly(pubsub)
        except Exception as exc:  # a protocol surprise: same outcome, logged by the caller
            self._fail(pubsub, Unavailable(f"the Redis bus control channel failed: {exc}"))
            await _close_quietly(pubsub)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = _text(msg.get("type", b""))
        channel = _text(msg.get("channel", b""))
        if kind == "message":
            data = msg["data"]
            payload = data if isinstance(data, bytes) else str(data).encode()
            for sub in tuple(self._subs.get(channel, ())):
                sub.queue.put_nowait(payload)
        elif kind in ("subscribe", "unsubscribe"):
            pending = self._waiting.get(channel)
            if pending:
                fut = pending.popleft()
                if not fut.done():
                    fut.set_result(None)
                if not pending:
                    del self._waiting[channel]

    async def _sweep(self) -> None:
        now = time.monotonic()
        for channel, since in list(self._idle_since.items()):
            if now - since >= CONTROL_IDLE_S and not self._subs.get(channel):
                del self._idle_since[channel]
                self._subs.pop(channel, None)
                with redis_errors("the Redis bus"):
                    await self._command("unsubscribe", channel)

    def _fail(self, pubsub: Any, exc: Unavailable) -> None:
        if self._pubsub is pubsub:
            self._pubsub = None
        for subs in self._subs.values():
            for sub in subs:
                sub.queue.put_nowait(exc)
        for pending in self._waiting.values():
            for fut in pending:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: a subscriber may have stopped waiting
        self._subs.clear()
        self._idle_since.clear()
        self._waiting.clear()

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait({self._reader})
        if pubsub is not None:
            await _close_quietly(pubsub)


async def _close_quietly(pubsub: Any) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()


CONTROL_IDLE_S = 30.0

# How many of its newest events a followed room keeps in memory, and how long a room nobody
# reads any more stays followed.
TAIL_EVENTS = 512
TAIL_IDLE_S = 30.0
TAIL_BLOCK_MS = 1000


class _Tail:
    """What this replica has read of one room's log: the newest events and who waits."""

    __slots__ = ("base", "events", "listeners", "used", "waiters")

    def __init__(self, base: int, now: float, keep: int) -> None:
        self.events: deque[BusEvent] = deque(maxlen=keep)
        self.base = base  # the id just before events[0]
        self.waiters: list[asyncio.Future[None]] = []
        self.listeners: set[Callable[[], None]] = set()
        self.used = now

    @property
    def cursor(self) -> int:
        return self.base + len(self.events)

    def add(self, event: BusEvent) -> None:
        if event.event_id != self.cursor + 1:
            # Events in between were trimmed from the log: start again from this one.
            self.events.clear()
            self.base = event.event_id - 1
        if len(self.events) == self.events.maxlen:
            self.base += 1
        self.events.append(event)

    def after(self, after_id: int, limit: int) -> list[BusEvent]:
        start = after_id - self.base
        return [self.events[i] for i in range(start, min(len(self.events), start + limit))]

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            _wake(fut)
        for listener in tuple(self.listeners):
            listener()


class _Tails:
    """One XREAD BLOCK loop over every room this replica follows.

    A room is followed from the first blocking read that finds nothing new, and dropped
    after TAIL_IDLE_S without readers. Following a new room wakes the loop through a
    replica-private wake stream, so the room joins the next XREAD at once.
    """

    def __init__(self, bus: RedisBus) -> None:
        self._bus = bus
        self._tails: dict[str, _Tail] = {}
        self._wake_key = f"{bus._prefix}wake:{uuid.uuid4().hex}"
        self._task: asyncio.Task[None] | None = None
        self._error: Exception | None = None

    def get(self, room: str) -> _Tail | None:
        return self._tails.get(room)

    async def follow(self, room: str, after_id: int) -> _Tail:
        tail = self._tails.get(room)
        if tail is not None:
            return tail
        # Never more than the log keeps, so a cursor the log has expired is expired here too.
        keep = min(TAIL_EVENTS, self._bus._maxlen)
        tail = self._tails[room] = _Tail(after_id, time.monotonic(), keep)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="redis-bus-tails")
        else:
            with redis_errors("the Redis bus"):
                async with self._bus._client.pipeline(transaction=False) as pipe:
                    pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1)
                    pipe.pexpire(self._wake_key, 60_000)
                    await pipe.execute()
        return tail

    def failed(self) -> bool:
        return self._error is not None

    def check(self) -> None:
        """Raises the loop's last error while it cannot read (Redis down)."""
        if self._error is not None:
            raise self._error

    async def _run(self) -> None:
        bus = self._bus
        room_of: dict[str, str] = {}
        while self._tails:
            streams: dict[str, str] = {self._wake_key: "$"}
            for room, tail in self._tails.items():
                key = bus._keys(room)[1]
                room_of[key] = room
                streams[key] = f"{tail.cursor}-0"
            try:
                with redis_errors("the Redis bus"):
                    reply: Any = await bus._blocking.xread(
                        streams,  # type: ignore[arg-type]
                        count=TAIL_EVENTS,
                        block=TAIL_BLOCK_MS,
                    )
                self._error = None
            except Unavailable as exc:
                self._error = exc
                for tail in self._tails.values():
                    tail.wake()
                await asyncio.sleep(0.5)
                continue
            for raw_key, entries in reply or ():
                got = self._tails.get(room_of.get(_text(raw_key), ""))
                if got is None:
                    continue
                for eid, fields in entries:
                    got.add(_event(eid, fields))
                got.wake()
            now = time.monotonic()
            for room, tail in list(self._tails.items()):
                if not tail.waiters and not tail.listeners and now - tail.used > TAIL_IDLE_S:
                    del self._tails[room]
                    room_of.pop(bus._keys(room)[1], None)

    async def close(self) -> None:
        self._tails.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})


def _event(eid: object, fields: dict[bytes, bytes]) -> BusEvent:
    return BusEvent(
        _entry_id(eid), _text(fields[b"k"]), bytes(fields[b"d"]), int(fields.get(b"t", 0))
    )


class RedisBus(Bus):
    """Redis Streams, pub/sub and keys (redis.asyncio); every key under `prefix`."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = DEFAULT_MAXLEN,
        retention_s: float = DEFAULT_RETENTION_S,
        timeout_s: float = 5.0,
        blocking_connections: int = DEFAULT_BLOCKING_CONNECTIONS,
    ) -> None:
        import redis.asyncio as aioredis

        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._prefix = prefix
        self._maxlen = maxlen
        self._retention_ms = max(1, round(retention_s * 1000))
        self._timeout_s = timeout_s
        self._client = command_client(url, timeout_s=timeout_s)
        # Blocking reads hold their connection for the block time; they get their own pool
        # without a socket timeout shorter than the block. Every open client stream and every
        # running reply holds one, so the pool is sized for them (redis-py's default is 100).
        self._blocking = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, max_connections=blocking_connections
        )
        self._tails = _Tails(self)
        self._controls = _Controls(self)
        self._publish = self._client.register_script(_PUBLISH)
        self._outbox: list[tuple[asyncio.Future[int], tuple[Any, ...]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._delete_if = self._client.register_script(_DELETE_IF)

    def _keys(self, room: str) -> tuple[str, str]:
        return f"{self._prefix}room:{room}:seq", f"{self._prefix}room:{room}:log"

    def _state_key(self, key: str) -> str:
        return f"{self._prefix}state:{key}"

    async def publish(self, room: str, kind: str, data: bytes) -> int:
        """Appends through the outbox: the publishes of a moment (every reply of a replica
        streaming at once) go to Redis as one pipeline, one round trip, instead of one
        round trip each. One batch is in flight at a time; the next one gathers meanwhile."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        seq, log = self._keys(room)
        self._outbox.append(
            (fut, (seq, log, self._maxlen, kind, data, self._retention_ms, time.time_ns()))
        )
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_outbox(), name="redis-bus-publish")
        return await fut

    async def _send_outbox(self) -> None:
        await asyncio.sleep(0)  # let the publishes of this moment join the batch
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                results = await self._append(batch)
            except Exception as exc:
                err = exc
                if not isinstance(exc, DomainError):
                    err = Unavailable(f"the Redis bus is unavailable: {exc}")
                for fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (fut, _), out in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(int(out))

    async def _append(self, batch: list[tuple[asyncio.Future[int], tuple[Any, ...]]]) -> list[Any]:
        import redis.exceptions as rx

        for attempt in (1, 2):
            with redis_errors("the Redis bus"):
                async with self._client.pipeline(transaction=False) as pipe:
                    for _, (seq, log, *args) in batch:
                        pipe.evalsha(self._publish.sha, 2, seq, log, *args)
                    results: list[Any] = await pipe.execute(raise_on_error=False)
                missing = any(isinstance(r, rx.NoScriptError) for r in results)
                if missing and attempt == 1:
                    # Redis restarted or was flushed: nothing ran; load the script, send again.
                    await self._client.script_load(_PUBLISH)
                    continue
                for r in results:
                    if isinstance(r, Exception):
                        raise r
                return results
        raise AssertionError("unreachable")

    async def last_event_id(self, room: str) -> int:
        with redis_errors("the Redis bus"):
            raw = await self._client.get(self._keys(room)[0])
        return int(raw) if raw is not None else 0

    async def check_cursor(self, room: str, after_id: int) -> int:
        seq, log = self._keys(room)
        with redis_errors("the Redis bus"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(seq)
                pipe.xrange(log, "-", "+", count=1)
                raw_last, first = await pipe.execute()
        last = int(raw_last) if raw_last is not None else 0
        oldest = _entry_id(first[0][0]) if first else last + 1
        if after_id > last or after_id < oldest - 1:
            raise CursorExpired(room, after_id, oldest, last)
        return last

    async def read(
        self, room: str, after_id: int, *, limit: int = 256, block_s: float | None = None
    ) -> list[BusEvent]:
        _check_read(after_id, limit)
        tail: _Tail | None = self._tails.get(room)
        if not block_s:
            if tail is not None and tail.base <= after_id < tail.cursor:
                return tail.after(after_id, limit)  # already read by this replica
            return await self._read_now(room, after_id, limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_s
        while True:
            if tail is not None and after_id >= tail.base:
                tail.used = time.monotonic()
                if after_id < tail.cursor:
                    return tail.after(after_id, limit)
            else:
                # Not followed yet, or behind what the replica keeps: read the log itself.
                events = await self._read_now(room, after_id, limit)
                if events:
                    return events
                if tail is None:
                    tail = await self._tails.follow(room, after_id)
                    continue
            left = deadline - loop.time()
            if left <= 0:
                return []
            self._tails.check()
            fut: asyncio.Future[None] = loop.create_future()
            tail.waiters.append(fut)
            timer = loop.call_later(left, _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()
                if not fut.done():
                    fut.cancel()
                with contextlib.suppress(ValueError):
                    tail.waiters.remove(fut)
            self._tails.check()
            tail = self._tails.get(room) or tail

    def read_nowait(self, room: str, after_id: int, *, limit: int = 256) -> list[BusEvent] | None:
        # What the replica's XREAD loop has read already; anything else needs Redis.
        tail = self._tails.get(room)
        if tail is None or limit < 1 or self._tails.failed() or not tail.base <= after_id:
            return None
        if after_id >= tail.cursor:
            # Caught up with the loop, which wakes the room's listeners when it reads more.
            return [] if after_id == tail.cursor else None
        tail.used = time.monotonic()
        return tail.after(after_id, limit)

    async def listen(
        self, room: str, after_id: int, wake: Callable[[], None]
    ) -> Callable[[], None]:
        tail = await self._tails.follow(room, after_id)
        tail.listeners.add(wake)

        def stop() -> None:
            tail.listeners.discard(wake)
            tail.used = time.monotonic()

        return stop

    async def _read_now(self, room: str, after_id: int, limit: int) -> list[BusEvent]:
        log = self._keys(room)[1]
        with redis_errors("the Redis bus"):
            reply = await self._client.xread({log: f"{after_id}-0"}, count=limit)
        if not reply:
            return []
        entries: list[tuple[Any, dict[bytes, bytes]]] = reply[0][1]  # type: ignore[index,assignment]
        events = [_event(eid, fields) for eid, fields in entries]
        if events and events[0].event_id != after_id + 1:
            raise CursorExpired(room, after_id, events[0].event_id, events[-1].event_id)
        return events

    async def send_control(self, room: str, data: bytes) -> None:
        with redis_errors("the Redis bus"):
            await self._client.publish(f"{self._prefix}ctl:{room}", data)

    @contextlib.asynccontextmanager
    async def control(self, room: str) -> AsyncIterator[ControlSubscription]:
        # Subscribed only once Redis confirms; a message published before that is lost.
        channel = f"{self._prefix}ctl:{room}"
        sub = await self._controls.subscribe(channel)
        try:
            yield sub
        finally:
            self._controls.unsubscribe(channel, sub)

    async def get_state(self, key: str) -> str | None:
        with redis_errors("the Redis bus"):
            raw = await self._client.get(self._state_key(key))
        return _text(raw) if raw is not None else None

    async def set_state(self, key: str, value: str, *, ttl_s: float) -> str | None:
        with redis_errors("the Redis bus"):
            old = await self._client.set(
                self._state_key(key), value, px=max(1, round(ttl_s * 1000)), get=True
            )
        return _text(old) if old is not None else None

    async def set_state_if_absent(self, key: str, value: str, *, ttl_s: float) -> bool:
        with redis_errors("the Redis bus"):
            ok = await self._client.set(
                self._state_key(key), value, px=max(1, round(ttl_s * 1000)), nx=True
            )
        return bool(ok)

    async def delete_state(self, key: str, *, expected: str | None = None) -> bool:
        with redis_errors("the Redis bus"):
            if expected is None:
                return bool(await self._client.delete(self._state_key(key)))
            return bool(await self._delete_if(keys=[self._state_key(key)], args=[expected]))

    async def close(self) -> None:
        if self._sender is not None and not self._sender.done():
            await asyncio.wait({self._sender}, timeout=self._timeout_s)
        await self._tails.close()
        await self._controls.close()
        await self._client.aclose()
        await self._blocking.aclose()


def open_bus(
    redis_url: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    maxlen: int = DEFAULT_MAXLEN,
    timeout_s: float = 5.0,
) -> Bus:
    """Redis when `redis_url` is set (ARCONV_REDIS_URL), else the in-process bus."""
    if redis_url:
        return RedisBus(redis_url, prefix=prefix, maxlen=maxlen, timeout_s=timeout_s)
    return InProcessBus(maxlen=maxlen)

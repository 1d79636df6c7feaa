"""How a replica hears of a room's new events on the Redis bus, and of control messages.

One pub/sub connection per replica (`PubSubHub`) carries every channel the replica listens
on: the control channels of the rooms whose replies it runs, and the event channels of the
rooms its clients read. The publish script appends each event to the room's stream and
PUBLISHes it on the room's event channel, so a followed room's events are pushed to the
replica as they are appended: no polling, no per-room connection, no command that grows
with the number of rooms followed (bench figure (b), the redis rows).

The stream stays the truth. `Tails` keeps each followed room's newest events in memory
(`Tail`) and reads the stream (XREAD) when it starts following a room (after Redis
confirmed the subscription, so nothing falls in between), when a pushed event is not the
next one (a gap), after the pub/sub connection was lost (every followed room, once it is
back), and when a room's counter stays ahead of its tail for a whole check interval (an
event that was appended but never pushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from services.common.bus import BusEvent, Held, _wake, held
from services.common.errors import Unavailable
from services.common.kv import redis_errors

if TYPE_CHECKING:
    from services.common.redis_bus import RedisBus

# A channel nobody listens on any more is unsubscribed after this long (a room's replies
# do not subscribe and unsubscribe one after another).
CONTROL_IDLE_S = 30.0
# How many of its newest events a followed room keeps in memory; how long a room nobody
# reads any more stays followed; how often followed rooms are checked against their
# counters; how long to wait before subscribing again after the connection was lost.
TAIL_EVENTS = 512
TAIL_IDLE_S = 30.0
TAIL_CHECK_S = 1.0
RECOVER_S = 0.5


def text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Subscriber(Protocol):
    def deliver(self, payload: bytes) -> None: ...

    def fail(self, exc: Unavailable) -> None: ...


class PubSubHub:
    """Every subscription of a replica on one pub/sub connection.

    A channel is subscribed while anyone listens on it (and for CONTROL_IDLE_S after);
    `subscribe` returns once Redis has confirmed. Confirmations come back in the order the
    commands were sent, so each one settles the oldest command still waiting on its
    channel. If the connection fails, every subscriber hears `fail` and the next
    subscription connects again.
    """

    def __init__(self, bus: RedisBus) -> None:
        self._bus = bus
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._subs: dict[str, set[Subscriber]] = {}
        self._idle_since: dict[str, float] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._sending = asyncio.Lock()
        self._swept = 0.0

    async def subscribe(self, channel: str, sub: Subscriber) -> None:
        subs = self._subs.get(channel)
        if subs is not None:
            subs.add(sub)
            self._idle_since.pop(channel, None)
            pending = self._waiting.get(channel)
            if pending:  # still waiting for this channel's confirmation
                await asyncio.shield(pending[-1])
            return
        self._subs[channel] = {sub}
        try:
            with redis_errors("the Redis bus"):
                async with asyncio.timeout(self._bus._timeout_s):
                    await self._command("subscribe", channel)
        except BaseException:
            self.unsubscribe(channel, sub)
            raise

    def unsubscribe(self, channel: str, sub: Subscriber) -> None:
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
                self._pubsub = self._bus._pubsub_client.pubsub()
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
            self._reader = asyncio.create_task(self._read(pubsub), name="redis-bus-pubsub")
        if op == "subscribe":
            await asyncio.shield(fut)

    async def _read(self, pubsub: Any) -> None:
        try:
            while self._pubsub is pubsub:
                with redis_errors("the Redis bus"):
                    msg = await pubsub.get_message(timeout=CONTROL_IDLE_S / 2)
                if msg is not None:
                    self._dispatch(msg)
                now = time.monotonic()
                if now - self._swept >= min(1.0, CONTROL_IDLE_S / 4):
                    self._swept = now
                    await self._sweep(now)
        except Unavailable as exc:
            self._fail(pubsub, exc)
            await close_quietly(pubsub)
        except Exception as exc:  # a protocol surprise: same outcome, logged by the caller
            self._fail(pubsub, Unavailable(f"the Redis bus pub/sub connection failed: {exc}"))
            await close_quietly(pubsub)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = text(msg.get("type", b""))
        channel = text(msg.get("channel", b""))
        if kind == "message":
            data = msg["data"]
            payload = data if isinstance(data, bytes) else str(data).encode()
            for sub in tuple(self._subs.get(channel, ())):
                sub.deliver(payload)
        elif kind in ("subscribe", "unsubscribe"):
            pending = self._waiting.get(channel)
            if pending:
                fut = pending.popleft()
                if not fut.done():
                    fut.set_result(None)
                if not pending:
                    del self._waiting[channel]

    async def _sweep(self, now: float) -> None:
        for channel, since in list(self._idle_since.items()):
            if now - since >= CONTROL_IDLE_S and not self._subs.get(channel):
                del self._idle_since[channel]
                self._subs.pop(channel, None)
                with redis_errors("the Redis bus"):
                    await self._command("unsubscribe", channel)

    def _fail(self, pubsub: Any, exc: Unavailable) -> None:
        if self._pubsub is pubsub:
            self._pubsub = None
        subs = [sub for group in self._subs.values() for sub in group]
        for pending in self._waiting.values():
            for fut in pending:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: a subscriber may have stopped waiting
        self._subs.clear()
        self._idle_since.clear()
        self._waiting.clear()
        for sub in subs:
            sub.fail(exc)

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait({self._reader})
        if pubsub is not None:
            await close_quietly(pubsub)


async def close_quietly(pubsub: Any) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()


def decode_push(payload: bytes) -> BusEvent | None:
    """An event as the publish script pushes it, "<id> <kind> <time ns> <data>"; None if
    it is not one (the stream is read instead)."""
    parts = payload.split(b" ", 3)
    if len(parts) != 4 or not parts[0].isdigit() or not parts[2].isdigit():
        return None
    return BusEvent(int(parts[0]), parts[1].decode(), parts[3], int(parts[2]))


class Tail:
    """What this replica holds of one room's log: the newest events, and who waits for more."""

    __slots__ = (
        "base",
        "behind",
        "events",
        "expired",
        "listeners",
        "room",
        "seen_counter",
        "subscribed",
        "subscriber",
        "syncing",
        "used",
        "waiters",
    )

    def __init__(self, room: str, base: int, now: float, keep: int) -> None:
        self.room = room
        self.events: deque[Held] = deque(maxlen=keep)
        self.base = base  # the id just before events[0]
        self.waiters: list[asyncio.Future[None]] = []
        self.listeners: set[Callable[[], None]] = set()
        self.used = now
        self.subscribed = False
        self.syncing = False
        self.behind = 0  # the newest id known to exist (pushed or counted), maybe not held
        self.seen_counter = 0  # the room's counter at the previous check
        # Cursors from 1 to this one name events the log no longer has (trimmed, or lost
        # with Redis's data): reading after them raises CursorExpired.
        self.expired = 0
        self.subscriber: Subscriber | None = None  # what hears the room's channel

    @property
    def cursor(self) -> int:
        return self.base + len(self.events)

    def add(self, event: BusEvent) -> None:
        """Appends the event read after the cursor (skipped if held already)."""
        if event.event_id <= self.cursor:
            return
        if event.event_id != self.cursor + 1:
            # Events in between were trimmed from the log (or the log was lost and started
            # again): start again from this one.
            self.expired = max(self.expired, self.cursor)
            self.events.clear()
            self.base = event.event_id - 1
        if len(self.events) == self.events.maxlen:
            self.base += 1
        self.events.append(held(event))

    def lost(self, counter: int) -> None:
        """The log is behind what this tail holds: Redis lost it (a restart without
        persistence) or it expired. Nothing held is served again; readers hear it."""
        self.expired = max(self.expired, self.cursor)
        self.events.clear()
        self.base = counter
        self.behind = counter
        self.wake()

    def gone(self, after_id: int) -> bool:
        """True if the events right after `after_id` were lost or trimmed."""
        return 0 < after_id <= self.expired and after_id < self.base

    def after(self, after_id: int, limit: int) -> list[BusEvent]:
        start = after_id - self.base
        events = self.events
        return [BusEvent(*events[i]) for i in range(start, min(len(events), start + limit))]

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            _wake(fut)
        for listener in tuple(self.listeners):
            listener()


class _TailSubscriber:
    __slots__ = ("_tail", "_tails")

    def __init__(self, tails: Tails, tail: Tail) -> None:
        self._tails = tails
        self._tail = tail

    def deliver(self, payload: bytes) -> None:
        self._tails.pushed(self._tail, payload)

    def fail(self, exc: Unavailable) -> None:
        self._tails.lost(exc)


class Tails:
    """The rooms this replica follows (see the module docstring).

    A room is followed from the first blocking read or listener that finds nothing new, and
    dropped after TAIL_IDLE_S without readers.
    """

    def __init__(self, bus: RedisBus) -> None:
        self._bus = bus
        self._tails: dict[str, Tail] = {}
        self._error: Unavailable | None = None
        self._checker: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._syncs: set[asyncio.Task[None]] = set()

    def get(self, room: str) -> Tail | None:
        return self._tails.get(room)

    def failed(self) -> bool:
        return self._error is not None

    def check(self) -> None:
        """Raises the last error while followed rooms cannot be heard (Redis down)."""
        if self._error is not None:
            raise self._error

    async def follow(self, room: str, after_id: int) -> Tail:
        tail = self._tails.get(room)
        if tail is not None:
            return tail
        # Never more than the log keeps, so a cursor the log has expired is expired here too.
        keep = min(TAIL_EVENTS, self._bus._maxlen)
        tail = self._tails[room] = Tail(room, after_id, time.monotonic(), keep)
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check(), name="redis-bus-tails")
        try:
            await self._subscribe(tail)
        except Unavailable as exc:
            self.lost(exc)  # followed again once Redis answers
            raise
        return tail

    async def _subscribe(self, tail: Tail) -> None:
        if tail.subscriber is None:
            tail.subscriber = _TailSubscriber(self, tail)
        await self._bus._hub.subscribe(self._bus._event_channel(tail.room), tail.subscriber)
        tail.subscribed = True
        await self._sync(tail)

    async def _sync(self, tail: Tail) -> None:
        """Reads the log after the tail's cursor until the tail holds every event known."""
        if tail.syncing:
            return  # the sync running looks again before it ends
        tail.syncing = True
        try:
            while True:
                start = tail.cursor
                events = await self._bus._read_now(tail.room, start, TAIL_EVENTS, trimmed_ok=True)
                for e in events:
                    tail.add(e)
                if events:
                    tail.wake()
                if len(events) < TAIL_EVENTS and tail.behind <= tail.cursor:
                    return
                if not events and tail.cursor == start:
                    return  # `behind` was ahead of the log (trimmed or expired meanwhile)
        finally:
            tail.syncing = False

    def pushed(self, tail: Tail, payload: bytes) -> None:
        """An event pushed on the room's channel."""
        event = decode_push(payload)
        if event is not None and event.event_id <= tail.cursor:
            return
        if event is not None and event.event_id == tail.cursor + 1:
            tail.add(event)
            tail.wake()
            return
        # A gap (or something that is not an event): the log tells what is missing.
        tail.behind = max(tail.behind, event.event_id if event is not None else tail.cursor + 1)
        self._spawn_sync(tail)

    def _spawn_sync(self, tail: Tail) -> None:
        if tail.syncing:
            return
        task = asyncio.create_task(self._sync_quietly(tail), name="redis-bus-tail-sync")
        self._syncs.add(task)
        task.add_done_callback(self._syncs.discard)

    async def _sync_quietly(self, tail: Tail) -> None:
        try:
            await self._sync(tail)
        except Unavailable as exc:
            self.lost(exc)

    def lost(self, exc: Unavailable) -> None:
        """The followed rooms cannot be heard: readers hear it, and the rooms are followed
        again (and read from their cursors) once Redis answers."""
        if self._error is exc:
            return  # heard already (the hub tells every subscriber of a lost connection)
        self._error = exc
        for tail in self._tails.values():
            tail.subscribed = False
            tail.wake()
        if self._tails and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.create_task(self._recover(), name="redis-bus-recover")

    async def _recover(self) -> None:
        while self._tails:
            await asyncio.sleep(RECOVER_S)
            tails = [t for t in self._tails.values() if not t.subscribed]
            results = await asyncio.gather(
                *(self._subscribe(t) for t in tails), return_exceptions=True
            )
            failure = next((r for r in results if isinstance(r, BaseException)), None)
            if failure is None:
                self._error = None
                for tail in tails:
                    tail.wake()
                return
            self._error = (
                failure
                if isinstance(failure, Unavailable)
                else Unavailable(f"the Redis bus cannot follow rooms: {failure}")
            )

    async def _check(self) -> None:
        """Drops rooms nobody reads; reads the log of rooms whose counter stayed ahead."""
        while self._tails:
            await asyncio.sleep(TAIL_CHECK_S)
            now = time.monotonic()
            for room, tail in list(self._tails.items()):
                if not tail.waiters and not tail.listeners and now - tail.used > TAIL_IDLE_S:
                    del self._tails[room]
                    if tail.subscriber is not None:
                        self._bus._hub.unsubscribe(self._bus._event_channel(room), tail.subscriber)
            tails = [t for t in self._tails.values() if t.subscribed and not t.syncing]
            if not tails or self._error is not None:
                continue
            try:
                with redis_errors("the Redis bus"):
                    counters = await self._bus._client.mget(
                        [self._bus._keys(t.room)[0] for t in tails]
                    )
            except Unavailable:
                continue  # commands fail for now; the next check tries again
            for tail, raw in zip(tails, counters, strict=True):
                counter = int(raw) if raw is not None else 0
                if raw is None and tail.cursor:
                    # The counter is gone: the log was lost (Redis restarted without
                    # persistence) or expired. (A counter that merely reads lower than the
                    # tail is a reply older than the pushes since, not a loss.)
                    tail.lost(0)
                # Behind what was counted a whole interval ago: a push never came.
                if tail.seen_counter > tail.cursor:
                    tail.behind = max(tail.behind, tail.seen_counter)
                    self._spawn_sync(tail)
                tail.seen_counter = counter

    async def close(self) -> None:
        self._tails.clear()
        tasks = {t for t in (self._checker, self._recovery, *self._syncs) if t is not None}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

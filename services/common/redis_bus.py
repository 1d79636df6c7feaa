"""The Redis back end of the room bus (ARCONV_REDIS_URL): `RedisBus`, one of the two
implementations of `services.common.bus.Bus`, and the contract suite's second back end.

A room's log is a Redis Stream with ids `<n>-0`, appended by one Lua script that increments
the room's counter, XADDs the event under that id and PUBLISHes it on the room's event
channel; the script runs atomically, so ids are gap-free and ordered. How a replica follows
rooms (pushed events, one pub/sub connection) is in `services.common.redis_follow`. Control
messages are pub/sub broadcasts; a reply's state, a room's pending reply, an early
interrupt and a room's status are keys with TTLs (`state:stream:<id>` holds JSON {room_id,
state, replica}; `state:pending:<room>` a stream id; `state:cancel:<id>` played_chars;
`state:room-status:<room>` a status name); every key and channel is under the bus's prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.common.bus import (
    DEFAULT_MAXLEN,
    DEFAULT_PREFIX,
    DEFAULT_RETENTION_S,
    REPLY_LAPSED_KEEP_S,
    REPLY_STATE_TTL_S,
    ROOM_STATUS_TTL_S,
    Bus,
    BusEvent,
    ControlSubscription,
    CursorExpired,
    ReplyLease,
    ReplyPhase,
    ReplyState,
    _check_read,
    _QueueSubscription,
    wait_woken,
    waits_in,
)
from services.common.errors import DomainError, Unavailable
from services.common.kv import command_client, connection_options, redis_errors
from services.common.redis_follow import PubSubHub, Tail, Tails
from services.common.redis_follow import text as _text

# Long-lived connections: the replica's pub/sub connection (and one more while it reconnects).
DEFAULT_PUBSUB_CONNECTIONS = 16

# KEYS: counter, stream, event channel. ARGV: maxlen, kind, data, retention_ms, publish time
# (ns). The push is "<id> <kind> <time> <data>" (see redis_follow.decode_push). A room whose
# counter is missing (its first event, or Redis lost its data) starts from Redis's clock in
# microseconds (bus.first_id), so ids of a lost log are never given again.
_PUBLISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[1], now[1] .. string.format('%06d', tonumber(now[2])))
end
local id = string.format('%d', redis.call('INCR', KEYS[1]))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id .. '-0', 'k', ARGV[2], 'd', ARGV[3],
  't', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', KEYS[3], id .. ' ' .. ARGV[2] .. ' ' .. ARGV[5] .. ' ' .. ARGV[3])
return id
"""

# The reply lease of a room: KEYS[1] holds JSON {s: stream_id, r: replica, e: expiry in ms
# by Redis's clock}; the key itself lives REPLY_LAPSED_KEEP_S longer. Each script returns
# the lease it found, with whether it had lapsed. ARGV: stream_id, replica, ttl_ms, keep_ms.
_LEASE_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('GET', KEYS[1])
local d = cur and cjson.decode(cur)
local lapsed = d and tonumber(d.e) <= now
"""
_LEASE_SET = """
local function put()
  local e = now + tonumber(ARGV[3])
  redis.call('SET', KEYS[1], cjson.encode({s = ARGV[1], r = ARGV[2], e = string.format('%d', e)}),
    'PX', tonumber(ARGV[3]) + tonumber(ARGV[4]))
end
"""
_CLAIM_REPLY = (
    _LEASE_NOW
    + _LEASE_SET
    + """
if d and d.s ~= ARGV[1] and not lapsed then return {0, cur, 0} end
put()
if d and d.s ~= ARGV[1] then return {1, cur, 1} end
return {1, false, 0}
"""
)
_RENEW_REPLY = (
    _LEASE_NOW
    + _LEASE_SET
    + """
if not d or d.s ~= ARGV[1] then return 0 end
ARGV[2] = d.r
put()
return 1
"""
)
_RELEASE_REPLY = (
    _LEASE_NOW
    + """
if d and d.s == ARGV[1] and (ARGV[2] == '' or lapsed) then return redis.call('DEL', KEYS[1]) end
return 0
"""
)
_REPLY_LEASE = (
    _LEASE_NOW
    + """
if not d then return {false, 0} end
return {cur, lapsed and 1 or 0}
"""
)

# A reply starts. KEYS: the room's pending reply, the reply's early interrupt. ARGV: its
# stream id. Drops it as the room's pending reply unless a newer one is; returns the
# interrupt's played_chars (nil if none came).
_START_PENDING = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return redis.call('GET', KEYS[2])
"""


def _lease(raw: object, lapsed: object) -> ReplyLease | None:
    if not raw:
        return None
    doc = json.loads(_text(raw))
    return ReplyLease(str(doc["s"]), str(doc["r"]), lapsed=bool(lapsed))


def _reply_state(raw: object) -> ReplyState | None:
    if raw is None:
        return None
    try:
        doc = json.loads(_text(raw))
        return ReplyState(str(doc["room_id"]), ReplyPhase(doc["state"]), str(doc["replica"]))
    except (ValueError, KeyError, TypeError):
        return None


def _reply_state_value(state: ReplyState) -> str:
    return json.dumps(
        {"room_id": state.room_id, "state": state.phase.value, "replica": state.replica}
    )


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _entry_id(raw: object) -> int:
    return int(_text(raw).split("-", 1)[0])


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
        pubsub_connections: int = DEFAULT_PUBSUB_CONNECTIONS,
    ) -> None:
        import redis.asyncio as aioredis

        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._prefix = prefix
        self._maxlen = maxlen
        self._retention_ms = max(1, round(retention_s * 1000))
        self._timeout_s = timeout_s
        self._client = command_client(url, timeout_s=timeout_s)
        # The pub/sub connection waits for pushes indefinitely: no socket timeout.
        self._pubsub_client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            max_connections=pubsub_connections,
            **connection_options(health_check=False),
        )
        self._hub = PubSubHub(self)
        self._tails = Tails(self)
        self._publish = self._client.register_script(_PUBLISH)
        self._outbox: list[tuple[asyncio.Future[int], tuple[Any, ...]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._start_pending = self._client.register_script(_START_PENDING)
        self._claim_reply = self._client.register_script(_CLAIM_REPLY)
        self._renew_reply = self._client.register_script(_RENEW_REPLY)
        self._release_reply = self._client.register_script(_RELEASE_REPLY)
        self._reply_lease = self._client.register_script(_REPLY_LEASE)
        self._keep_ms = _ms(REPLY_LAPSED_KEEP_S)

    def _keys(self, room: str) -> tuple[str, str]:
        return f"{self._prefix}room:{room}:seq", f"{self._prefix}room:{room}:log"

    def _event_channel(self, room: str) -> str:
        return f"{self._prefix}room:{room}:ev"

    def _state_key(self, family: str, name: str) -> str:
        # The layout older replicas used for these values, so replicas of two versions
        # share them during a rolling upgrade.
        return f"{self._prefix}state:{family}:{name}"

    async def publish(self, room: str, kind: str, data: bytes) -> int:
        """Appends through the outbox: the publishes of a moment (every reply of a replica
        streaming at once) go to Redis as one pipeline, one round trip, instead of one
        round trip each. One batch is in flight at a time; the next one gathers meanwhile."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        seq, log = self._keys(room)
        args = (seq, log, self._event_channel(room), self._maxlen, kind, data)
        self._outbox.append((fut, (*args, self._retention_ms, time.time_ns())))
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
                    for _, (seq, log, channel, *args) in batch:
                        pipe.evalsha(self._publish.sha, 3, seq, log, channel, *args)
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
        last = int(raw_last) if raw_last is not None and first else 0
        if after_id == 0:
            return last
        oldest = _entry_id(first[0][0]) if first else last + 1
        if after_id > last or after_id < oldest - 1:
            raise CursorExpired(room, after_id, oldest, last)
        return last

    async def read(
        self, room: str, after_id: int, *, limit: int = 256, block_s: float | None = None
    ) -> list[BusEvent]:
        _check_read(after_id, limit)
        tail: Tail | None = self._tails.get(room)
        if tail is not None and tail.gone(after_id):
            raise CursorExpired(room, after_id, tail.base + 1, tail.cursor)
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
            await wait_woken(tail.waiters, left)
            self._tails.check()
            tail = self._tails.get(room) or tail

    def read_nowait(self, room: str, after_id: int, *, limit: int = 256) -> list[BusEvent] | None:
        # What the replica holds of a followed room; anything else needs Redis.
        tail = self._tails.get(room)
        if tail is None or limit < 1 or self._tails.failed() or not tail.base <= after_id:
            return None
        if after_id >= tail.cursor:
            # Caught up: the room's next event is pushed, and wakes its listeners.
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

    async def _read_now(
        self, room: str, after_id: int, limit: int, *, trimmed_ok: bool = False
    ) -> list[BusEvent]:
        """The log after `after_id`; a trimmed start raises CursorExpired unless `trimmed_ok`
        (the events kept are returned: a tail starts again from them)."""
        log = self._keys(room)[1]
        with redis_errors("the Redis bus"):
            reply = await self._client.xread({log: f"{after_id}-0"}, count=limit)
        if not reply:
            return []
        entries: list[tuple[Any, dict[bytes, bytes]]] = reply[0][1]  # type: ignore[index,assignment]
        events = [_event(eid, fields) for eid, fields in entries]
        if events and events[0].event_id != after_id + 1 and after_id and not trimmed_ok:
            raise CursorExpired(room, after_id, events[0].event_id, events[-1].event_id)
        return events

    async def send_control(self, room: str, data: bytes) -> None:
        with redis_errors("the Redis bus"):
            await self._client.publish(f"{self._prefix}ctl:{room}", data)

    @contextlib.asynccontextmanager
    async def control(self, room: str) -> AsyncIterator[ControlSubscription]:
        # Subscribed only once Redis confirms; a message published before that is lost.
        channel = f"{self._prefix}ctl:{room}"
        sub = _QueueSubscription()
        await self._hub.subscribe(channel, sub)
        try:
            yield sub
        finally:
            self._hub.unsubscribe(channel, sub)

    def _reply_key(self, room: str) -> str:
        return f"{self._prefix}reply:{room}"

    async def claim_reply(
        self, room: str, stream_id: str, replica: str, *, ttl_s: float
    ) -> tuple[bool, ReplyLease | None]:
        with redis_errors("the Redis bus"):
            taken, raw, lapsed = await self._claim_reply(
                keys=[self._reply_key(room)], args=[stream_id, replica, _ms(ttl_s), self._keep_ms]
            )
        return bool(taken), _lease(raw, lapsed)

    async def renew_reply(self, room: str, stream_id: str, *, ttl_s: float) -> bool:
        with redis_errors("the Redis bus"):
            done = await self._renew_reply(
                keys=[self._reply_key(room)], args=[stream_id, "", _ms(ttl_s), self._keep_ms]
            )
        return bool(done)

    async def release_reply(self, room: str, stream_id: str) -> bool:
        with redis_errors("the Redis bus"):
            done = await self._release_reply(keys=[self._reply_key(room)], args=[stream_id, ""])
        return bool(done)

    async def reply_lease(self, room: str) -> ReplyLease | None:
        with redis_errors("the Redis bus"):
            raw, lapsed = await self._reply_lease(keys=[self._reply_key(room)], args=[])
        return _lease(raw, lapsed)

    async def drop_lapsed_reply(self, room: str, stream_id: str) -> bool:
        with redis_errors("the Redis bus"):
            done = await self._release_reply(
                keys=[self._reply_key(room)], args=[stream_id, "lapsed"]
            )
        return bool(done)

    async def set_reply_state(self, stream_id: str, state: ReplyState) -> None:
        with redis_errors("the Redis bus"):
            await self._client.set(
                self._state_key("stream", stream_id),
                _reply_state_value(state),
                px=_ms(REPLY_STATE_TTL_S),
            )

    async def reply_state(self, stream_id: str) -> ReplyState | None:
        with redis_errors("the Redis bus"):
            raw = await self._client.get(self._state_key("stream", stream_id))
        return _reply_state(raw)

    async def mark_pending(self, room: str, stream_id: str, replica: str) -> None:
        state = ReplyState(room, ReplyPhase.PENDING, replica)
        ttl_ms = _ms(REPLY_STATE_TTL_S)
        with redis_errors("the Redis bus"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._state_key("stream", stream_id), _reply_state_value(state), px=ttl_ms)
                pipe.set(self._state_key("pending", room), stream_id, px=ttl_ms)
                await pipe.execute()

    async def start_pending(self, room: str, stream_id: str) -> int | None:
        keys = [self._state_key("pending", room), self._state_key("cancel", stream_id)]
        with redis_errors("the Redis bus"):
            raw = await self._start_pending(keys=keys, args=[stream_id])
        if raw is None:
            return None
        played = _text(raw)
        return int(played) if played.isdigit() else 0

    async def cancel_pending(
        self, room: str, stream_id: str, played_chars: int, *, running: str = ""
    ) -> str:
        candidate = stream_id
        if not candidate:
            with redis_errors("the Redis bus"):
                raw = await self._client.get(self._state_key("pending", room))
            candidate = _text(raw) if raw is not None else ""
        if not candidate or candidate == running:
            return ""
        if not waits_in(await self.reply_state(candidate), room):
            return ""
        with redis_errors("the Redis bus"):
            await self._client.set(
                self._state_key("cancel", candidate),
                str(played_chars),
                px=_ms(REPLY_STATE_TTL_S),
            )
        return candidate

    async def set_room_status(self, room: str, status: str) -> str | None:
        with redis_errors("the Redis bus"):
            old = await self._client.set(
                self._state_key("room-status", room),
                status,
                px=_ms(ROOM_STATUS_TTL_S),
                get=True,
            )
        return _text(old) if old is not None else None

    async def close(self) -> None:
        if self._sender is not None and not self._sender.done():
            await asyncio.wait({self._sender}, timeout=self._timeout_s)
        await self._tails.close()
        await self._hub.close()
        await self._client.aclose()
        await self._pubsub_client.aclose()

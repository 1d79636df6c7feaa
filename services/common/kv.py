"""A small async key-value store for counters, TTL keys and sets: in-process or Redis.

Rate limits, quotas and revocation lists live here. The embedded default keeps them in the
process (one replica); with ARCONV_REDIS_URL every replica shares them. Both implementations
pass one contract suite (tests/common/test_kv.py).

Counters are fixed windows: the TTL is set when a key is created and an increment never
extends it. `incr_within` checks several counters against their limits and increments all of
them, or none, atomically (a Lua script on Redis, a lock in process), so concurrent callers
cannot overshoot a limit and a refused request consumes nothing.

Every key is stored under a prefix, so several services (and tests) share one Redis. Redis
connection failures surface as `Unavailable`; a wrong-type value (a bug) as `Internal`.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from services.common.config import Settings
from services.common.errors import Internal, Unavailable

T = TypeVar("T")

DEFAULT_PREFIX = "arconv:"


@dataclass(frozen=True, slots=True)
class Bound:
    """One counter of an `incr_within` call: add `amount` unless the total would pass `limit`."""

    key: str
    amount: int
    limit: int
    ttl_s: float


@dataclass(frozen=True, slots=True)
class BoundResult:
    """Outcome of `incr_within`.

    `values` are the counters after the increment when `allowed`, and their unchanged current
    values otherwise; `refused` is the index of the first bound that would have been passed.
    """

    allowed: bool
    values: tuple[int, ...]
    refused: int | None = None


class KV(abc.ABC):
    """The key-value interface. Keys are relative to the store's prefix."""

    @abc.abstractmethod
    async def incr(self, key: str, amount: int = 1, *, ttl_s: float) -> int:
        """Adds `amount` to a counter and returns the new value; a new key expires in `ttl_s`."""

    @abc.abstractmethod
    async def incr_within(self, bounds: Sequence[Bound]) -> BoundResult:
        """Increments every counter if none would pass its limit, else none (atomically)."""

    @abc.abstractmethod
    async def get_int(self, key: str) -> int:
        """A counter's value; 0 if it does not exist or has expired."""

    @abc.abstractmethod
    async def get(self, key: str) -> str | None:
        """A string value, or None."""

    @abc.abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The string values of `keys` (None for a missing one), read in one step."""

    @abc.abstractmethod
    async def set(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        """Stores a string value, expiring in `ttl_s` (None: never)."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """True if the key exists and has not expired."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Removes a key; True if it existed."""

    @abc.abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds until the key expires; None if it does not exist or never expires."""

    @abc.abstractmethod
    async def sadd(self, key: str, member: str, *, ttl_s: float) -> bool:
        """Adds to a set (a new set expires in `ttl_s`); True if the member is new."""

    @abc.abstractmethod
    async def sismember(self, key: str, member: str) -> bool:
        """True if `member` is in the set."""

    @abc.abstractmethod
    async def acquire_lease(
        self, key: str, holder: str, *, limit: int, ttl_s: float, replace: Sequence[str] = ()
    ) -> bool:
        """Takes one of `limit` slots of `key` for `holder` until `ttl_s` from now.

        Expired leases free their slots by themselves, so a holder that dies without
        releasing costs a slot for at most `ttl_s`. Re-acquiring a held lease renews it.
        With every slot taken, the first lease of `replace` still held is dropped for
        `holder`'s, in the same atomic step: callers racing to replace the same lease never
        take more than `limit` slots between them.
        """

    @abc.abstractmethod
    async def lease_holders(self, key: str) -> dict[str, float]:
        """The unexpired leases of `key`: each holder and the seconds its lease has left."""

    @abc.abstractmethod
    async def renew_lease(self, key: str, holder: str, *, ttl_s: float) -> None:
        """Extends `holder`'s lease on `key` to `ttl_s` from now (taking it again if it lapsed)."""

    @abc.abstractmethod
    async def release_lease(self, key: str, holder: str) -> None:
        """Frees `holder`'s slot of `key` now."""

    @abc.abstractmethod
    async def lease_count(self, key: str) -> int:
        """How many unexpired leases `key` holds."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raises Unavailable if the store cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Releases connections; the store is unusable afterwards."""


def _check_ttl(ttl_s: float | None) -> None:
    if ttl_s is not None and not ttl_s > 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")


def _check_bounds(bounds: Sequence[Bound]) -> None:
    if not bounds:
        raise ValueError("incr_within needs at least one bound")
    if len({b.key for b in bounds}) != len(bounds):
        raise ValueError("incr_within keys must be distinct")
    for b in bounds:
        _check_ttl(b.ttl_s)
        if b.amount < 0:
            raise ValueError(f"amount must not be negative, got {b.amount}")


# --- in process -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    value: int | str | set[str]
    expires_at: float | None


class InProcessKV(KV):
    """The embedded default: a dict with monotonic-clock expiry, guarded by a lock.

    `clock` is injectable so tests can move time forward instead of sleeping.
    """

    _SWEEP_EVERY = 1024

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def _live(self, key: str, now: float) -> _Entry | None:
        e = self._data.get(key)
        if e is not None and e.expires_at is not None and e.expires_at <= now:
            del self._data[key]
            return None
        return e

    def _wrote(self, now: float) -> None:
        self._writes += 1
        if self._writes % self._SWEEP_EVERY == 0:
            dead = [k for k, e in self._data.items() if e.expires_at and e.expires_at <= now]
            for k in dead:
                del self._data[k]

    def _int(self, key: str, e: _Entry | None) -> int:
        if e is None:
            return 0
        if isinstance(e.value, int):
            return e.value
        if isinstance(e.value, str):
            with contextlib.suppress(ValueError):
                return int(e.value)
        raise Internal(f"kv key {key!r} does not hold an integer")

    def _add(self, key: str, e: _Entry | None, amount: int, ttl_s: float, now: float) -> int:
        if e is None:
            self._data[key] = _Entry(amount, now + ttl_s)
            return amount
        e.value = self._int(key, e) + amount
        if e.expires_at is None:
            e.expires_at = now + ttl_s
        assert isinstance(e.value, int)
        return e.value

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float) -> int:
        _check_ttl(ttl_s)
        with self._lock:
            now = self._clock()
            value = self._add(key, self._live(key, now), amount, ttl_s, now)
            self._wrote(now)
            return value

    async def incr_within(self, bounds: Sequence[Bound]) -> BoundResult:
        _check_bounds(bounds)
        with self._lock:
            now = self._clock()
            entries = [self._live(b.key, now) for b in bounds]
            current = tuple(self._int(b.key, e) for b, e in zip(bounds, entries, strict=True))
            for i, (b, v) in enumerate(zip(bounds, current, strict=True)):
                if v + b.amount > b.limit:
                    return BoundResult(allowed=False, values=current, refused=i)
            values = tuple(
                self._add(b.key, e, b.amount, b.ttl_s, now)
                for b, e in zip(bounds, entries, strict=True)
            )
            self._wrote(now)
            return BoundResult(allowed=True, values=values)

    async def get_int(self, key: str) -> int:
        with self._lock:
            return self._int(key, self._live(key, self._clock()))

    async def get(self, key: str) -> str | None:
        with self._lock:
            e = self._live(key, self._clock())
            if e is None:
                return None
            if isinstance(e.value, set):
                raise Internal(f"kv key {key!r} holds a set, not a string")
            return str(e.value)

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        _check_ttl(ttl_s)
        with self._lock:
            now = self._clock()
            self._data[key] = _Entry(value, None if ttl_s is None else now + ttl_s)
            self._wrote(now)

    async def exists(self, key: str) -> bool:
        with self._lock:
            return self._live(key, self._clock()) is not None

    async def delete(self, key: str) -> bool:
        with self._lock:
            existed = self._live(key, self._clock()) is not None
            self._data.pop(key, None)
            return existed

    async def ttl(self, key: str) -> float | None:
        with self._lock:
            now = self._clock()
            e = self._live(key, now)
            if e is None or e.expires_at is None:
                return None
            return e.expires_at - now

    async def sadd(self, key: str, member: str, *, ttl_s: float) -> bool:
        _check_ttl(ttl_s)
        with self._lock:
            now = self._clock()
            e = self._live(key, now)
            if e is None:
                self._data[key] = _Entry({member}, now + ttl_s)
                self._wrote(now)
                return True
            if not isinstance(e.value, set):
                raise Internal(f"kv key {key!r} does not hold a set")
            new = member not in e.value
            e.value.add(member)
            return new

    async def sismember(self, key: str, member: str) -> bool:
        with self._lock:
            e = self._live(key, self._clock())
            if e is None:
                return False
            if not isinstance(e.value, set):
                raise Internal(f"kv key {key!r} does not hold a set")
            return member in e.value

    def _holders(self, key: str, now: float) -> dict[str, float]:
        holders = self._leases.setdefault(key, {})
        for h in [h for h, until in holders.items() if until <= now]:
            del holders[h]
        return holders

    async def acquire_lease(
        self, key: str, holder: str, *, limit: int, ttl_s: float, replace: Sequence[str] = ()
    ) -> bool:
        _check_ttl(ttl_s)
        with self._lock:
            now = self._clock()
            holders = self._holders(key, now)
            if holder not in holders and len(holders) >= limit:
                gone = next((h for h in replace if h in holders), None)
                if gone is None or limit < 1:
                    return False
                del holders[gone]
            holders[holder] = now + ttl_s
            return True

    async def lease_holders(self, key: str) -> dict[str, float]:
        with self._lock:
            now = self._clock()
            holders = self._holders(key, now)
            if not holders:
                del self._leases[key]
            return {h: until - now for h, until in holders.items()}

    async def renew_lease(self, key: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        with self._lock:
            now = self._clock()
            self._holders(key, now)[holder] = now + ttl_s

    async def release_lease(self, key: str, holder: str) -> None:
        with self._lock:
            holders = self._leases.get(key)
            if holders is not None:
                holders.pop(holder, None)
                if not holders:
                    del self._leases[key]

    async def lease_count(self, key: str) -> int:
        with self._lock:
            holders = self._holders(key, self._clock())
            if not holders:
                del self._leases[key]
            return len(holders)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        with self._lock:
            self._data.clear()


# --- Redis ----------------------------------------------------------------------------------

# KEYS[1]; ARGV: amount, ttl_ms. The TTL is set only when the key has none (it was created).
_INCR = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""

# KEYS: counters; ARGV: amount, limit, ttl_ms for each. Returns {refused index or 0, values...}.
_INCR_WITHIN = """
local cur = {}
for i, k in ipairs(KEYS) do
  local raw = redis.call('GET', k)
  local v = 0
  if raw then
    v = tonumber(raw)
    if v == nil then return redis.error_reply('WRONGTYPE value is not an integer') end
  end
  cur[i] = v
end
for i, k in ipairs(KEYS) do
  if cur[i] + tonumber(ARGV[3 * i - 2]) > tonumber(ARGV[3 * i - 1]) then
    local out = {i}
    for j = 1, #KEYS do out[j + 1] = cur[j] end
    return out
  end
end
local out = {0}
for i, k in ipairs(KEYS) do
  out[i + 1] = redis.call('INCRBY', k, ARGV[3 * i - 2])
  if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, ARGV[3 * i]) end
end
return out
"""

# KEYS[1]; ARGV: member, ttl_ms.
_SADD = """
local n = redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
"""


# Leases: a sorted set of holders scored by expiry (ms, Redis server time); the key itself
# expires with its last lease. KEYS[1]; ARGV: holder, limit (0: no limit), ttl_ms, then the
# holders whose leases may be replaced when every slot is taken.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[2])
if limit > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= limit then
  local replaced = false
  for i = 4, #ARGV do
    if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
      replaced = true
      break
    end
  end
  if not replaced then return 0 end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
local last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
redis.call('PEXPIREAT', KEYS[1], last)
return 1
"""

# KEYS[1]. The number of unexpired leases.
_LEASE_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS[1]. The unexpired leases: {holder, ms left, holder, ms left, ...}.
_LEASE_HOLDERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, h in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')) do
  out[#out + 1] = h
end
for i = 2, #out, 2 do out[i] = tostring(tonumber(out[i]) - now) end
return out
"""


def _ms(ttl_s: float) -> int:
    return max(1, round(ttl_s * 1000))


@contextlib.contextmanager
def redis_errors(what: str = "Redis") -> Iterator[None]:
    """Translates redis-py errors: a failing command (a bug) is Internal, the rest Unavailable."""
    import redis.exceptions as rx

    try:
        yield
    except rx.ResponseError as exc:
        raise Internal(f"{what} refused a command: {exc}") from exc
    except rx.RedisError as exc:
        raise Unavailable(f"{what} is unavailable: {type(exc).__name__}") from exc
    except OSError as exc:
        raise Unavailable(f"{what} is unavailable: {exc.strerror or exc}") from exc


# Connections for short commands; more concurrent commands wait for one (see command_client).
COMMAND_CONNECTIONS = 100


# A pooled connection unused this long is pinged before its next command.
HEALTH_CHECK_INTERVAL_S = 15


def connection_options(*, health_check: bool = True) -> dict[str, Any]:
    """Options for every redis.asyncio client of the mesh: connections the server closed
    (a Redis restart) are replaced when taken from the pool, not failed once each; with
    `health_check`, one idle for HEALTH_CHECK_INTERVAL_S is pinged before its next command
    (not for pub/sub connections, which wait for pushes).

    redis-py 8.1 skips its closed-connection check at checkout when maintenance
    notifications are on, which RESP3 turns on by default ("auto"); they serve planned
    failovers of managed Redis offerings, not a standalone server, so they are off.
    """
    from redis.maint_notifications import MaintNotificationsConfig

    options: dict[str, Any] = {
        "maint_notifications_config": MaintNotificationsConfig(enabled=False)
    }
    if health_check:
        options["health_check_interval"] = HEALTH_CHECK_INTERVAL_S
    return options


def command_client(url: str, *, timeout_s: float, **kwargs: Any) -> Any:
    """A redis.asyncio client for short commands whose pool waits for a free connection.

    redis-py's default pool raises MaxConnectionsError on the 101st concurrent command, so a
    burst of concurrent requests failed with UNAVAILABLE; here they queue for up to
    `timeout_s` (then the pool's ConnectionError becomes `Unavailable` as before).
    """
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=COMMAND_CONNECTIONS,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        **connection_options(),
        **kwargs,
    )
    return aioredis.Redis.from_pool(pool)


async def once_more(call: Callable[[], Awaitable[T]]) -> T:
    """Runs an idempotent command, and once more if its connection dropped under it: a Redis
    restart or failover closes every pooled connection, and the pool replaces the one that
    failed. A timeout or a pool with no free connection is not tried again."""
    import redis.exceptions as rx

    try:
        return await call()
    except rx.ConnectionError as exc:
        if isinstance(exc, rx.TimeoutError) or "No connection available" in str(exc):
            raise
        return await call()


class RedisKV(KV):
    """Redis (redis.asyncio); every key under `prefix`. Idempotent commands are sent once
    more on a dropped connection (`once_more`); counters and scripts are not."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = 5.0) -> None:
        self._prefix = prefix
        self._client = command_client(url, timeout_s=timeout_s, decode_responses=True)
        self._incr = self._client.register_script(_INCR)
        self._incr_within = self._client.register_script(_INCR_WITHIN)
        self._sadd = self._client.register_script(_SADD)
        self._lease = self._client.register_script(_LEASE)
        self._lease_count = self._client.register_script(_LEASE_COUNT)
        self._lease_holders = self._client.register_script(_LEASE_HOLDERS)

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float) -> int:
        _check_ttl(ttl_s)
        with redis_errors():
            return int(await self._incr(keys=[self._k(key)], args=[amount, _ms(ttl_s)]))

    async def incr_within(self, bounds: Sequence[Bound]) -> BoundResult:
        _check_bounds(bounds)
        args: list[int] = []
        for b in bounds:
            args += [b.amount, b.limit, _ms(b.ttl_s)]
        with redis_errors():
            out = await self._incr_within(keys=[self._k(b.key) for b in bounds], args=args)
        refused = int(out[0])
        values = tuple(int(v) for v in out[1:])
        if refused:
            return BoundResult(allowed=False, values=values, refused=refused - 1)
        return BoundResult(allowed=True, values=values)

    async def get_int(self, key: str) -> int:
        with redis_errors():
            raw = await once_more(lambda: self._client.get(self._k(key)))
        if raw is None:
            return 0
        try:
            return int(raw)
        except ValueError:
            raise Internal(f"kv key {key!r} does not hold an integer") from None

    async def get(self, key: str) -> str | None:
        with redis_errors():
            raw = await once_more(lambda: self._client.get(self._k(key)))
        return None if raw is None else str(raw)

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        with redis_errors():
            raw = await once_more(lambda: self._client.mget([self._k(k) for k in keys]))
        return [None if v is None else str(v) for v in raw]

    async def set(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        _check_ttl(ttl_s)
        with redis_errors():
            px = None if ttl_s is None else _ms(ttl_s)
            await once_more(lambda: self._client.set(self._k(key), value, px=px))

    async def exists(self, key: str) -> bool:
        with redis_errors():
            return bool(await once_more(lambda: self._client.exists(self._k(key))))

    async def delete(self, key: str) -> bool:
        with redis_errors():
            return bool(await once_more(lambda: self._client.delete(self._k(key))))

    async def ttl(self, key: str) -> float | None:
        with redis_errors():
            ms = int(await once_more(lambda: self._client.pttl(self._k(key))))
        return None if ms < 0 else ms / 1000

    async def sadd(self, key: str, member: str, *, ttl_s: float) -> bool:
        _check_ttl(ttl_s)
        with redis_errors():
            return bool(await self._sadd(keys=[self._k(key)], args=[member, _ms(ttl_s)]))

    async def sismember(self, key: str, member: str) -> bool:
        with redis_errors():
            return bool(await once_more(lambda: self._client.sismember(self._k(key), member)))

    async def acquire_lease(
        self, key: str, holder: str, *, limit: int, ttl_s: float, replace: Sequence[str] = ()
    ) -> bool:
        _check_ttl(ttl_s)
        if limit < 1:
            return False
        with redis_errors():
            got = await self._lease(keys=[self._k(key)], args=[holder, limit, _ms(ttl_s), *replace])
        return bool(int(got))

    async def lease_holders(self, key: str) -> dict[str, float]:
        with redis_errors():
            out = await self._lease_holders(keys=[self._k(key)])
        return {str(out[i]): float(out[i + 1]) / 1000 for i in range(0, len(out), 2)}

    async def renew_lease(self, key: str, holder: str, *, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        with redis_errors():
            await self._lease(keys=[self._k(key)], args=[holder, 0, _ms(ttl_s)])

    async def release_lease(self, key: str, holder: str) -> None:
        with redis_errors():
            await self._client.zrem(self._k(key), holder)

    async def lease_count(self, key: str) -> int:
        with redis_errors():
            return int(await self._lease_count(keys=[self._k(key)]))

    async def ping(self) -> None:
        with redis_errors():
            await once_more(self._client.ping)

    async def close(self) -> None:
        await self._client.aclose()


def open_kv(settings: Settings, *, prefix: str = DEFAULT_PREFIX) -> KV:
    """Redis when ARCONV_REDIS_URL is set, else the in-process store. Close it when done."""
    if settings.redis_url:
        return RedisKV(settings.redis_url, prefix=prefix, timeout_s=settings.call_timeout_s)
    return InProcessKV()

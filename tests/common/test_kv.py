"""One contract suite for both key-value back ends: in-process and the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.errors import Internal, Unavailable
from services.common.kv import KV, Bound, InProcessKV, RedisKV, open_kv
from services.ports import free_port
from tests.conftest import FakeClock, make_settings


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KV]:
    if request.param == "memory":
        store: KV = InProcessKV()
    else:
        prefix = request.getfixturevalue("redis_prefix")
        store = RedisKV(request.getfixturevalue("redis_base_url"), prefix=prefix)
    yield store
    await store.close()


async def test_incr_creates_counts_and_sets_ttl_once(kv: KV) -> None:
    assert await kv.get_int("c") == 0
    assert await kv.incr("c", ttl_s=60) == 1
    assert await kv.incr("c", 5, ttl_s=3600) == 6
    assert await kv.get_int("c") == 6
    left = await kv.ttl("c")
    # The window was fixed when the key was created: the second TTL did not extend it.
    assert left is not None and 0 < left <= 60


async def test_missing_keys(kv: KV) -> None:
    assert await kv.get("nope") is None
    assert await kv.get_int("nope") == 0
    assert not await kv.exists("nope")
    assert await kv.ttl("nope") is None
    assert not await kv.delete("nope")
    assert not await kv.sismember("nope", "x")


async def test_set_get_exists_delete(kv: KV) -> None:
    await kv.set("s", "hello", ttl_s=30)
    assert await kv.get("s") == "hello"
    assert await kv.exists("s")
    left = await kv.ttl("s")
    assert left is not None and 0 < left <= 30
    await kv.set("p", "forever")
    assert await kv.ttl("p") is None and await kv.exists("p")
    assert await kv.delete("s")
    assert not await kv.exists("s")


async def test_get_many_reads_present_and_missing_keys(kv: KV) -> None:
    await kv.set("a", "1")
    await kv.set("c", "three", ttl_s=60)
    assert await kv.get_many(["a", "b", "c"]) == ["1", None, "three"]


async def test_set_of_an_integer_reads_as_int(kv: KV) -> None:
    await kv.set("n", "41", ttl_s=30)
    assert await kv.incr("n", ttl_s=30) == 42
    assert await kv.get_int("n") == 42


async def test_non_integer_counter_is_internal_and_unchanged(kv: KV) -> None:
    await kv.set("word", "abc", ttl_s=30)
    with pytest.raises(Internal):
        await kv.incr("word", ttl_s=30)
    with pytest.raises(Internal):
        await kv.get_int("word")
    with pytest.raises(Internal):
        await kv.incr_within([Bound("word", 1, 10, 30)])
    assert await kv.get("word") == "abc"


async def test_sets(kv: KV) -> None:
    assert await kv.sadd("set", "a", ttl_s=30)
    assert not await kv.sadd("set", "a", ttl_s=30)
    assert await kv.sadd("set", "b", ttl_s=30)
    assert await kv.sismember("set", "a") and await kv.sismember("set", "b")
    assert not await kv.sismember("set", "c")
    left = await kv.ttl("set")
    assert left is not None and 0 < left <= 30


async def test_incr_within_all_or_nothing(kv: KV) -> None:
    bounds = [Bound("rate", 1, 3, 60), Bound("quota", 40, 100, 60)]
    r1 = await kv.incr_within(bounds)
    assert r1.allowed and r1.values == (1, 40) and r1.refused is None
    r2 = await kv.incr_within(bounds)
    assert r2.allowed and r2.values == (2, 80)
    # The quota would pass 100: nothing is consumed, not even the rate counter.
    r3 = await kv.incr_within(bounds)
    assert not r3.allowed and r3.refused == 1 and r3.values == (2, 80)
    assert await kv.get_int("rate") == 2 and await kv.get_int("quota") == 80
    # Exactly at the limit is allowed.
    r4 = await kv.incr_within([Bound("rate", 1, 3, 60), Bound("quota", 20, 100, 60)])
    assert r4.allowed and r4.values == (3, 100)
    r5 = await kv.incr_within([Bound("rate", 1, 3, 60), Bound("quota", 0, 100, 60)])
    assert not r5.allowed and r5.refused == 0 and r5.values == (3, 100)
    left = await kv.ttl("quota")
    assert left is not None and 0 < left <= 60


async def test_incr_within_rejects_bad_calls(kv: KV) -> None:
    with pytest.raises(ValueError):
        await kv.incr_within([])
    with pytest.raises(ValueError):
        await kv.incr_within([Bound("a", 1, 1, 10), Bound("a", 1, 1, 10)])
    with pytest.raises(ValueError):
        await kv.incr_within([Bound("a", -1, 1, 10)])
    with pytest.raises(ValueError):
        await kv.incr("a", ttl_s=0)


async def test_concurrent_incr_within_never_overshoots(kv: KV) -> None:
    bounds = [Bound("r", 1, 1000, 60), Bound("q", 7, 100, 60)]
    results = await asyncio.gather(*(kv.incr_within(bounds) for _ in range(60)))
    assert sum(r.allowed for r in results) == 14  # 14 * 7 = 98 <= 100 < 105
    assert await kv.get_int("q") == 98
    assert await kv.get_int("r") == 14


async def test_concurrent_incr_counts_every_call(kv: KV) -> None:
    values = await asyncio.gather(*(kv.incr("n", ttl_s=60) for _ in range(50)))
    assert sorted(values) == list(range(1, 51))


async def test_in_process_expiry_follows_the_monotonic_clock() -> None:
    clock = FakeClock()
    kv = InProcessKV(clock=clock)
    await kv.incr("c", ttl_s=10)
    await kv.set("s", "v", ttl_s=5)
    await kv.sadd("set", "m", ttl_s=5)
    clock.now += 4.9
    assert await kv.get_int("c") == 1 and await kv.exists("s") and await kv.sismember("set", "m")
    assert await kv.ttl("c") == pytest.approx(5.1)
    clock.now += 0.1
    assert not await kv.exists("s") and not await kv.sismember("set", "m")
    clock.now += 5
    assert await kv.get_int("c") == 0
    # A new window starts from scratch.
    assert await kv.incr("c", ttl_s=10) == 1
    r = await kv.incr_within([Bound("c", 1, 1, 10)])
    assert not r.allowed
    clock.now += 10
    assert (await kv.incr_within([Bound("c", 1, 1, 10)])).allowed


async def test_in_process_sweeps_expired_keys() -> None:
    clock = FakeClock()
    kv = InProcessKV(clock=clock)
    for i in range(100):
        await kv.set(f"k{i}", "v", ttl_s=1)
    clock.now += 2
    for _ in range(InProcessKV._SWEEP_EVERY):
        await kv.incr("live", ttl_s=100)
    assert not any(k.startswith("k") for k in kv._data)


@pytest.mark.redis
async def test_redis_keys_live_under_the_prefix(redis_base_url: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    a = RedisKV(redis_base_url, prefix=redis_prefix + "a:")
    b = RedisKV(redis_base_url, prefix=redis_prefix + "b:")
    try:
        await a.incr("shared", ttl_s=60)
        assert await b.get_int("shared") == 0
        raw = aioredis.Redis.from_url(redis_base_url, decode_responses=True)
        assert await raw.get(redis_prefix + "a:shared") == "1"
        await raw.aclose()
    finally:
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_redis_counter_without_ttl_gets_one(redis_base_url: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(redis_base_url, decode_responses=True)
    await raw.set(redis_prefix + "old", "3")
    await raw.aclose()
    kv = RedisKV(redis_base_url, prefix=redis_prefix)
    try:
        assert await kv.incr("old", ttl_s=30) == 4
        left = await kv.ttl("old")
        assert left is not None and 0 < left <= 30
    finally:
        await kv.close()


async def test_unreachable_redis_is_unavailable() -> None:
    kv = RedisKV(f"redis://127.0.0.1:{free_port()}/0", timeout_s=2)
    try:
        for call in (
            kv.ping(),
            kv.incr("c", ttl_s=10),
            kv.incr_within([Bound("c", 1, 10, 10)]),
            kv.exists("c"),
            kv.set("c", "v", ttl_s=1),
        ):
            with pytest.raises(Unavailable):
                await call
    finally:
        await kv.close()


async def test_open_kv_chooses_by_settings(tmp_path: Path, redis_base_url: str) -> None:
    memory = open_kv(make_settings(tmp_path))
    assert isinstance(memory, InProcessKV)
    await memory.close()
    redis_kv = open_kv(make_settings(tmp_path, redis_url=redis_base_url), prefix="arconv-test:x:")
    assert isinstance(redis_kv, RedisKV)
    await redis_kv.ping()
    await redis_kv.close()


async def test_leases_bound_holders_and_free_on_release(kv: KV) -> None:
    assert await kv.acquire_lease("l", "a", limit=2, ttl_s=60)
    assert await kv.acquire_lease("l", "b", limit=2, ttl_s=60)
    assert not await kv.acquire_lease("l", "c", limit=2, ttl_s=60)
    # A holder re-acquiring its own lease renews it and takes no new slot.
    assert await kv.acquire_lease("l", "a", limit=2, ttl_s=60)
    assert await kv.lease_count("l") == 2
    await kv.release_lease("l", "a")
    await kv.release_lease("l", "a")  # releasing twice is harmless
    assert await kv.lease_count("l") == 1
    assert await kv.acquire_lease("l", "c", limit=2, ttl_s=60)
    assert not await kv.acquire_lease("other", "x", limit=0, ttl_s=60)


async def test_concurrent_acquires_never_overshoot(kv: KV) -> None:
    got = await asyncio.gather(
        *(kv.acquire_lease("l", f"h{i}", limit=5, ttl_s=60) for i in range(40))
    )
    assert sum(got) == 5
    assert await kv.lease_count("l") == 5


async def test_a_full_lease_set_replaces_only_a_named_holder(kv: KV) -> None:
    assert await kv.acquire_lease("l", "a", limit=2, ttl_s=60)
    assert await kv.acquire_lease("l", "b", limit=2, ttl_s=60)
    # Holders not in the set are skipped; the first one held is replaced.
    assert await kv.acquire_lease("l", "c", limit=2, ttl_s=60, replace=["gone", "b", "a"])
    assert set(await kv.lease_holders("l")) == {"a", "c"}
    assert not await kv.acquire_lease("l", "d", limit=2, ttl_s=60, replace=["b", "x"])
    # With a slot free nothing is replaced.
    await kv.release_lease("l", "a")
    assert await kv.acquire_lease("l", "d", limit=2, ttl_s=60, replace=["c"])
    holders = await kv.lease_holders("l")
    assert set(holders) == {"c", "d"}
    assert all(50 < left <= 60 for left in holders.values())
    assert await kv.lease_holders("nothing") == {}


async def test_racing_replacements_of_one_holder_never_overshoot(kv: KV) -> None:
    assert await kv.acquire_lease("l", "dead", limit=2, ttl_s=60)
    assert await kv.acquire_lease("l", "live", limit=2, ttl_s=60)
    got = await asyncio.gather(
        *(kv.acquire_lease("l", f"h{i}", limit=2, ttl_s=60, replace=["dead"]) for i in range(20))
    )
    assert sum(got) == 1
    assert await kv.lease_count("l") == 2
    assert "live" in await kv.lease_holders("l")


async def test_expired_leases_free_their_slots() -> None:
    clock = FakeClock()
    kv = InProcessKV(clock=clock)
    assert await kv.acquire_lease("l", "dead", limit=1, ttl_s=30)
    clock.now += 20
    await kv.renew_lease("l", "dead", ttl_s=30)  # renewed: still holds the slot at +40
    clock.now += 20
    assert not await kv.acquire_lease("l", "new", limit=1, ttl_s=30)
    clock.now += 11  # the holder stopped renewing 31 s ago
    assert await kv.lease_count("l") == 0
    assert await kv.acquire_lease("l", "new", limit=1, ttl_s=30)


@pytest.mark.redis
async def test_expired_leases_free_their_slots_on_redis(redis_base_url, redis_prefix) -> None:
    kv = RedisKV(redis_base_url, prefix=redis_prefix)
    try:
        assert await kv.acquire_lease("l", "dead", limit=1, ttl_s=0.2)
        assert not await kv.acquire_lease("l", "new", limit=1, ttl_s=60)
        # Expiry runs on Redis's clock: let it pass.
        await asyncio.sleep(0.3)
        assert await kv.lease_count("l") == 0
        assert await kv.acquire_lease("l", "new", limit=1, ttl_s=60)
        left = await kv.ttl("l")
        assert left is not None and 50 < left <= 60  # the key lives as long as its last lease
        await kv.renew_lease("l", "lapsed", ttl_s=0.1)  # renewing a lapsed lease takes it again
        assert await kv.lease_count("l") == 2
    finally:
        await kv.close()

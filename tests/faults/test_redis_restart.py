"""A Redis server the test owns restarts under a service's pooled connections: no call fails
for it (each connection the server closed is replaced when taken from the pool, idempotent
commands are sent once more if one drops under them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from services.common.kv import RedisKV
from tests.faults import own_redis as own_redis_fixtures
from tests.faults.own_redis import OwnRedis
from tests.token import conftest as token_fixtures

own_redis = own_redis_fixtures.own_redis
mesh_factory = token_fixtures.mesh_factory
kv_backend = token_fixtures.kv_backend

BURST = 40


async def _burst(calls: list[Any]) -> list[str]:
    """The failures of calls made at once (their status codes and details)."""
    out = await asyncio.gather(*calls, return_exceptions=True)
    return [
        f"{r.code().name}: {r.details()}" if isinstance(r, grpc.aio.AioRpcError) else repr(r)
        for r in out
        if isinstance(r, BaseException)
    ]


@pytest.mark.parametrize("consume", [False, True], ids=["read", "count"])
async def test_verifications_survive_a_redis_restart(
    mesh_factory: Callable[..., Any], own_redis: OwnRedis, consume: bool
) -> None:
    mesh = await mesh_factory()
    srv = await mesh.start_token(own_kv=True, redis_url=own_redis.url, token_kv_prefix="rr:")
    issued = await mesh.issue("alice", await mesh.room("alice"))

    def verify() -> Any:
        return mesh.verify(issued.token, n=1, consume=consume, port=srv.port)

    # Fill the pool: many connections in use at once.
    assert await _burst([verify() for _ in range(BURST)]) == []
    for _ in range(2):
        await own_redis.restart()
        assert await _burst([verify() for _ in range(BURST)]) == []
    assert (await verify()).allowed


async def test_the_key_value_store_survives_a_redis_restart(own_redis: OwnRedis) -> None:
    kv = RedisKV(own_redis.url, prefix="rr:")
    try:
        await asyncio.gather(*(kv.set(f"k{i}", "v") for i in range(BURST)))
        await own_redis.restart()
        got = await asyncio.gather(*(kv.get(f"k{i}") for i in range(BURST)))
        assert got == [None] * BURST  # the data went with the server; no call failed
        await own_redis.restart()
        counts = await asyncio.gather(*(kv.incr("n", ttl_s=60) for _ in range(BURST)))
        assert sorted(counts) == list(range(1, BURST + 1))
    finally:
        await kv.close()


@pytest.mark.parametrize("health_check", [True, False], ids=["commands", "pubsub"])
async def test_every_client_of_the_mesh_replaces_closed_connections(
    own_redis: OwnRedis, health_check: bool
) -> None:
    """The options the key-value store, the bus's commands and its pub/sub pool are built
    with: a connection the restarted server closed is not handed out again."""
    import redis.asyncio as aioredis

    from services.common.kv import connection_options

    client = aioredis.Redis.from_url(own_redis.url, **connection_options(health_check=health_check))
    try:
        await asyncio.gather(*(client.ping() for _ in range(5)))
        await own_redis.restart()
        assert all(await asyncio.gather(*(client.ping() for _ in range(5))))
    finally:
        await client.aclose()

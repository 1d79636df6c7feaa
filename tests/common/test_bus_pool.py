"""The Redis bus holds one connection per blocked reader: more than redis-py's default pool."""

from __future__ import annotations

import asyncio

from services.common.bus import RedisBus


async def test_more_blocked_readers_than_the_default_pool(
    redis_base_url: str, redis_prefix: str
) -> None:
    bus = RedisBus(redis_base_url, prefix=redis_prefix)
    rooms = [f"room-{i}" for i in range(150)]
    try:
        readers = [asyncio.create_task(bus.read(r, 0, block_s=10)) for r in rooms]
        await asyncio.sleep(0)  # every reader starts its blocking read
        for r in rooms:
            await bus.publish(r, "chunk", r.encode())
        got = await asyncio.gather(*readers)
        assert [[e.data for e in batch] for batch in got] == [[r.encode()] for r in rooms]
    finally:
        await bus.close()


async def test_a_burst_of_commands_waits_for_connections_instead_of_failing(
    redis_base_url: str, redis_prefix: str
) -> None:
    bus = RedisBus(redis_base_url, prefix=redis_prefix)
    try:
        ids = await asyncio.gather(*(bus.publish("room", "chunk", b"x") for _ in range(300)))
        assert sorted(ids) == list(range(1, 301))
    finally:
        await bus.close()

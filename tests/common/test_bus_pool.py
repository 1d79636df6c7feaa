"""The Redis bus under many readers: blocked reads of all rooms are woken through one pub/sub
connection, and bursts of commands wait for a connection instead of failing."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services.common import redis_follow as bus_module
from services.common.bus import CursorExpired
from services.common.errors import Unavailable
from services.common.redis_bus import RedisBus


def _pubsub_connections(bus: RedisBus) -> int:
    pool = bus._pubsub_client.connection_pool
    return len(pool._in_use_connections) + len(pool._available_connections)


async def test_blocked_readers_of_many_rooms_share_one_connection(
    redis_base_url: str, redis_prefix: str
) -> None:
    bus = RedisBus(redis_base_url, prefix=redis_prefix)
    rooms = [f"room-{i}" for i in range(150)]
    try:
        readers = [asyncio.create_task(bus.read(r, 0, block_s=10)) for r in rooms]
        await asyncio.sleep(0.2)  # every reader starts its blocking read
        for r in rooms:
            await bus.publish(r, "chunk", r.encode())
        got = await asyncio.gather(*readers)
        assert [[e.data for e in batch] for batch in got] == [[r.encode()] for r in rooms]
        assert _pubsub_connections(bus) == 1
        # Further events reach readers that follow on from their cursor.
        firsts = [batch[0].event_id for batch in got]
        again = [
            asyncio.create_task(bus.read(r, f, block_s=10))
            for r, f in zip(rooms, firsts, strict=True)
        ]
        await asyncio.sleep(0.05)
        for r in rooms[::-1]:
            await bus.publish(r, "chunk", b"second " + r.encode())
        got = await asyncio.gather(*again)
        assert [[(e.event_id, e.data) for e in b] for b in got] == [
            [(f + 1, b"second " + r.encode())] for r, f in zip(rooms, firsts, strict=True)
        ]
        assert all(e.time_ns > 0 for b in got for e in b)
    finally:
        await bus.close()


async def test_a_reader_behind_what_the_replica_keeps_still_reads_in_order(
    redis_base_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_module, "TAIL_EVENTS", 4)
    bus = RedisBus(redis_base_url, prefix=redis_prefix, maxlen=1000)
    try:
        follower = asyncio.create_task(bus.read("r", 0, block_s=10))
        await asyncio.sleep(0.05)
        ids = [await bus.publish("r", "chunk", str(i + 1).encode()) for i in range(20)]
        await follower
        seen: list[int] = []
        cursor = ids[0] - 1
        while cursor < ids[-1]:
            batch = await bus.read("r", cursor, limit=3, block_s=5)
            assert batch, "a blocking read with events after the cursor returned nothing"
            seen += [int(e.data) for e in batch]
            cursor = batch[-1].event_id
        assert seen == list(range(1, 21))
    finally:
        await bus.close()


async def test_trimmed_events_expire_a_followed_cursor(
    redis_base_url: str, redis_prefix: str
) -> None:
    bus = RedisBus(redis_base_url, prefix=redis_prefix, maxlen=5)
    try:
        follower = asyncio.create_task(bus.read("r", 0, block_s=10))
        await asyncio.sleep(0.05)
        ids = [await bus.publish("r", "chunk", b"x") for _ in range(300)]
        first = ids[0]
        await follower
        with pytest.raises(CursorExpired):
            await bus.read("r", first, block_s=1)
    finally:
        await bus.close()


async def test_an_idle_room_is_no_longer_followed(
    redis_base_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_module, "TAIL_IDLE_S", 0.0)
    monkeypatch.setattr(bus_module, "TAIL_CHECK_S", 0.05)
    bus = RedisBus(redis_base_url, prefix=redis_prefix)
    try:
        assert await bus.read("r", 0, block_s=0.1) == []
        assert bus._tails.get("r") is not None
        for _ in range(50):
            if bus._tails.get("r") is None:
                break
            await asyncio.sleep(0.05)
        assert bus._tails.get("r") is None
        # Following again starts from the reader's cursor.
        reader = asyncio.create_task(bus.read("r", 0, block_s=5))
        await asyncio.sleep(0.05)
        await bus.publish("r", "chunk", b"late")
        assert [e.data for e in await reader] == [b"late"]
    finally:
        await bus.close()


async def test_a_burst_of_commands_waits_for_connections_instead_of_failing(
    redis_base_url: str, redis_prefix: str
) -> None:
    bus = RedisBus(redis_base_url, prefix=redis_prefix)
    try:
        ids = await asyncio.gather(*(bus.publish("room", "chunk", b"x") for _ in range(300)))
        assert sorted(ids) == list(range(min(ids), min(ids) + 300))
    finally:
        await bus.close()


async def test_blocked_readers_hear_when_the_follow_loop_cannot_read(
    redis_base_url: str, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    from services.common.errors import Unavailable

    bus = RedisBus(redis_base_url, prefix=redis_prefix, timeout_s=0.5)
    healthy = bus._pubsub_client
    bus._pubsub_client = aioredis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.5
    )
    try:
        with pytest.raises(Unavailable):
            await bus.read("r", 0, block_s=5)
    finally:
        await bus.close()
        await healthy.aclose()


async def test_control_subscriptions_of_many_rooms_share_one_connection(
    redis_base_url: str, redis_prefix: str
) -> None:
    listener, sender = (RedisBus(redis_base_url, prefix=redis_prefix) for _ in range(2))
    rooms = [f"room-{i}" for i in range(60)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            subs = [await stack.enter_async_context(listener.control(r)) for r in rooms]
            # A second subscriber of the same room shares the channel.
            twin = await stack.enter_async_context(listener.control(rooms[0]))
            assert _pubsub_connections(listener) == 1
            for r in rooms:
                await sender.send_control(r, r.encode())
            got = [await asyncio.wait_for(s.get(), 5) for s in subs]
            assert got == [r.encode() for r in rooms]
            assert await asyncio.wait_for(twin.get(), 5) == rooms[0].encode()
    finally:
        await listener.close()
        await sender.close()


async def test_control_subscriptions_opened_all_at_once_are_all_confirmed(
    redis_base_url: str, redis_prefix: str
) -> None:
    # Replies of many rooms starting together on a replica that has no subscription yet.
    listener = RedisBus(redis_base_url, prefix=redis_prefix, timeout_s=3)
    sender = RedisBus(redis_base_url, prefix=redis_prefix)
    rooms = [f"room-{i}" for i in range(100)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            subs = await asyncio.gather(
                *(stack.enter_async_context(listener.control(r)) for r in rooms)
            )
            assert _pubsub_connections(listener) == 1
            for r in rooms:
                await sender.send_control(r, r.encode())
            got = [await asyncio.wait_for(s.get(), 5) for s in subs]
            assert got == [r.encode() for r in rooms]
    finally:
        await listener.close()
        await sender.close()


async def _unsubscribed(bus: RedisBus) -> None:
    """Returns once no channel is subscribed and Redis has confirmed the last unsubscribe."""
    for _ in range(500):
        if not bus._hub._subs and not bus._hub._waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the idle channel was never unsubscribed")


async def test_a_room_resubscribed_after_its_channel_was_dropped_still_hears(
    redis_base_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_module, "CONTROL_IDLE_S", 0.1)
    listener, sender = (RedisBus(redis_base_url, prefix=redis_prefix) for _ in range(2))
    try:
        for round_ in range(3):
            async with listener.control("r") as sub:
                await sender.send_control("r", f"m{round_}".encode())
                assert await asyncio.wait_for(sub.get(), 5) == f"m{round_}".encode()
            await _unsubscribed(listener)  # the idle channel is dropped
            assert not listener._hub._subs
    finally:
        await listener.close()
        await sender.close()


async def test_publishes_of_a_moment_go_as_one_batch_and_survive_a_script_flush(
    redis_base_url: str, redis_prefix: str
) -> None:
    bus = RedisBus(redis_base_url, prefix=redis_prefix)
    try:
        batches: list[int] = []
        append = bus._append

        async def counting(batch: list) -> list:  # type: ignore[type-arg]
            batches.append(len(batch))
            return await append(batch)

        bus._append = counting  # type: ignore[method-assign]
        rooms = [f"room-{i % 7}" for i in range(70)]
        ids = await asyncio.gather(*(bus.publish(r, "chunk", r.encode()) for r in rooms))
        firsts = [
            min(n for n, r in zip(ids, rooms, strict=True) if r == room) for room in rooms[:7]
        ]
        for room, first in zip(rooms, firsts, strict=False):
            mine = sorted(n for n, r in zip(ids, rooms, strict=True) if r == room)
            assert mine == list(range(first, first + 10))
        assert len(batches) < 10, batches
        await bus._client.script_flush()  # as after a Redis restart
        assert await bus.publish("room-0", "chunk", b"after flush") == firsts[0] + 10
        events = await bus.read("room-0", 0)
        assert [e.event_id for e in events] == list(range(firsts[0], firsts[0] + 11))
        assert events[-1].data == b"after flush"
    finally:
        await bus.close()


async def test_followers_hear_again_after_the_pubsub_connection_is_lost(
    redis_base_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_module, "RECOVER_S", 0.05)
    follower, writer = (
        RedisBus(redis_base_url, prefix=redis_prefix),
        RedisBus(redis_base_url, prefix=redis_prefix),
    )
    woken = asyncio.Event()
    try:
        stop = await follower.listen("r", 0, woken.set)
        first = await writer.publish("r", "chunk", b"before")
        await asyncio.wait_for(woken.wait(), 5)
        # The connection drops: whatever is published meanwhile is not pushed to this replica.
        await follower._hub._pubsub.connection.disconnect()
        for i in range(3):
            await writer.publish("r", "chunk", f"during {i}".encode())
        got: list[bytes] = []
        cursor = 0
        while len(got) < 4:
            try:
                batch = await follower.read("r", cursor, block_s=5)
            except Unavailable:
                await asyncio.sleep(0.05)  # heard that it cannot hear; asks again
                continue
            got += [e.data for e in batch]
            cursor = batch[-1].event_id if batch else cursor
        assert got == [b"before", b"during 0", b"during 1", b"during 2"]
        # Followed again: new events are pushed as before.
        woken.clear()
        await writer.publish("r", "chunk", b"after")
        await asyncio.wait_for(woken.wait(), 5)
        assert [e.data for e in follower.read_nowait("r", first + 3) or []] == [b"after"]
        stop()
    finally:
        await follower.close()
        await writer.close()


async def test_an_event_that_was_never_pushed_still_reaches_followers(
    redis_base_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_module, "TAIL_CHECK_S", 0.05)
    bus = RedisBus(redis_base_url, prefix=redis_prefix)
    try:
        first = await bus.publish("r", "chunk", b"pushed")
        reader = asyncio.create_task(bus.read("r", first, block_s=5))
        await asyncio.sleep(0.1)  # following the room
        # Appended the way a publisher without the push would: counter and stream only.
        seq, log = bus._keys("r")
        n = await bus._client.incr(seq)
        await bus._client.xadd(log, {"k": "chunk", "d": b"silent", "t": "0"}, id=f"{n}-0")
        assert [e.data for e in await reader] == [b"silent"]
    finally:
        await bus.close()

"""A session's pump runs only while there is something to read, and loses nothing for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.stream.v1 import stream_service_pb2 as pb

from services.common.bus import Bus, InProcessBus
from services.common.errors import DomainError
from services.common.redis_bus import RedisBus
from services.stream import events
from services.stream import session as session_module
from services.stream.ports import RoomStatus
from services.stream.session import AbortFn, Session
from services.stream.state import CoreConfig


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        b: Bus = InProcessBus()
    else:
        b = RedisBus(
            request.getfixturevalue("redis_base_url"),
            prefix=request.getfixturevalue("redis_prefix"),
        )
    yield b
    await b.close()


async def _abort(err: DomainError) -> None:
    raise AssertionError(f"unexpected abort: {err}")


def _session(bus: Bus, *, config: CoreConfig | None = None, on_abort: AbortFn = _abort) -> Session:
    return Session(
        bus=bus,
        room_id="r",
        user_id="u",
        after_id=0,
        held=False,
        config=config or CoreConfig(),
        on_abort=on_abort,
    )


async def _next(it: AsyncIterator[bytes]) -> pb.ConverseResponse:
    return pb.ConverseResponse.FromString(await asyncio.wait_for(anext(it), 5))


async def test_an_idle_session_holds_no_pump_and_still_delivers(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "PUMP_IDLE_S", 0.05)
    await bus.publish(
        "r", events.CHUNK, events.chunk("s", 0, "before", "before", ()).SerializeToString()
    )
    s = _session(bus)
    await s.start()
    out = s.events()
    try:
        first = await _next(out)
        assert (first.event_id, first.stream_chunk.text) == (1, "before")
        for _ in range(100):
            if s._pump is None or s._pump.done():
                break
            await asyncio.sleep(0.02)
        assert s._pump is not None and s._pump.done(), "the idle pump did not end"
        for i in range(3):
            chunk = events.chunk("s", i + 1, f"after {i}", f"after {i}", ())
            await bus.publish("r", events.CHUNK, chunk.SerializeToString())
        got = [await _next(out) for _ in range(3)]
        assert [(e.event_id, e.stream_chunk.text) for e in got] == [
            (2, "after 0"),
            (3, "after 1"),
            (4, "after 2"),
        ]
    finally:
        await s.close()


async def test_a_paused_room_holds_events_until_it_is_active_again(bus: Bus) -> None:
    s = _session(bus)
    await s.start()
    out = s.events()
    try:
        await bus.publish(
            "r", events.STATE, events.room_state(RoomStatus.PAUSED).SerializeToString()
        )
        assert (await _next(out)).room_state.status == rooms_pb.ROOM_STATUS_PAUSED
        held = events.chunk("s", 0, "held", "held", ()).SerializeToString()
        await bus.publish("r", events.CHUNK, held)
        waiting = asyncio.ensure_future(_next(out))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "an event was delivered while the room was paused"
        await bus.publish(
            "r", events.STATE, events.room_state(RoomStatus.ACTIVE).SerializeToString()
        )
        released = await waiting
        assert (released.event_id, released.stream_chunk.text) == (2, "held")
        active = await _next(out)
        assert (active.event_id, active.room_state.status) == (3, rooms_pb.ROOM_STATUS_ACTIVE)
    finally:
        await s.close()


async def test_a_woken_session_takes_new_events_without_a_task_switch() -> None:
    bus = InProcessBus()
    s = _session(bus)
    await s.start()
    out = s.events()
    try:
        await asyncio.sleep(0)  # the first pump finds nothing and parks
        for i in range(3):
            chunk = events.chunk("s", i, f"c{i}", f"c{i}", ())
            await bus.publish("r", events.CHUNK, chunk.SerializeToString())
        # Queued within the publishes themselves, in order, by the listener.
        assert s._queue.qsize() == 3
        paused = events.room_state(RoomStatus.PAUSED).SerializeToString()
        await bus.publish("r", events.STATE, paused)
        held = events.chunk("s", 3, "held", "held", ()).SerializeToString()
        await bus.publish("r", events.CHUNK, held)
        assert s._queue.qsize() == 4  # the PAUSED event, then nothing while held
        got = [await _next(out) for _ in range(4)]
        assert [e.event_id for e in got] == [1, 2, 3, 4]
        assert got[3].room_state.status == rooms_pb.ROOM_STATUS_PAUSED
        active = events.room_state(RoomStatus.ACTIVE).SerializeToString()
        await bus.publish("r", events.STATE, active)
        released = await _next(out)
        assert (released.event_id, released.stream_chunk.text) == (5, "held")
        assert (await _next(out)).room_state.status == rooms_pb.ROOM_STATUS_ACTIVE
    finally:
        await s.close()


async def test_a_full_queue_still_cuts_the_reader_off_when_woken() -> None:
    bus = InProcessBus()
    aborted: list[DomainError] = []

    async def abort(err: DomainError) -> None:
        aborted.append(err)

    s = _session(bus, config=CoreConfig(subscriber_queue=4), on_abort=abort)
    await s.start()
    try:
        await asyncio.sleep(0)
        for i in range(6):  # nobody reads
            chunk = events.chunk("s", i, f"c{i}", f"c{i}", ())
            await bus.publish("r", events.CHUNK, chunk.SerializeToString())
        for _ in range(100):
            if aborted:
                break
            await asyncio.sleep(0.01)
        assert [e.reason for e in aborted] == ["SLOW_READER"]
        assert s._queue.qsize() <= 4
    finally:
        await s.close()

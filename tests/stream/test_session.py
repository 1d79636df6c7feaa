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
        base = first.event_id - 1
        assert (first.event_id - base, first.stream_chunk.text) == (1, "before")
        for _ in range(100):
            if s._pump is None or s._pump.done():
                break
            await asyncio.sleep(0.02)
        assert s._pump is not None and s._pump.done(), "the idle pump did not end"
        for i in range(3):
            chunk = events.chunk("s", i + 1, f"after {i}", f"after {i}", ())
            await bus.publish("r", events.CHUNK, chunk.SerializeToString())
        got = [await _next(out) for _ in range(3)]
        assert [(e.event_id - base, e.stream_chunk.text) for e in got] == [
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
        base = await bus.publish(
            "r", events.STATE, events.room_state(RoomStatus.PAUSED).SerializeToString()
        )
        base -= 1
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
        assert (released.event_id - base, released.stream_chunk.text) == (2, "held")
        active = await _next(out)
        assert (active.event_id - base, active.room_state.status) == (
            3,
            rooms_pb.ROOM_STATUS_ACTIVE,
        )
    finally:
        await s.close()


async def test_a_woken_session_takes_new_events_without_a_task_switch() -> None:
    bus = InProcessBus()
    s = _session(bus)
    await s.start()
    out = s.events()
    try:
        await asyncio.sleep(0)  # the first pump finds nothing and parks
        ids = []
        for i in range(3):
            chunk = events.chunk("s", i, f"c{i}", f"c{i}", ())
            ids.append(await bus.publish("r", events.CHUNK, chunk.SerializeToString()))
        base = ids[0] - 1
        # Queued within the publishes themselves, in order, by the listener.
        assert s._queue.qsize() == 3
        paused = events.room_state(RoomStatus.PAUSED).SerializeToString()
        await bus.publish("r", events.STATE, paused)
        held = events.chunk("s", 3, "held", "held", ()).SerializeToString()
        await bus.publish("r", events.CHUNK, held)
        assert s._queue.qsize() == 4  # the PAUSED event, then nothing while held
        got = [await _next(out) for _ in range(4)]
        assert [e.event_id - base for e in got] == [1, 2, 3, 4]
        assert got[3].room_state.status == rooms_pb.ROOM_STATUS_PAUSED
        active = events.room_state(RoomStatus.ACTIVE).SerializeToString()
        await bus.publish("r", events.STATE, active)
        released = await _next(out)
        assert (released.event_id - base, released.stream_chunk.text) == (5, "held")
        assert (await _next(out)).room_state.status == rooms_pb.ROOM_STATUS_ACTIVE
    finally:
        await s.close()


async def test_a_reader_that_takes_nothing_is_cut_off_with_its_resume_cursor() -> None:
    bus = InProcessBus()
    aborted: list[DomainError] = []

    async def abort(err: DomainError) -> None:
        aborted.append(err)

    config = CoreConfig(subscriber_queue=4, slow_reader_s=0.2)
    s = _session(bus, config=config, on_abort=abort)
    await s.start()
    out = s.events()
    try:
        await asyncio.sleep(0)
        ids = []
        for i in range(8):
            chunk = events.chunk("s", i, f"c{i}", f"c{i}", ())
            ids.append(await bus.publish("r", events.CHUNK, chunk.SerializeToString()))
        await _next(out)
        await _next(out)  # the first one was written; the second is being written
        await asyncio.sleep(0.1)
        assert not aborted, "a reader was cut off before slow_reader_s passed"
        for _ in range(100):  # nobody reads any more
            if aborted:
                break
            await asyncio.sleep(0.02)
        assert [e.reason for e in aborted] == ["SLOW_READER"]
        assert aborted[0].metadata["resume_after_event_id"] == str(ids[0])
        assert s._queue.qsize() <= 4
    finally:
        await s.close()


async def test_a_cursor_far_back_replays_every_event_paced_by_the_reader(bus: Bus) -> None:
    published = []
    for i in range(700):
        chunk = events.chunk("s", i, f"c{i}", f"c{i}", ())
        published.append(await bus.publish("r", events.CHUNK, chunk.SerializeToString()))
    s = Session(
        bus=bus,
        room_id="r",
        user_id="u",
        after_id=published[0],
        held=False,
        config=CoreConfig(subscriber_queue=16, slow_reader_s=5),
        on_abort=_abort,
    )
    await s.start()
    out = s.events()
    try:
        got = []
        for _ in range(699):
            got.append((await _next(out)).event_id)
            assert s._queue.qsize() <= 16
            if len(got) % 100 == 0:
                await asyncio.sleep(0.01)  # a reader slower than the log
        for i in range(3):  # then the live events, without a gap
            chunk = events.chunk("s", 700 + i, "live", "live", ())
            published.append(await bus.publish("r", events.CHUNK, chunk.SerializeToString()))
            got.append((await _next(out)).event_id)
        assert got == published[1:]
    finally:
        await s.close()

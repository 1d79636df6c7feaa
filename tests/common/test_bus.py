"""One contract suite for both bus back ends: in-process and the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from services.common.bus import (
    Bus,
    CursorExpired,
    InProcessBus,
    ReplyLease,
    ReplyPhase,
    ReplyState,
    first_id,
    open_bus,
)
from services.common.errors import DomainError
from services.common.redis_bus import RedisBus
from services.common.status import grpc_code

MakeBus = Callable[..., Bus]


@pytest.fixture(params=["memory", "redis"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[MakeBus]:
    made: list[Bus] = []
    if request.param == "memory":
        shared: dict[int, Bus] = {}

        def make(maxlen: int = 10) -> Bus:
            # One process: every "replica" is the same bus object.
            if maxlen not in shared:
                shared[maxlen] = InProcessBus(maxlen=maxlen)
                made.append(shared[maxlen])
            return shared[maxlen]
    else:
        url = request.getfixturevalue("redis_base_url")
        prefix = request.getfixturevalue("redis_prefix")

        def make(maxlen: int = 10) -> Bus:
            bus = RedisBus(url, prefix=prefix, maxlen=maxlen)
            made.append(bus)
            return bus

    yield make
    for bus in made:
        await bus.close()


async def test_ids_start_from_the_clock_and_increase_by_one(make_bus: MakeBus) -> None:
    bus = make_bus()
    assert await bus.last_event_id("r1") == 0
    before = first_id()
    ids = [await bus.publish("r1", "chunk", f"e{i}".encode()) for i in range(5)]
    assert before < ids[0] <= first_id() + 1
    assert ids == list(range(ids[0], ids[0] + 5))
    other = await bus.publish("r2", "chunk", b"other room")
    assert ids[0] <= other <= first_id() + 1
    assert await bus.last_event_id("r1") == ids[-1]
    assert ids[-1] < 2**53  # exact in every client's numbers


async def test_a_lost_log_never_gives_its_ids_again(make_bus: MakeBus) -> None:
    """The log starts again from the clock: a cursor from before is refused, not reused."""
    old = InProcessBus()
    cursor = [await old.publish("r", "k", b"x") for _ in range(3)][-1]
    await old.close()  # the embedded bus restarts: every log is lost
    bus = make_bus()
    with pytest.raises(CursorExpired):
        await bus.check_cursor("r", cursor)
    new = await bus.publish("r", "k", b"new run")
    assert new > cursor
    with pytest.raises(CursorExpired) as info:
        await bus.check_cursor("r", cursor)
    assert grpc_code(info.value) == grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(CursorExpired):
        await bus.read("r", cursor)
    assert [e.event_id for e in await bus.read("r", 0)] == [new]  # 0: from the oldest kept


async def test_read_after_cursor_in_order(make_bus: MakeBus) -> None:
    bus = make_bus()
    for i in range(5):
        await bus.publish("r", "k", bytes([i]))
    base = await bus.last_event_id("r") - 5
    events = await bus.read("r", base + 2)
    assert [(e.event_id - base, e.kind, e.data) for e in events] == [
        (3, "k", b"\x02"),
        (4, "k", b"\x03"),
        (5, "k", b"\x04"),
    ]
    assert [e.event_id - base for e in await bus.read("r", 0, limit=2)] == [1, 2]
    assert await bus.read("r", base + 5) == []


async def test_concurrent_publishers_get_gap_free_ids(make_bus: MakeBus) -> None:
    a, b = make_bus(maxlen=1000), make_bus(maxlen=1000)
    results = await asyncio.gather(
        *(bus.publish("r", "k", str(i).encode()) for i in range(50) for bus in (a, b))
    )
    base = min(results) - 1
    assert sorted(results) == list(range(base + 1, base + 101))
    events: list[int] = []
    while len(events) < 100:
        events += [e.event_id for e in await a.read("r", events[-1] if events else 0)]
    assert events == list(range(base + 1, base + 101))


async def test_blocking_read_wakes_on_publish(make_bus: MakeBus) -> None:
    reader, writer = make_bus(), make_bus()
    first = await writer.publish("r", "k", b"old")
    pending = asyncio.create_task(reader.read("r", first, block_s=10))
    await asyncio.sleep(0)
    await writer.publish("r", "k", b"new")
    events = await asyncio.wait_for(pending, 10)
    assert [(e.event_id, e.data) for e in events] == [(first + 1, b"new")]


async def test_blocking_read_times_out_empty(make_bus: MakeBus) -> None:
    bus = make_bus()
    assert await bus.read("quiet", 0, block_s=0.05) == []


async def test_capped_log_expires_old_cursors(make_bus: MakeBus) -> None:
    bus = make_bus(maxlen=3)
    ids = [await bus.publish("r", "k", str(i).encode()) for i in range(200)]
    last = await bus.check_cursor("r", ids[-1])
    assert last == ids[-1]
    assert await bus.check_cursor("r", ids[-2]) == last
    with pytest.raises(CursorExpired) as info:
        await bus.check_cursor("r", ids[0])
    assert grpc_code(info.value) == grpc.StatusCode.OUT_OF_RANGE
    assert info.value.newest == last
    with pytest.raises(CursorExpired):
        await bus.read("r", ids[0])
    kept = await bus.read("r", info.value.oldest - 1)
    assert kept[0].event_id == info.value.oldest and kept[-1].event_id == last
    # Approximate trimming on Redis never keeps fewer than maxlen.
    assert len(kept) >= 3


async def test_cursor_from_the_future_is_out_of_range(make_bus: MakeBus) -> None:
    bus = make_bus()
    assert await bus.check_cursor("new-room", 0) == 0
    with pytest.raises(CursorExpired):
        await bus.check_cursor("new-room", 7)
    first = await bus.publish("new-room", "k", b"x")
    with pytest.raises(CursorExpired):
        await bus.check_cursor("new-room", first + 1)


async def test_listeners_are_woken_by_publish_until_they_stop(make_bus: MakeBus) -> None:
    writer, reader = make_bus(), make_bus()  # on Redis: two replicas
    woken = asyncio.Event()
    count = 0

    def wake() -> None:
        nonlocal count
        count += 1
        woken.set()

    stop = await reader.listen("r", 0, wake)
    await writer.publish("r", "chunk", b"one")
    await asyncio.wait_for(woken.wait(), 5)
    assert [e.data for e in await reader.read("r", 0)] == [b"one"]
    await writer.publish("other", "chunk", b"elsewhere")
    stop()
    seen = count
    await writer.publish("r", "chunk", b"two")
    await asyncio.sleep(0.3)
    assert count == seen


async def test_read_nowait_gives_what_read_gives_or_nothing(make_bus: MakeBus) -> None:
    writer, reader = make_bus(), make_bus()  # on Redis: two replicas
    assert reader.read_nowait("never-seen", 0) is None
    woken = asyncio.Event()
    stop = await reader.listen("r", 0, woken.set)
    for i in range(6):
        await writer.publish("r", "chunk", f"e{i}".encode())
    await asyncio.wait_for(woken.wait(), 5)
    # Once woken, the reader holds the new events: from memory, the same as from `read`.
    expected = await reader.read("r", 0)
    base = expected[0].event_id - 1
    for _ in range(100):
        held = reader.read_nowait("r", base)
        if held is not None and len(held) == 6:
            break
        await asyncio.sleep(0.02)
    assert held is not None
    assert [(e.event_id, e.kind, e.data) for e in held] == [
        (e.event_id, e.kind, e.data) for e in expected
    ]
    assert [e.event_id - base for e in reader.read_nowait("r", base + 2, limit=3) or []] == [
        3,
        4,
        5,
    ]
    assert reader.read_nowait("r", base + 6) == []  # caught up: the next publish wakes it
    stop()


async def test_read_nowait_refuses_a_trimmed_cursor(make_bus: MakeBus) -> None:
    bus = make_bus(maxlen=3)
    woken = asyncio.Event()
    stop = await bus.listen("r", 0, woken.set)  # on Redis: the replica follows the room
    ids = [await bus.publish("r", "k", str(i).encode()) for i in range(300)]
    first = ids[0]
    await asyncio.wait_for(woken.wait(), 5)
    with pytest.raises(CursorExpired):
        await bus.read("r", first)
    # Never the events after a gap as if they came right after the cursor.
    assert bus.read_nowait("r", first) is None
    stop()


async def test_control_reaches_every_subscriber_of_the_room(make_bus: MakeBus) -> None:
    a, b = make_bus(), make_bus()
    async with a.control("r") as sub_a, b.control("r") as sub_b, b.control("other") as sub_o:
        await a.send_control("r", b"interrupt")
        assert await asyncio.wait_for(sub_a.get(), 5) == b"interrupt"
        assert await asyncio.wait_for(sub_b.get(), 5) == b"interrupt"
        await b.send_control("other", b"o")
        assert await asyncio.wait_for(sub_o.get(), 5) == b"o"


async def test_control_without_subscribers_is_dropped(make_bus: MakeBus) -> None:
    bus = make_bus()
    await bus.send_control("r", b"nobody listens")
    async with bus.control("r") as sub:
        await bus.send_control("r", b"second")
        assert await asyncio.wait_for(sub.get(), 5) == b"second"


async def test_a_reply_state_is_shared_by_every_replica(make_bus: MakeBus) -> None:
    a, b = make_bus(), make_bus()
    assert await a.reply_state("s1") is None
    await a.set_reply_state("s1", ReplyState("r", ReplyPhase.ACTIVE, "A"))
    assert await b.reply_state("s1") == ReplyState("r", ReplyPhase.ACTIVE, "A")
    await b.set_reply_state("s1", ReplyState("r", ReplyPhase.COMPLETED, "A"))
    assert await a.reply_state("s1") == ReplyState("r", ReplyPhase.COMPLETED, "A")
    assert await a.reply_state("s2") is None


async def test_an_interrupt_before_a_reply_starts_is_collected_when_it_starts(
    make_bus: MakeBus,
) -> None:
    a, b = make_bus(), make_bus()
    assert await a.start_pending("r", "s1") is None  # nothing pending, nothing interrupted
    await a.mark_pending("r", "s1", "A")
    assert await b.reply_state("s1") == ReplyState("r", ReplyPhase.PENDING, "A")
    await a.mark_pending("r", "s2", "A")  # accepted after s1: the room's newest waiting reply
    # Without a stream id, the newest waiting reply is interrupted.
    assert await b.cancel_pending("r", "", 7) == "s2"
    assert await a.start_pending("r", "s1") is None  # s2 stays the room's waiting reply
    assert await b.cancel_pending("r", "", 9) == "s2"
    assert await a.start_pending("r", "s2") == 9  # the latest interrupt's played_chars
    assert await b.cancel_pending("r", "", 1) == ""  # s2 started: no reply waits any more
    # By stream id, a reply accepted earlier can still be interrupted before it runs.
    assert await b.cancel_pending("r", "s1", 0) == "s1"
    assert await a.start_pending("r", "s1") == 0


async def test_only_a_waiting_reply_of_the_room_is_interrupted_before_it_starts(
    make_bus: MakeBus,
) -> None:
    a, b = make_bus(), make_bus()
    await a.mark_pending("r", "s1", "A")
    assert await b.cancel_pending("r", "s1", 3, running="s1") == ""  # the caller stops it
    assert await b.cancel_pending("r", "", 3, running="s1") == ""
    assert await b.cancel_pending("other", "s1", 3) == ""  # another room's reply
    assert await b.cancel_pending("r", "unknown", 3) == ""
    assert await b.cancel_pending("other", "", 3) == ""  # nothing waits there
    await a.set_reply_state("s1", ReplyState("r", ReplyPhase.ACTIVE, "A"))
    assert await b.cancel_pending("r", "s1", 3) == ""  # running already: not waiting
    assert await a.start_pending("r", "s1") is None  # none of those reached it


async def test_a_room_status_is_swapped(make_bus: MakeBus) -> None:
    a, b = make_bus(), make_bus()
    assert await a.set_room_status("r", "ACTIVE") is None
    assert await b.set_room_status("r", "ACTIVE") == "ACTIVE"
    assert await b.set_room_status("r", "PAUSED") == "ACTIVE"
    assert await a.set_room_status("r", "ENDED") == "PAUSED"
    assert await a.set_room_status("other", "ACTIVE") is None


async def test_reply_states_and_room_statuses_expire(
    make_bus: MakeBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.common import bus as bus_module
    from services.common import redis_bus as redis_bus_module

    for module in (bus_module, redis_bus_module):
        monkeypatch.setattr(module, "REPLY_STATE_TTL_S", 0.05)
        monkeypatch.setattr(module, "ROOM_STATUS_TTL_S", 0.05)
    bus = make_bus()
    await bus.mark_pending("r", "s1", "A")
    await bus.mark_pending("r", "s2", "A")
    assert await bus.cancel_pending("r", "s1", 4) == "s1"
    await bus.set_room_status("r", "PAUSED")
    await asyncio.sleep(0.2)  # the TTLs themselves are what is tested
    assert await bus.reply_state("s1") is None
    assert await bus.start_pending("r", "s1") is None
    assert await bus.cancel_pending("r", "", 4) == ""  # s2 is no longer the room's pending
    assert await bus.set_room_status("r", "ACTIVE") is None


def test_open_bus_picks_the_back_end(redis_base_url: str) -> None:
    assert isinstance(open_bus(""), InProcessBus)
    assert isinstance(open_bus(redis_base_url, prefix="p:"), RedisBus)


async def test_redis_unreachable_is_unavailable() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0", timeout_s=0.5)
    try:
        with pytest.raises(DomainError) as info:
            await bus.publish("r", "k", b"x")
        assert grpc_code(info.value) == grpc.StatusCode.UNAVAILABLE
    finally:
        await bus.close()


async def test_a_reply_lease_is_held_renewed_and_released(make_bus: MakeBus) -> None:
    a, b = make_bus(), make_bus()  # on Redis: two replicas
    assert await a.reply_lease("r") is None
    assert await a.claim_reply("r", "s1", "A", ttl_s=5) == (True, None)
    assert await a.claim_reply("r", "s1", "A", ttl_s=5) == (True, None)  # its own: renewed
    taken, holder = await b.claim_reply("r", "s2", "B", ttl_s=5)
    assert (taken, holder) == (False, ReplyLease("s1", "A"))
    assert await b.reply_lease("r") == ReplyLease("s1", "A")
    assert await b.renew_reply("r", "s2", ttl_s=5) is False
    assert await a.renew_reply("r", "s1", ttl_s=5) is True
    assert await b.drop_lapsed_reply("r", "s1") is False  # live: nobody may end it
    assert await b.release_reply("r", "s2") is False
    assert await a.release_reply("r", "s1") is True
    assert await b.reply_lease("r") is None
    assert await b.claim_reply("r", "s2", "B", ttl_s=5) == (True, None)
    assert await a.reply_lease("other") is None


async def test_a_lapsed_reply_lease_is_taken_by_the_next_claim_and_ended_once(
    make_bus: MakeBus,
) -> None:
    a, b = make_bus(), make_bus()
    assert await a.claim_reply("r", "s1", "A", ttl_s=0.05) == (True, None)
    await asyncio.sleep(0.1)  # A stopped renewing (it crashed)
    assert await b.reply_lease("r") == ReplyLease("s1", "A", lapsed=True)
    assert await a.renew_reply("r", "s1", ttl_s=5) is True  # not taken yet: still its own
    await asyncio.sleep(0)
    assert await a.claim_reply("r", "s1", "A", ttl_s=0.05) == (True, None)
    await asyncio.sleep(0.1)
    # The next claim takes it at once and learns which reply it must end.
    taken = await b.claim_reply("r", "s2", "B", ttl_s=5)
    assert taken == (True, ReplyLease("s1", "A", lapsed=True))
    assert await a.renew_reply("r", "s1", ttl_s=5) is False  # A hears it lost the room
    assert await a.reply_lease("r") == ReplyLease("s2", "B")
    # A lapsed lease nobody claims is ended by exactly one of those who find it.
    await b.renew_reply("r", "s2", ttl_s=0.05)
    await asyncio.sleep(0.1)
    found = await asyncio.gather(*(bus.drop_lapsed_reply("r", "s2") for bus in (a, b, a, b)))
    assert sorted(found) == [False, False, False, True]
    assert await a.reply_lease("r") is None


async def test_a_reply_lease_record_expires_by_itself(
    make_bus: MakeBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.common import bus as bus_module

    monkeypatch.setattr(bus_module, "REPLY_LAPSED_KEEP_S", 0.1)
    bus = make_bus()
    if isinstance(bus, RedisBus):
        bus._keep_ms = 100
    await bus.claim_reply("r", "s1", "A", ttl_s=0.05)
    await asyncio.sleep(0.3)
    assert await bus.reply_lease("r") is None
    if isinstance(bus, RedisBus):
        assert await bus._client.exists(bus._reply_key("r")) == 0

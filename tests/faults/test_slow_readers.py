"""A cursor far back replays the whole kept window paced by the client's reads; a client
that stops reading is cut off, its slot freed, and told where to resume."""

from __future__ import annotations

import asyncio

import grpc
from arconv.stream.v1 import stream_service_pb2 as pb
from google.rpc import error_details_pb2, status_pb2

from services.common.redis_bus import RedisBus
from services.stream import events
from tests.faults.own_redis import OwnRedis
from tests.stream.conftest import Conversation, MeshFactory, converse, join, message

KEPT = 2000


async def _fill(url: str, room_id: str, n: int, size: int = 64) -> list[int]:
    bus = RedisBus(url, prefix="t:bus:", maxlen=KEPT)
    try:
        ids = []
        for i in range(n):
            text = f"{i:06d}".ljust(size, "x")
            chunk = events.chunk("old", i, text, text, ())
            ids.append(await bus.publish(room_id, events.CHUNK, chunk.SerializeToString()))
        return ids
    finally:
        await bus.close()


def _ids(seen: list[pb.ConverseResponse]) -> list[int]:
    return [e.event_id for e in seen if e.event_id]


async def test_a_cursor_at_the_start_of_the_kept_window_replays_it_all_then_goes_live(
    make_mesh: MeshFactory, own_redis: OwnRedis
) -> None:
    mesh = await make_mesh(bus={"redis_url": own_redis.url, "redis_prefix": "t:"})
    room = await mesh.room("ann")
    ids = await _fill(own_redis.url, room, KEPT + 50)
    cursor = ids[-KEPT - 1]  # the whole window (2,000 events) after it is still kept
    conv = await converse(mesh, "ann", room, after=cursor)
    replayed = [await conv.next() for _ in range(KEPT)]
    assert _ids(replayed) == ids[-KEPT:], "the kept window replayed in order, all of it"
    await conv.send(message("Hello after the replay", "c1"))
    live = await conv.until_kind("stream_ended")
    got = _ids(conv.seen)
    # Events duplicated or missing after the resume: 0.
    assert got == list(range(got[0], got[0] + len(got)))
    assert got[KEPT - 1] == ids[-1] and live[-1].stream_ended.stream_id
    await conv.call.done_writing()


async def test_a_client_that_stops_reading_is_cut_off_and_its_slot_freed(
    make_mesh: MeshFactory, own_redis: OwnRedis
) -> None:
    mesh = await make_mesh(
        bus={"redis_url": own_redis.url, "redis_prefix": "t:"},
        stream_max_open_streams=1,
        stream_slow_reader_s=0.3,
        stream_subscriber_queue=16,
    )
    room = await mesh.room("bob")
    ids = await _fill(own_redis.url, room, KEPT, size=4096)  # 8 MB: more than any window
    ids = ids[1:]  # joined after the first
    stuck = await converse(mesh, "bob", room, after=ids[0] - 1)
    first = await stuck.next()
    assert first.event_id == ids[0]
    # The client reads no more. Its only slot is freed once it is cut off.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        other = Conversation(mesh.stream().Converse(metadata=mesh.md("bob")))
        await other.send(join(room))
        try:
            joined = await other.next()
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert loop.time() < deadline, "the stuck client's slot was never freed"
            await asyncio.sleep(0.05)
    assert joined.HasField("joined")
    other.call.cancel()
    # Reading on, the stuck client gets what was written, then the status with its cursor.
    got = [first]
    try:
        while True:
            event = await asyncio.wait_for(stuck.call.read(), 10)
            assert event is not grpc.aio.EOF, "the cut-off stream ended without a status"
            got.append(event)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
        status = status_pb2.Status.FromString(
            dict(exc.trailing_metadata() or ())["grpc-status-details-bin"]
        )
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        resume = int(info.metadata["resume_after_event_id"])
    delivered = _ids(got)
    assert delivered == ids[: len(delivered)] and resume in delivered
    # Resuming there misses nothing and repeats nothing (on a replica that waits long for a
    # slow reader: the 2,000 events must not be cut off on a busy machine).
    patient = await mesh.start_stream(stream_slow_reader_s=20.0)
    again = await converse(mesh, "bob", room, after=resume, port=patient.port)
    rest = [await again.next() for _ in range(ids[-1] - resume)]
    assert _ids(rest) == ids[ids.index(resume) + 1 :]
    again.call.cancel()

"""Concurrent CreateRoom calls converge on one room (the partial unique index decides)."""

from __future__ import annotations

import asyncio

from arconv.rooms.v1 import rooms_service_pb2 as pb

from tests.rooms.conftest import Rooms


async def test_fifty_concurrent_creates_make_one_room(rooms: Rooms, user_md) -> None:
    md = user_md("alice")
    results = await asyncio.gather(
        *(
            rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)
            for _ in range(50)
        )
    )
    assert len({r.room.room_id for r in results}) == 1
    assert sum(not r.resumed for r in results) == 1
    assert await rooms.count("SELECT COUNT(*) FROM rooms") == 1


async def test_concurrent_create_and_end_never_open_two_rooms(rooms: Rooms, user_md) -> None:
    md = user_md("alice")
    first = (await rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md)).room
    creates = [
        rooms.stub.CreateRoom(pb.CreateRoomRequest(agent_id="nova"), metadata=md) for _ in range(20)
    ]
    end = rooms.stub.EndRoom(pb.EndRoomRequest(room_id=first.room_id), metadata=md)
    ended, *created = await asyncio.gather(end, *creates)
    assert ended.room.status == pb.ROOM_STATUS_ENDED
    ids = {r.room.room_id for r in created}
    # Calls before the end resume the first room; calls after it share one new room.
    assert len(ids - {first.room_id}) <= 1
    open_rooms = await rooms.count(
        "SELECT COUNT(*) FROM rooms WHERE status IN ('ACTIVE', 'PAUSED')"
    )
    assert open_rooms == (1 if ids - {first.room_id} else 0)

"""On SQLite (the embedded default), reads take no write lock: GetRoom, ListRooms and
ListMessages answer while another connection holds the database's write lock, and writes of
one process take turns without SQLite's busy waits."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from arconv.rooms.v1 import rooms_service_pb2 as pb
from sqlalchemy.engine import make_url

from tests.rooms.conftest import Rooms
from tests.rooms.test_messages import append, new_room


@pytest.fixture
def database_url() -> str:
    return ""  # the SQLite default only


async def test_reads_answer_while_the_write_lock_is_held(rooms: Rooms, user_md, service_md) -> None:
    md = user_md("alice")
    rid = await new_room(rooms, user_md)
    await append(rooms, service_md("alice"), rid, "m1")
    path = make_url(rooms.settings.service_database_url("rooms")).database
    holder = sqlite3.connect(str(path), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer, mid-transaction
        got = await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=rid), metadata=md, timeout=5)
        assert got.room.room_id == rid
        listed = await rooms.stub.ListRooms(pb.ListRoomsRequest(), metadata=md, timeout=5)
        assert [r.room_id for r in listed.rooms] == [rid]
        history = await rooms.stub.ListMessages(
            pb.ListMessagesRequest(room_id=rid), metadata=md, timeout=5
        )
        assert [m.content for m in history.messages] == ["hello"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_concurrent_writes_of_one_process_all_commit(
    rooms: Rooms, user_md, service_md
) -> None:
    rid = await new_room(rooms, user_md)
    md = service_md("alice")
    done = await asyncio.gather(*(append(rooms, md, rid, f"k{i}", f"m{i}") for i in range(40)))
    assert all(r.created for r in done)
    history = await rooms.stub.ListMessages(
        pb.ListMessagesRequest(room_id=rid, page_size=100), metadata=user_md("alice")
    )
    assert sorted(m.content for m in history.messages) == sorted(f"m{i}" for i in range(40))

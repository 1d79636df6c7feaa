"""AppendMessage and ListMessages on every path: repeats, refusals, races with a pause or with
the same key, and the statements they cost on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as pb
from psycopg.pq import TransactionStatus
from sqlalchemy import event

from services.common.db import migrate_async
from services.rooms.app import open_engine
from services.rooms.domain import (
    Action,
    MessageStatus,
    NewMessage,
    RoomNotAccepting,
    RoomStatus,
    SenderType,
)
from services.rooms.repository import RoomRepository
from tests.rooms.conftest import Rooms
from tests.rooms.helpers import error_info, expect_error
from tests.rooms.test_messages import AGENT, NOT_FOUND, PRECONDITION, append, new_room

# Long enough for a blocked call to have gone through if nothing held it.
BLOCKED_S = 0.3


async def test_a_retry_after_the_room_ended_returns_the_stored_message(
    rooms: Rooms, user_md, service_md
) -> None:
    md, as_alice = user_md("alice"), service_md("alice")
    rid = await new_room(rooms, user_md, agent="atlas")
    human = (await append(rooms, as_alice, rid, "h")).message
    agent = (await append(rooms, as_alice, rid, "a", "reply", sender_type=AGENT)).message
    assert (human.sender_id, agent.sender_id) == ("alice", "atlas")

    # A repeat stores nothing and leaves the room's activity time alone.
    before = (await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=rid), metadata=md)).room
    again = await append(rooms, as_alice, rid, "h", "another body")
    assert not again.created and again.message == human
    after = (await rooms.stub.GetRoom(pb.GetRoomRequest(room_id=rid), metadata=md)).room
    assert after.last_activity_time == before.last_activity_time

    await rooms.stub.EndRoom(pb.EndRoomRequest(room_id=rid), metadata=md)
    for key, sender, stored in (("h", pb.SENDER_TYPE_HUMAN, human), ("a", AGENT, agent)):
        late = await append(rooms, as_alice, rid, key, sender_type=sender)
        assert not late.created and late.message == stored
    err = await expect_error(PRECONDITION, append(rooms, as_alice, rid, "h2"))
    assert error_info(err).metadata["status"] == "ROOM_STATUS_ENDED"
    assert await rooms.count("SELECT COUNT(*) FROM messages") == 2


async def test_a_stored_key_is_not_found_for_another_user(
    rooms: Rooms, user_md, service_md
) -> None:
    rid = await new_room(rooms, user_md)
    await append(rooms, service_md("alice"), rid, "k")
    await new_room(rooms, user_md, user="bob")
    await expect_error(NOT_FOUND, append(rooms, service_md("bob"), rid, "k"))
    for latest in (True, False):
        request = pb.ListMessagesRequest(room_id=rid, latest=latest)
        await expect_error(NOT_FOUND, rooms.stub.ListMessages(request, metadata=user_md("bob")))
    assert await rooms.count("SELECT COUNT(*) FROM messages") == 1


async def test_an_empty_room_lists_nothing_and_no_room_is_not_found(
    rooms: Rooms, user_md, service_md
) -> None:
    md = user_md("alice")
    rid = await new_room(rooms, user_md)
    for latest in (True, False):
        res = await rooms.stub.ListMessages(
            pb.ListMessagesRequest(room_id=rid, latest=latest), metadata=md
        )
        assert list(res.messages) == [] and res.next_page_token == ""
    other = "00000000-0000-4000-8000-000000000000"
    await expect_error(
        NOT_FOUND,
        rooms.stub.ListMessages(pb.ListMessagesRequest(room_id=other, latest=True), metadata=md),
    )
    await expect_error(NOT_FOUND, append(rooms, service_md("alice"), other, "k"))


async def test_appends_racing_a_pause_are_stored_exactly_when_reported(
    rooms: Rooms, user_md, service_md
) -> None:
    md, as_alice = user_md("alice"), service_md("alice")
    rid = await new_room(rooms, user_md)
    keys = [f"k{i}" for i in range(40)]
    calls = [append(rooms, as_alice, rid, k) for k in keys]
    pause = rooms.stub.PauseRoom(pb.PauseRoomRequest(room_id=rid), metadata=md)
    results = await asyncio.gather(*calls[:20], pause, *calls[20:], return_exceptions=True)
    paused = results.pop(20)
    assert not isinstance(paused, BaseException) and paused.room.status == pb.ROOM_STATUS_PAUSED
    created, refused = [], []
    for key, res in zip(keys, results, strict=True):
        if isinstance(res, grpc.aio.AioRpcError):
            assert res.code() == PRECONDITION, res.details()
            assert error_info(res).metadata["status"] == "ROOM_STATUS_PAUSED"
            refused.append(key)
        else:
            assert not isinstance(res, BaseException) and res.created
            created.append(key)
    assert len(created) + len(refused) == len(keys)

    async def stored(of: list[str]) -> int:
        listed = ", ".join(f"'{k}'" for k in of) or "''"
        return await rooms.count(
            f"SELECT COUNT(*) FROM messages WHERE idempotency_key IN ({listed})"
        )

    assert await stored(created) == len(created)
    assert await stored(refused) == 0
    listed = await rooms.stub.ListMessages(
        pb.ListMessagesRequest(room_id=rid, page_size=100), metadata=md
    )
    assert len(listed.messages) == len(created)
    # After the pause has answered, nothing more gets in.
    await expect_error(PRECONDITION, append(rooms, as_alice, rid, "late"))


# --- the repository, with a second transaction holding the room ------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RoomRepository]:
    """A repository on a fresh SQLite file or PostgreSQL database."""
    if request.param == "postgres":
        url = str(request.getfixturevalue("pg_url"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'rooms.db'}"
    await migrate_async("rooms", url)
    engine = open_engine(url)
    yield RoomRepository(engine)
    await engine.dispose()


def _new(key: str, sender: SenderType = SenderType.HUMAN) -> NewMessage:
    return NewMessage(
        sender_type=sender,
        content="hello",
        text="hello",
        stream_id="",
        status=MessageStatus.COMPLETE,
        idempotency_key=key,
    )


async def _append(repo: RoomRepository, room_id: str, key: str) -> tuple[Any, bool]:
    async with repo.autocommit() as s:
        return await repo.append_message(
            s, user_id="u", room_id=room_id, message=_new(key), now=datetime.now(UTC)
        )


async def _room(repo: RoomRepository) -> str:
    async with repo.autocommit() as s:
        room, _ = await repo.create_or_resume(
            s, user_id="u", agent_id="nova", now=datetime.now(UTC) - timedelta(seconds=1)
        )
    return room.room_id


async def test_an_append_waits_for_a_pause_in_progress_and_is_refused(
    repo: RoomRepository,
) -> None:
    room_id = await _room(repo)
    async with repo.transaction() as s:
        await repo.transition(
            s, user_id="u", room_id=room_id, action=Action.PAUSE, now=datetime.now(UTC)
        )
        pending = asyncio.create_task(_append(repo, room_id, "k"))
        await asyncio.sleep(BLOCKED_S)
        assert not pending.done()
    with pytest.raises(RoomNotAccepting) as refused:
        await pending
    assert refused.value.current is RoomStatus.PAUSED
    async with repo.autocommit() as s:
        listed = await repo.list_messages(
            s, user_id="u", room_id=room_id, limit=10, after=None, latest=True
        )
    assert listed == []


async def test_the_same_key_racing_an_uncommitted_append_is_created_once(
    repo: RoomRepository,
) -> None:
    room_id = await _room(repo)
    async with repo.transaction() as s:
        first, created = await repo.append_message(
            s, user_id="u", room_id=room_id, message=_new("k"), now=datetime.now(UTC)
        )
        assert created
        pending = asyncio.create_task(_append(repo, room_id, "k"))
        await asyncio.sleep(BLOCKED_S)
        assert not pending.done()
    second, created = await pending
    assert not created and second == first
    async with repo.autocommit() as s:
        listed = await repo.list_messages(
            s, user_id="u", room_id=room_id, limit=10, after=None, latest=False
        )
    assert listed == [first]


# --- what the calls cost on PostgreSQL ---------------------------------------------------------


@pytest.fixture
async def repo_and_statements(pg_url: str) -> AsyncIterator[tuple[RoomRepository, list[str]]]:
    """A repository on a fresh database, and the statements it sends ("WITH", "BEGIN", ...)."""
    await migrate_async("rooms", pg_url)
    engine = open_engine(pg_url)
    sent: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _statement(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The driver sends BEGIN itself before a statement outside a transaction, unless in
        # autocommit.
        driver = conn.connection.driver_connection
        if not driver.autocommit and driver.info.transaction_status == TransactionStatus.IDLE:
            sent.append("BEGIN")
        sent.append(statement.split(None, 1)[0])

    @event.listens_for(engine.sync_engine, "commit")
    def _commit(conn: Any) -> None:
        if not conn.connection.driver_connection.autocommit:
            sent.append("COMMIT")

    yield RoomRepository(engine), sent
    await engine.dispose()


@pytest.mark.postgres
async def test_append_and_latest_history_are_single_statements(
    repo_and_statements: tuple[RoomRepository, list[str]],
) -> None:
    repo, sent = repo_and_statements
    room_id = await _room(repo)
    sent.clear()
    message, created = await _append(repo, room_id, "k")
    assert created and message.sender_id == "u"
    assert sent == ["WITH"]
    sent.clear()
    async with repo.autocommit() as s:
        reply, created = await repo.append_message(
            s,
            user_id="u",
            room_id=room_id,
            message=_new("r", SenderType.AGENT),
            now=datetime.now(UTC),
        )
    assert created and reply.sender_id == "nova"
    assert sent == ["WITH"]
    sent.clear()
    async with repo.autocommit() as s:
        listed = await repo.list_messages(
            s, user_id="u", room_id=room_id, limit=20, after=None, latest=True
        )
    assert listed == [message, reply]
    assert sent == ["SELECT"]
    sent.clear()
    # Only a repeat looks again, to find the stored message.
    assert await _append(repo, room_id, "k") == (message, False)
    assert sent == ["WITH", "SELECT"]

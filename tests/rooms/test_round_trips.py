"""CreateRoom and GetRoom cost one statement each on PostgreSQL, with no BEGIN or COMMIT."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import event

from services.common.db import migrate_async
from services.rooms.app import open_engine
from services.rooms.repository import RoomRepository

pytestmark = pytest.mark.postgres


@pytest.fixture
async def repo_and_statements(pg_url: str) -> AsyncIterator[tuple[RoomRepository, list[str]]]:
    """A repository on a fresh database, and the statements it sends ("INSERT", "BEGIN", ...)."""
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


async def test_create_resume_and_get_are_single_statements(
    repo_and_statements: tuple[RoomRepository, list[str]],
) -> None:
    repo, sent = repo_and_statements
    now = datetime.now(UTC)
    async with repo.autocommit() as conn:
        room, resumed = await repo.create_or_resume(conn, user_id="u", agent_id="nova", now=now)
    assert not resumed
    assert sent == ["INSERT"]
    sent.clear()
    async with repo.autocommit() as conn:
        again, resumed = await repo.create_or_resume(conn, user_id="u", agent_id="nova", now=now)
    assert resumed and again.room_id == room.room_id
    assert sent == ["INSERT", "UPDATE"]
    sent.clear()
    async with repo.autocommit() as conn:
        assert (await repo.get(conn, user_id="u", room_id=room.room_id)) == again
    assert sent == ["SELECT"]

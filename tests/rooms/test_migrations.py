"""The rooms schema migrates up and down on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import inspect

from services.common.db import create_engine, downgrade, migrate
from services.rooms.app import RoomSettings


async def _schema(url: str) -> dict[str, object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def read(sync_conn):
                insp = inspect(sync_conn)
                tables = set(insp.get_table_names())
                out: dict[str, object] = {"tables": tables}
                for t in tables & {"rooms", "messages"}:
                    out[t] = {
                        i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
                        for i in insp.get_indexes(t)
                    }
                    out[f"{t}_unique"] = {
                        tuple(u["column_names"]) for u in insp.get_unique_constraints(t)
                    }
                return out

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_migrations_up_down_up(tmp_path: Path, database_url: str) -> None:
    url = RoomSettings(var_dir=tmp_path, database_url=database_url).service_database_url("rooms")
    await asyncio.to_thread(migrate, "rooms", url)
    up = await _schema(url)
    assert {"rooms", "messages", "alembic_version_rooms"} <= up["tables"]
    assert up["rooms"] == {
        "ix_rooms_user_activity": (("user_id", "last_activity_time"), False),
        "ix_rooms_agent_id": (("agent_id",), False),
        "uq_rooms_open_user_agent": (("user_id", "agent_id"), True),
    }
    assert up["messages"]["ix_messages_room_time"] == (("room_id", "create_time", "seq"), False)
    assert ("room_id", "idempotency_key") in up["messages_unique"]

    await asyncio.to_thread(downgrade, "rooms", url, "base")
    down = await _schema(url)
    assert not {"rooms", "messages"} & down["tables"]

    await asyncio.to_thread(migrate, "rooms", url)
    assert (await _schema(url))["rooms"] == up["rooms"]

"""The avatar schema migrates up and down on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from services.common.db import create_engine, downgrade, migrate


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    await asyncio.to_thread(migrate, "avatar", database_url)
    assert {"avatar_agents", "avatar_avatars"} <= await _tables(database_url)
    await asyncio.to_thread(downgrade, "avatar", database_url)
    assert not {"avatar_agents", "avatar_avatars"} & await _tables(database_url)
    await asyncio.to_thread(migrate, "avatar", database_url)
    assert {"avatar_agents", "avatar_avatars"} <= await _tables(database_url)

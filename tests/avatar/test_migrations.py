"""The avatar schema migrates up and down on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.avatar.capabilities import Capabilities
from services.avatar.repository import AvatarRepository
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


async def test_capabilities_column_reads_old_avatars_as_unrigged(database_url: str) -> None:
    """An avatar stored before 0002 keeps its morph targets and reads as unrigged, no clips."""
    await asyncio.to_thread(migrate, "avatar", database_url, "0001")
    engine = create_engine(database_url)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO avatar_agents (agent_id, name, system_prompt, model, appearance,"
                    " voice_provider, voice_id, create_time, update_time) VALUES ('nova', 'Nova',"
                    " 'x', '', '{}', 'espeak', 'en', :now, :now)"
                ),
                {"now": now},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO avatar_avatars (agent_id, job_id, status, style, provider, lods,"
                    " morph_targets, error, stage, percent, generation_count, resume_count,"
                    " create_time, update_time) VALUES ('nova', 'j1', 'READY', 'realistic',"
                    " 'procedural', '[]', '[\"viseme_aa\"]', '', 'done', 100, 1, 0, :now, :now)"
                ),
                {"now": now},
            )
        await asyncio.to_thread(migrate, "avatar", database_url)
        repo = AvatarRepository(async_sessionmaker(engine))
        async with repo.transaction() as s:
            rec = await repo.get(s, agent_id="nova")
        assert rec is not None
        assert rec.capabilities == Capabilities(morph_targets=("viseme_aa",))
        await asyncio.to_thread(downgrade, "avatar", database_url, "0001")
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in sa.inspect(c).get_columns("avatar_avatars")}
            )
        assert "capabilities" not in columns and "morph_targets" in columns
    finally:
        await engine.dispose()

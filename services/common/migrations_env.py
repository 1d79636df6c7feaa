"""The body of every service's Alembic env.py: online migrations over the async engine."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from services.common.db import create_engine


def run(target_metadata: MetaData) -> None:
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    assert url
    version_table = config.attributes.get("version_table", "alembic_version")

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=version_table,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Replicas starting together migrate one at a time.
                connection.exec_driver_sql(
                    f"SELECT pg_advisory_xact_lock(hashtext('{version_table}'))"
                )
            context.run_migrations()

    async def main() -> None:
        engine = create_engine(url, poolclass=_null_pool())
        async with engine.connect() as conn:
            await conn.run_sync(do_run)
            await conn.commit()
        await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, version_table=version_table)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(main())


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool

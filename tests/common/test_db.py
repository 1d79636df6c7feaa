"""The PostgreSQL connection pool: pinged only after sitting idle, last in first out, sized for
bursts of calls."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import POOL_SIZE, create_engine

pytestmark = pytest.mark.postgres


def count_pings(engine: AsyncEngine) -> list[int]:
    dialect = engine.sync_engine.dialect
    pings: list[int] = []
    ping = dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(1)
        return ping(dbapi_conn)

    dialect.do_ping = counted  # type: ignore[method-assign]
    return pings


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


def terminate(pg_admin_url: str, pid: int) -> None:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_a_connection_in_steady_use_is_not_pinged(pg_url: str) -> None:
    engine = create_engine(pg_url, ping_after_idle_s=3600)
    pings = count_pings(engine)
    try:
        for _ in range(5):
            await backend_pid(engine)
        assert pings == []
    finally:
        await engine.dispose()


async def test_a_connection_idle_too_long_is_pinged_and_replaced_if_dropped(
    pg_url: str, pg_admin_url: str
) -> None:
    engine = create_engine(pg_url, ping_after_idle_s=0)
    pings = count_pings(engine)
    try:
        pid = await backend_pid(engine)
        assert pings == []  # a new connection needs no ping
        terminate(pg_admin_url, pid)
        # The dropped connection is found by the ping and replaced: the call never sees it.
        assert await backend_pid(engine) != pid
        assert len(pings) == 1
    finally:
        await engine.dispose()


async def test_without_the_ping_a_dropped_connection_fails_the_call(
    pg_url: str, pg_admin_url: str
) -> None:
    # The counterpart of the test above: what the ping after idleness protects against.
    engine = create_engine(pg_url, ping_after_idle_s=3600)
    try:
        terminate(pg_admin_url, await backend_pid(engine))
        with pytest.raises(OperationalError):
            await backend_pid(engine)
        await backend_pid(engine)  # the pool was invalidated; the next call reconnects
    finally:
        await engine.dispose()


async def test_the_most_recently_returned_connection_is_reused_first(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as first, engine.connect() as second:
            pids = [
                (await c.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                for c in (first, second)
            ]
        # `first` was returned last: the context managers exit in reverse order.
        assert await backend_pid(engine) == pids[0]
    finally:
        await engine.dispose()


async def test_the_pool_keeps_connections_for_a_burst_of_sixteen_calls(pg_url: str) -> None:
    engine = create_engine(pg_url)
    held: list[int] = []
    all_held, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            held.append(1)
            if len(held) == 16:
                all_held.set()
            await release.wait()

    try:
        tasks = [asyncio.ensure_future(hold()) for _ in range(16)]
        await all_held.wait()
        release.set()
        await asyncio.gather(*tasks)
        # Kept for the next burst instead of closed and reopened per call.
        assert engine.sync_engine.pool.checkedin() == 16  # type: ignore[attr-defined]
        assert POOL_SIZE >= 16
    finally:
        await engine.dispose()

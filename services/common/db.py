"""SQL engines and migrations: SQLite (aiosqlite) by default, PostgreSQL (psycopg 3) in production.

Each service owns its tables and its Alembic history (services/<name>/migrations), recorded in
its own version table, so services can share one PostgreSQL database or use one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from services.common.config import normalize_database_url

log = logging.getLogger("arconv.db")

# PostgreSQL pool: room for a burst of concurrent calls without opening and closing a
# connection per call, capped at 30 connections per process (PostgreSQL's default
# max_connections is 100).
POOL_SIZE = 20
MAX_OVERFLOW = 10
# A pooled connection unused for this long is pinged before it is handed out, so one that
# the server or the network dropped meanwhile is replaced instead of failing the call. The
# pool hands out the most recently returned connection first (LIFO), so under load the same
# few connections stay busy and are never pinged.
PING_AFTER_IDLE_S = 1.0
_IDLE_SINCE = "arconv_idle_since"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(
    url: str, *, ping_after_idle_s: float = PING_AFTER_IDLE_S, **kwargs: Any
) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout.

    PostgreSQL connections are pinged on checkout only after `ping_after_idle_s` unused:
    a connection in steady use needs no extra round trip per transaction.
    """
    url = normalize_database_url(url)
    if is_sqlite(url):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", POOL_SIZE)
        kwargs.setdefault("max_overflow", MAX_OVERFLOW)
        kwargs.setdefault("pool_use_lifo", True)
    engine = create_async_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_after_idle_s)
    return engine


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """SQLAlchemy's pre-ping, but only for connections that sat in the pool `idle_s` or more.

    A failed ping that means a lost connection invalidates the pool, as pre-ping does: the
    pool reconnects and the call never sees the dead connection.
    """
    dialect: Dialect = engine.sync_engine.dialect
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "connect")
    def _fresh(_dbapi_conn: Any, record: Any) -> None:
        record.info.pop(_IDLE_SINCE, None)

    @event.listens_for(pool, "checkin")
    def _idle(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as err:
            if dialect.is_disconnect(err, dbapi_conn, None):
                raise exc.InvalidatePoolError() from err
            raise


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


class Repository:
    """The base of every SQL repository (rooms, token, avatar), and who owns a transaction.

    A repository is built on an `async_sessionmaker` and never begins or commits by itself:
    the caller, a service's use-case layer (`service.py`, or the avatar job worker), owns the
    transaction. It opens one with `async with repo.transaction() as s:` and passes the
    session as the first argument of each repository call; the rest are keyword-only. The
    block commits when it ends and rolls back on an error, so the calls inside it are one unit;
    what must happen only once they are committed (a notification, a broadcast) comes after
    the block. A race the database settles (a unique key) is settled inside the statement
    (ON CONFLICT, a compare-and-set UPDATE), never by an error that spoils the transaction.

    The rooms repository adds `reading()` and `autocommit()` beside `transaction()`, cheaper
    ways to hold a session that each of its methods says when it may use.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed at the end of the block, rolled back on error."""
        async with self._sessions.begin() as session:
            yield session


def _alembic_config(service: str, url: str) -> Any:
    from alembic.config import Config

    here = Path(__file__).resolve().parent.parent / service / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(here))
    cfg.set_main_option("sqlalchemy.url", normalize_database_url(url).replace("%", "%%"))
    cfg.attributes["version_table"] = f"alembic_version_{service}"
    return cfg


def migrate(service: str, url: str, revision: str = "head") -> list[str]:
    """Upgrades `service`'s schema to `revision` (blocking; run it in a thread from async code).

    Returns the steps applied ("0001 -> 0002", ...); empty when the schema was up to date.
    """
    from alembic import command

    url = normalize_database_url(url)
    if is_sqlite(url):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    with _quiet_alembic() as applied:
        command.upgrade(_alembic_config(service, url), revision)
    if applied:
        log.info("migrated", extra={"fields": {"service": service, "steps": "; ".join(applied)}})
    return applied


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[list[str]]:
    """Alembic's INFO lines (plugins, context, each step) kept out of the logs: yields the list
    of revisions applied, which the caller logs as one line. Warnings and errors still show."""
    applied: list[str] = []

    class _Steps(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                log.handle(record)
            elif message.startswith("Running upgrade"):
                applied.append(message.removeprefix("Running upgrade").split(",")[0].strip())

    alembic_log = logging.getLogger("alembic")
    handler = _Steps(logging.INFO)
    saved = (alembic_log.level, alembic_log.propagate)
    alembic_log.setLevel(logging.INFO)
    alembic_log.propagate = False
    alembic_log.addHandler(handler)
    try:
        yield applied
    finally:
        alembic_log.removeHandler(handler)
        alembic_log.setLevel(saved[0])
        alembic_log.propagate = saved[1]


def downgrade(service: str, url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(_alembic_config(service, url), revision)


async def migrate_async(service: str, url: str, revision: str = "head") -> list[str]:
    return await asyncio.to_thread(migrate, service, url, revision)

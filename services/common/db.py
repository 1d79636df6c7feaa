"""SQL engines and migrations: SQLite (aiosqlite) by default, PostgreSQL (psycopg 3) in production.

Each service owns its tables and its Alembic history (services/<name>/migrations), recorded in
its own version table, so services can share one PostgreSQL database or use one each.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from services.common.config import ConfigError

_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}


def normalize_database_url(url: str) -> str:
    """Rewrites known drivers to the async ones this project ships; refuses others."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"ARCONV_DATABASE_URL {url!r} is not a URL (postgresql://...)")
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        raise ConfigError(
            f"ARCONV_DATABASE_URL driver {scheme!r} is not supported; use postgresql:// or sqlite://"
        )
    return f"{driver}://{rest}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout."""
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
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(service: str, url: str) -> Any:
    from alembic.config import Config

    here = Path(__file__).resolve().parent.parent / service / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(here))
    cfg.set_main_option("sqlalchemy.url", normalize_database_url(url).replace("%", "%%"))
    cfg.attributes["version_table"] = f"alembic_version_{service}"
    return cfg


def migrate(service: str, url: str, revision: str = "head") -> None:
    """Upgrades `service`'s schema to `revision` (blocking; run it in a thread from async code)."""
    from alembic import command

    url = normalize_database_url(url)
    if is_sqlite(url):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(_alembic_config(service, url), revision)


def downgrade(service: str, url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(_alembic_config(service, url), revision)


async def migrate_async(service: str, url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate, service, url, revision)

"""The per-test PostgreSQL databases (tests.common.databases.DatabasePool): each use of a
pooled database starts empty, whatever the last use left in it or connected to it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.common.databases import DatabasePool

pytestmark = pytest.mark.postgres


@pytest.fixture
def pool(pg_admin_url: str) -> Iterator[DatabasePool]:
    pool = DatabasePool(pg_admin_url)
    yield pool
    pool.close()


def name_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def databases(admin_url: str, prefix: str) -> list[str]:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY datname",
            (prefix,),
        ).fetchall()
    return [name for (name,) in rows]


def user_objects(url: str) -> list[tuple[str, str]]:
    """Every schema, relation, type and extension a new database does not have."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT 'schema', nspname FROM pg_namespace
             WHERE nspname !~ '^pg_' AND nspname NOT IN ('information_schema', 'public')
            UNION ALL
            SELECT 'relation', n.nspname || '.' || c.relname
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
            UNION ALL
            SELECT 'type', n.nspname || '.' || t.typname
              FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
            UNION ALL
            SELECT 'extension', extname FROM pg_extension WHERE extname <> 'plpgsql'
            """
        ).fetchall()
    return sorted(rows)


def fill(url: str) -> None:
    """A bit of everything the services' migrations and a careless test could leave behind."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")
        conn.execute("CREATE TABLE rooms (seq BIGSERIAL PRIMARY KEY, mood mood NOT NULL)")
        conn.execute("CREATE INDEX ix_rooms_mood ON rooms (mood)")
        conn.execute("INSERT INTO rooms (mood) VALUES ('happy'), ('sad')")
        conn.execute("CREATE SEQUENCE tickets")
        conn.execute("CREATE SCHEMA extra")
        conn.execute("CREATE TABLE extra.notes (body text)")
        conn.execute("CREATE EXTENSION citext")


def test_a_pooled_database_is_empty_again_for_its_next_use(pool: DatabasePool) -> None:
    with pool.database() as url:
        first = name_of(url)
        assert user_objects(url) == []
        fill(url)
        assert len(user_objects(url)) >= 8
    with pool.database() as url:
        assert name_of(url) == first  # the same database, not a new one
        assert user_objects(url) == []
        with psycopg.connect(url) as conn:
            # What a new database lets everyone do: use `public`, and the owner create in it.
            conn.execute("CREATE TABLE rooms (seq BIGSERIAL PRIMARY KEY)")
            assert conn.execute("INSERT INTO rooms DEFAULT VALUES RETURNING seq").fetchone() == (1,)


def test_a_connection_left_open_does_not_hold_up_the_next_use(
    pool: DatabasePool,
) -> None:
    with pool.database() as url:
        first = name_of(url)
        left_open = psycopg.connect(url)
        left_open.execute("CREATE TABLE rooms (room_id text)")
        left_open.commit()
        # Idle in a transaction that holds a lock on the table: DROP would wait for it.
        left_open.execute("INSERT INTO rooms VALUES ('r1')")
        left_open.execute("LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE")
    try:
        with pool.database() as url:
            assert name_of(url) == first
            assert user_objects(url) == []
        with pytest.raises(psycopg.OperationalError):
            left_open.execute("SELECT 1")
    finally:
        left_open.close()


def test_a_database_that_cannot_be_emptied_is_replaced(
    pool: DatabasePool, pg_admin_url: str
) -> None:
    with pool.database() as url:
        refusing = name_of(url)
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{refusing}" ALLOW_CONNECTIONS false')
    with pool.database() as url:
        with_setting = name_of(url)
        assert with_setting != refusing
        assert user_objects(url) == []
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{with_setting}" SET work_mem = 1234')
    with pool.database() as url:
        assert name_of(url) not in (refusing, with_setting)
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW work_mem").fetchone() != ("1234kB",)
        prefix = name_of(url).rsplit("_", 1)[0]
        assert databases(pg_admin_url, prefix) == [name_of(url)]


def test_closing_the_pool_drops_its_databases(pg_admin_url: str) -> None:
    pool = DatabasePool(pg_admin_url)
    with pool.database() as a, pool.database() as b:
        assert a != b  # two at once: each has its own
    prefix = name_of(a).rsplit("_", 1)[0]
    assert databases(pg_admin_url, prefix) == sorted([name_of(a), name_of(b)])
    pool.close()
    assert databases(pg_admin_url, prefix) == []

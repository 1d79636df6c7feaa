"""Empty PostgreSQL databases for tests: a new one for a module (fresh_database), and one per
test from a pool that the tests of one process share one after another (DatabasePool)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

# What a new database has beside the system catalogs: its schemas, extensions, the `public`
# schema's owner and privileges, and nothing stored outside a schema.
_FINGERPRINT = """
SELECT (SELECT array_agg(nspname::text ORDER BY nspname) FROM pg_namespace
         WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'),
       (SELECT array_agg(extname::text ORDER BY extname) FROM pg_extension),
       (SELECT nspowner::regrole::text || ' ' || coalesce(nspacl::text, '')
          FROM pg_namespace WHERE nspname = 'public'),
       (SELECT count(*) FROM pg_largeobject_metadata)
     + (SELECT count(*) FROM pg_event_trigger)
     + (SELECT count(*) FROM pg_publication)
     + (SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
         WHERE d.datname = current_database())
"""

# The statements that make `public` again as a new database has it (PostgreSQL 15: owned by
# pg_database_owner, usable by everyone, creatable in by its owner only).
_PUBLIC_DDL = """
SELECT 1, format('CREATE SCHEMA public AUTHORIZATION %s', nspowner::regrole)
  FROM pg_namespace WHERE nspname = 'public'
UNION ALL
SELECT 2, format('GRANT %s ON SCHEMA public TO %s', string_agg(a.privilege_type, ', '),
                 CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
  FROM pg_namespace n, aclexplode(n.nspacl) a
 WHERE n.nspname = 'public' AND a.grantee <> n.nspowner
 GROUP BY a.grantee
UNION ALL
SELECT 3, format('COMMENT ON SCHEMA public IS %L', d.description)
  FROM pg_namespace n
  JOIN pg_description d ON d.objoid = n.oid AND d.classoid = 'pg_namespace'::regclass
 WHERE n.nspname = 'public'
ORDER BY 1
"""


def database_url(admin_url: str, name: str) -> str:
    """The postgresql:// URL of database `name` on the admin URL's server."""
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def create_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    """Drops the database, ending every session still connected to it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(drop.format(sql.Identifier(name)))


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the admin URL's server (its postgresql:// URL),
    dropped afterwards."""
    name = f"arconv_t_{uuid.uuid4().hex[:12]}"
    create_database(admin_url, name)
    try:
        yield database_url(admin_url, name)
    finally:
        drop_database(admin_url, name)


class DirtyDatabase(Exception):
    """A pooled database still differs from a new one after it was emptied."""


class DatabasePool:
    """Empty PostgreSQL databases, one per test, reused by the tests of one process in turn.

    CREATE DATABASE copies and syncs the template (about 60 ms here) and DROP DATABASE takes
    another 15; emptying a database that tests used takes a few milliseconds. A database is
    emptied when it is handed out again, not when it is given back: by then every fixture of
    the test that had it has finished, including servers stopped after the database fixture.
    Emptying ends every other session connected to it, drops every schema and extension and
    makes `public` again as a new database has it, then compares the database with a new one;
    a database that differs, or refuses connections, is dropped and a new one made instead.

    The names hold the pytest-xdist worker and the process id, so pools of concurrent test
    runs on one server never meet. `close` drops every database the pool made.
    """

    def __init__(self, admin_url: str) -> None:
        self._admin_url = admin_url
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self._prefix = f"arconv_t_{worker}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self._count = 0
        self._made: list[str] = []
        self._used: list[str] = []  # given back, to be emptied before the next test has one
        self._pristine: tuple[object, ...] | None = None
        self._public_ddl: list[str] = []

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """An empty database nobody else uses until the block ends (its postgresql:// URL)."""
        name = self._take()
        try:
            yield database_url(self._admin_url, name)
        finally:
            self._used.append(name)

    def close(self) -> None:
        for name in self._made:
            drop_database(self._admin_url, name)
        self._made.clear()
        self._used.clear()

    def _take(self) -> str:
        while self._used:
            name = self._used.pop()
            try:
                self._empty(name)
            except (psycopg.Error, DirtyDatabase):
                drop_database(self._admin_url, name)
                self._made.remove(name)
            else:
                return name
        return self._new()

    def _new(self) -> str:
        self._count += 1
        name = f"{self._prefix}_{self._count}"
        create_database(self._admin_url, name)
        self._made.append(name)
        if self._pristine is None:
            with psycopg.connect(database_url(self._admin_url, name)) as conn:
                self._pristine = self._fingerprint(conn)
                self._public_ddl = [ddl for _, ddl in conn.execute(_PUBLIC_DDL)]
        return name

    def _empty(self, name: str) -> None:
        with psycopg.connect(database_url(self._admin_url, name), autocommit=True) as conn:
            # A session the last test left open would hold locks the drops below wait for.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '10s'")
                extensions = conn.execute(
                    "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'"
                ).fetchall()
                drop = sql.SQL("DROP EXTENSION IF EXISTS {} CASCADE")
                for (extension,) in extensions:
                    conn.execute(drop.format(sql.Identifier(extension)))
                schemas = conn.execute(
                    "SELECT nspname FROM pg_namespace"
                    " WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'"
                ).fetchall()
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                for (schema,) in schemas:
                    conn.execute(drop.format(sql.Identifier(schema)))
                for ddl in self._public_ddl:
                    conn.execute(ddl)
                if self._fingerprint(conn) != self._pristine:
                    raise DirtyDatabase(name)

    @staticmethod
    def _fingerprint(conn: psycopg.Connection[Any]) -> tuple[object, ...]:
        row = conn.execute(_FINGERPRINT).fetchone()
        assert row is not None
        return tuple(row)

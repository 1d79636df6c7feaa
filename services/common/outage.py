"""Storage errors that mean "not now": a lost database connection becomes `Unavailable`.

The servers' errors interceptor asks `unavailable_from` about anything a handler raises that
is not a domain error, so a dropped connection is a retryable UNAVAILABLE, not a bug. The
drivers are imported when asked, so a service without SQL loads none of them.
"""

from __future__ import annotations

from services.common.errors import Unavailable

# SQLite errors that mean "not now" rather than a bug: another writer holds the lock, the
# file cannot be opened or read at the moment.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


def _is_connection_loss(exc: BaseException) -> bool:
    """True for one exception that means the database (or a socket to it) is unreachable."""
    import sqlite3

    if isinstance(exc, ConnectionError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(part in text for part in _SQLITE_TRANSIENT)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        psycopg = None  # type: ignore[assignment]
    if psycopg is not None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        # Lost or refused connections (08xxx), an administrator's shutdown or restart (57Pxx),
        # too many connections (53xxx), a cancelled statement: all transient.
        return True
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        return exc.connection_invalidated or (
            isinstance(orig, BaseException) and orig is not exc and _is_connection_loss(orig)
        )
    # The pool had no connection to give within its timeout, or one could not be made.
    return isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError)


def unavailable_from(exc: BaseException) -> Unavailable | None:
    """An `Unavailable` (retryable) for an exception that means a storage back end was lost:
    a dropped or refused database connection (psycopg, SQLAlchemy, aiosqlite), a pool timeout.
    None for anything else, which stays a bug (INTERNAL).

    The whole chain of causes is looked at, so a driver error wrapped by an adapter counts.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, Unavailable):
            return cur
        if _is_connection_loss(cur):
            return Unavailable(
                f"the database is unavailable ({type(cur).__name__}); retry",
                reason="DATABASE_UNAVAILABLE",
            )
        cur = cur.__cause__ or cur.__context__
    return None

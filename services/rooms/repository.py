"""Rooms and messages in SQL (SQLAlchemy 2 async). The caller owns the transaction
(services.common.db.Repository):

    async with repo.transaction() as session:
        room = await repo.transition(session, user_id=..., room_id=..., action=..., now=...)

`autocommit()` instead of `transaction()` saves the BEGIN and COMMIT round trips (and the ORM
session) where each statement stands alone.

Uniqueness races are settled by the database, not by reading first: a new room is inserted
unless the partial unique index on open rooms already holds one (ON CONFLICT DO NOTHING), and
a message is inserted unless the unique (room_id, idempotency_key) constraint already holds
its key (ON CONFLICT DO NOTHING on PostgreSQL; on SQLite every writing transaction begins
IMMEDIATE, holding the one write lock from its first read, so there is no race to lose),
after which the winner's row is read back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Insert,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from services.common.db import Repository, sessionmaker
from services.common.errors import Unavailable
from services.rooms.domain import (
    OPEN_STATUSES,
    Action,
    IllegalTransition,
    Message,
    MessageStatus,
    NewMessage,
    Room,
    RoomNotAccepting,
    RoomNotFound,
    RoomStatus,
    SenderType,
    accepting_statuses,
)
from services.rooms.models import OPEN_STATUSES_SQL, MessageRow, RoomRow, UtcDateTime

# What runs a statement: a session in a transaction, or a connection in autocommit.
Executor = AsyncSession | AsyncConnection

rooms = cast(Table, RoomRow.__table__)
messages = cast(Table, MessageRow.__table__)

# A room that is ended while we try to resume it frees the (user, agent) slot; try again.
_CREATE_ATTEMPTS = 5
# A room that turns accepting again between a refused append and the look at its status
# gets the append once more.
_APPEND_ATTEMPTS = 3


def _room(row: Row[Any]) -> Room:
    m = row._mapping
    return Room(
        room_id=m["room_id"],
        user_id=m["user_id"],
        agent_id=m["agent_id"],
        status=RoomStatus(m["status"]),
        create_time=m["create_time"],
        last_activity_time=m["last_activity_time"],
        end_time=m["end_time"],
    )


def _message(row: Row[Any]) -> Message:
    m = row._mapping
    return Message(
        message_id=m["message_id"],
        room_id=m["room_id"],
        sender_id=m["sender_id"],
        sender_type=SenderType(m["sender_type"]),
        content=m["content"],
        text=m["text"],
        stream_id=m["stream_id"],
        status=MessageStatus(m["status"]),
        create_time=m["create_time"],
        seq=m["seq"],
    )


def _touch(now: datetime | BindParameter[datetime]) -> ColumnElement[Any]:
    """last_activity_time moves forward only, even if clocks of replicas disagree."""
    at = now if isinstance(now, BindParameter) else literal(now, UtcDateTime())
    return case((rooms.c.last_activity_time < at, at), else_=rooms.c.last_activity_time)


def _statuses(values: frozenset[RoomStatus]) -> list[str]:
    return sorted(s.value for s in values)


# The statements of GetRoom and CreateRoom are built once, with bound parameters: building
# and cache-keying a statement per call cost more CPU than the database round trips
# (bench figure (e), CreateRoom and GetRoom calls/s).
_GET_ROOM = select(rooms).where(
    rooms.c.room_id == bindparam("p_room_id"), rooms.c.user_id == bindparam("p_user_id")
)
_RESUME_ROOM = (
    update(rooms)
    .where(
        rooms.c.user_id == bindparam("p_user_id"),
        rooms.c.agent_id == bindparam("p_agent_id"),
        text(OPEN_STATUSES_SQL),
    )
    .values(last_activity_time=_touch(bindparam("p_now", type_=UtcDateTime())))
    .returning(*rooms.c)
)


def _append_statement(allowed: frozenset[RoomStatus]) -> ReturningInsert[Any]:
    """One PostgreSQL statement that stores a new message in a room that accepts it.

    The UPDATE of the room (owned by the caller, in one of `allowed`, the key not yet stored)
    touches last_activity_time and locks the row, so a pause or end committed first makes it
    match nothing and one coming later waits for the insert; the INSERT takes the sender from
    it (p_sender_id, or the room's agent when that is NULL). No row back means: no such room,
    not accepting, or the key is stored (a retry leaves last_activity_time alone).
    """
    key_stored = exists().where(
        messages.c.room_id == bindparam("p_room_id"),
        messages.c.idempotency_key == bindparam("p_key"),
    )
    room = (
        update(rooms)
        .where(
            rooms.c.room_id == bindparam("p_room_id"),
            rooms.c.user_id == bindparam("p_user_id"),
            rooms.c.status.in_([literal(s) for s in _statuses(allowed)]),
            ~key_stored,
        )
        .values(last_activity_time=_touch(bindparam("p_now", type_=UtcDateTime())))
        .returning(rooms.c.agent_id)
        .cte("room")
    )
    values = select(
        bindparam("p_message_id", type_=String()),
        bindparam("p_room_id", type_=String()),
        func.coalesce(bindparam("p_sender_id", type_=String()), room.c.agent_id),
        bindparam("p_sender_type", type_=String()),
        bindparam("p_content", type_=String()),
        bindparam("p_text", type_=String()),
        bindparam("p_stream_id", type_=String()),
        bindparam("p_status", type_=String()),
        bindparam("p_key", type_=String()),
        bindparam("p_now", type_=UtcDateTime()),
    ).select_from(room)
    columns = [
        "message_id",
        "room_id",
        "sender_id",
        "sender_type",
        "content",
        "text",
        "stream_id",
        "status",
        "idempotency_key",
        "create_time",
    ]
    return (
        postgresql.insert(messages)
        .from_select(columns, values)
        .on_conflict_do_nothing(index_elements=[messages.c.room_id, messages.c.idempotency_key])
        .returning(*messages.c)
        .add_cte(room)
    )


# Built once for each set of statuses a message may need (see accepting_statuses).
_APPEND = {
    allowed: _append_statement(allowed)
    for allowed in {accepting_statuses(s, m) for s in SenderType for m in MessageStatus}
}
# After a refused append: the caller's room, and the message stored under the key if any.
_ROOM_AND_STORED = (
    select(rooms.c.status.label("room_status"), *messages.c)
    .select_from(
        rooms.outerjoin(
            messages,
            and_(
                messages.c.room_id == rooms.c.room_id,
                messages.c.idempotency_key == bindparam("p_key"),
            ),
        )
    )
    .where(rooms.c.room_id == bindparam("p_room_id"), rooms.c.user_id == bindparam("p_user_id"))
)


def _list_statement(*, latest: bool, after: bool) -> Select[Any]:
    """Messages of a room, only if the room is the caller's: ownership costs no round trip."""
    owned = exists().where(
        rooms.c.room_id == bindparam("p_room_id"), rooms.c.user_id == bindparam("p_user_id")
    )
    q = select(messages).where(messages.c.room_id == bindparam("p_room_id"), owned)
    if latest:
        order = [messages.c.create_time.desc(), messages.c.seq.desc()]
    else:
        order = [messages.c.create_time.asc(), messages.c.seq.asc()]
    if after:
        t = bindparam("p_after_time", type_=UtcDateTime())
        q = q.where(
            or_(
                messages.c.create_time > t,
                and_(messages.c.create_time == t, messages.c.seq > bindparam("p_after_seq")),
            )
        )
    return q.order_by(*order).limit(bindparam("p_limit", type_=Integer()))


_LIST_LATEST = _list_statement(latest=True, after=False)
_LIST_FIRST = _list_statement(latest=False, after=False)
_LIST_AFTER = _list_statement(latest=False, after=True)


def _insert_unless_open(dialect: str) -> ReturningInsert[Any]:
    """INSERT into rooms that does nothing when the user has an open room with the agent."""
    target = [rooms.c.user_id, rooms.c.agent_id]
    where = text(OPEN_STATUSES_SQL)
    if dialect == "postgresql":
        stmt: Insert = postgresql.insert(rooms).on_conflict_do_nothing(
            index_elements=target, index_where=where
        )
    else:
        stmt = sqlite.insert(rooms).on_conflict_do_nothing(index_elements=target, index_where=where)
    return stmt.returning(*rooms.c)


# An execution option that makes the SQLite engine begin a deferred transaction, which takes
# no write lock (see services.rooms.app.open_engine; bench figure (g), SQLite p99).
SQLITE_READ = "arconv_sqlite_read"


class RoomRepository(Repository):
    """Built from the engine itself, which its autocommit and SQLite read variants need."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(sessionmaker(engine))
        dialect = engine.dialect.name
        self._autocommit_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if dialect == "postgresql"
            else None
        )
        sqlite = dialect == "sqlite"
        self._read_sessions = (
            sessionmaker(engine.execution_options(**{SQLITE_READ: True})) if sqlite else None
        )
        # SQLite has one writer at a time. Writers of this process take turns here instead
        # of in SQLite's busy handler, whose sleeps (up to 100 ms each) made the tail
        # (bench figure (g), SQLite first-chunk p99).
        self._writer = asyncio.Lock() if sqlite else None
        self._insert_room = _insert_unless_open(dialect)
        self._one_statement_append = dialect == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on exit, rolled back on error."""
        if self._writer is None:
            async with self._sessions() as session, session.begin():
                yield session
            return
        async with self._writer, self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Executor]:
        """For work that only reads: `autocommit()` on PostgreSQL; on SQLite a deferred
        transaction, which neither waits for nor holds up writers (WAL)."""
        if self._read_sessions is None:
            async with self.autocommit() as conn:
                yield conn
            return
        async with self._read_sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Executor]:
        """A connection on which each statement commits on its own, for work whose statements
        each stand alone: no BEGIN and COMMIT round trips, no ORM session (bench figure
        (e), CreateRoom and GetRoom calls/s).

        On SQLite this is `transaction()`: one BEGIN IMMEDIATE transaction, as everywhere.
        """
        if self._autocommit_engine is None:
            async with self.transaction() as session:
                yield session
            return
        async with self._autocommit_engine.connect() as conn:
            yield conn

    # --- rooms -----------------------------------------------------------------------------

    async def get(self, session: Executor, *, user_id: str, room_id: str) -> Room:
        """The room if it belongs to `user_id`; RoomNotFound otherwise (same for both)."""
        row = (
            await session.execute(_GET_ROOM, {"p_room_id": room_id, "p_user_id": user_id})
        ).first()
        if row is None:
            raise RoomNotFound(room_id)
        return _room(row)

    async def create_or_resume(
        self, session: Executor, *, user_id: str, agent_id: str, now: datetime
    ) -> tuple[Room, bool]:
        """The caller's open room with the agent (resumed=True), or a new ACTIVE one.

        One statement in the common case: the insert does nothing if the open room exists.
        Each statement stands alone (a room ended in between makes the loop go round), so
        this may run in `autocommit()`.
        """
        for _ in range(_CREATE_ATTEMPTS):
            row = (
                await session.execute(
                    self._insert_room,
                    {
                        "room_id": str(uuid.uuid4()),
                        "user_id": user_id,
                        "agent_id": agent_id,
                        "status": RoomStatus.ACTIVE.value,
                        "create_time": now,
                        "last_activity_time": now,
                        "end_time": None,
                    },
                )
            ).first()
            if row is not None:
                return _room(row), False
            row = (
                await session.execute(
                    _RESUME_ROOM, {"p_user_id": user_id, "p_agent_id": agent_id, "p_now": now}
                )
            ).first()
            if row is not None:
                return _room(row), True
        raise Unavailable("the room is changing too fast; retry", reason="ROOM_CONTENDED")

    async def transition(
        self, session: AsyncSession, *, user_id: str, room_id: str, action: Action, now: datetime
    ) -> Room:
        """Applies `action` if the room is in one of its source statuses, atomically."""
        values: dict[str, Any] = {
            "status": action.target.value,
            "last_activity_time": _touch(now),
        }
        if action.target is RoomStatus.ENDED:
            values["end_time"] = now
        row = (
            await session.execute(
                update(rooms)
                .where(
                    rooms.c.room_id == room_id,
                    rooms.c.user_id == user_id,
                    rooms.c.status.in_(_statuses(action.sources)),
                )
                .values(**values)
                .returning(*rooms.c)
            )
        ).first()
        if row is not None:
            return _room(row)
        current = await self.get(session, user_id=user_id, room_id=room_id)
        raise IllegalTransition(room_id, action, current.status)

    async def list_rooms(
        self,
        session: Executor,
        *,
        user_id: str,
        include_ended: bool,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Room]:
        """The user's rooms, most recent activity first, ties by room_id; keyset-paged."""
        q = select(rooms).where(rooms.c.user_id == user_id)
        if not include_ended:
            q = q.where(rooms.c.status.in_(_statuses(OPEN_STATUSES)))
        if after is not None:
            t, rid = after
            q = q.where(
                or_(
                    rooms.c.last_activity_time < t,
                    and_(rooms.c.last_activity_time == t, rooms.c.room_id > rid),
                )
            )
        q = q.order_by(rooms.c.last_activity_time.desc(), rooms.c.room_id.asc()).limit(limit)
        return [_room(r) for r in (await session.execute(q)).all()]

    # --- messages --------------------------------------------------------------------------

    async def _message_by_key(self, session: Executor, room_id: str, key: str) -> Message | None:
        row = (
            await session.execute(
                select(messages).where(
                    messages.c.room_id == room_id, messages.c.idempotency_key == key
                )
            )
        ).first()
        return None if row is None else _message(row)

    async def append_message(
        self,
        session: Executor,
        *,
        user_id: str,
        room_id: str,
        message: NewMessage,
        now: datetime,
    ) -> tuple[Message, bool]:
        """Stores `message` once per idempotency key; a repeat returns the stored one.

        A stored key wins over the room's status: a retry after a pause or end still gets
        its message. On PostgreSQL a new message costs one statement and each statement
        stands alone, so this may run in `autocommit()`; on SQLite it reads, then writes,
        in the one transaction that `autocommit()` is there.
        """
        # One statement per new message (bench figure (a), rooms CPU per chunk).
        if self._one_statement_append:
            return await self._append_one_statement(
                session, user_id=user_id, room_id=room_id, message=message, now=now
            )
        room = await self.get(session, user_id=user_id, room_id=room_id)
        stored = await self._message_by_key(session, room_id, message.idempotency_key)
        if stored is not None:
            return stored, False
        allowed = accepting_statuses(message.sender_type, message.status)
        # Conditional on the status, so a concurrent pause or end cannot slip in between.
        touched = (
            await session.execute(
                update(rooms)
                .where(rooms.c.room_id == room_id, rooms.c.status.in_(_statuses(allowed)))
                .values(last_activity_time=_touch(now))
                .returning(rooms.c.status)
            )
        ).first()
        if touched is None:
            current = await self.get(session, user_id=user_id, room_id=room_id)
            raise RoomNotAccepting(room_id, message.sender_type, current.status)
        sender_id = user_id if message.sender_type is SenderType.HUMAN else room.agent_id
        # No race to settle: the transaction began IMMEDIATE, so it has held SQLite's one
        # write lock since before the key was looked up, and no savepoint: two statements fewer
        # while it is held (bench figure (g), SQLite first-chunk p99).
        row = (
            await session.execute(
                insert(messages)
                .values(
                    message_id=str(uuid.uuid4()),
                    room_id=room_id,
                    sender_id=sender_id,
                    sender_type=message.sender_type.value,
                    content=message.content,
                    text=message.text,
                    stream_id=message.stream_id,
                    status=message.status.value,
                    idempotency_key=message.idempotency_key,
                    create_time=now,
                )
                .returning(*messages.c)
            )
        ).one()
        return _message(row), True

    async def _append_one_statement(
        self,
        session: Executor,
        *,
        user_id: str,
        room_id: str,
        message: NewMessage,
        now: datetime,
    ) -> tuple[Message, bool]:
        """PostgreSQL: the append statement, and only when it stores nothing, a look at the
        room and the key to tell a repeat from NotFound and RoomNotAccepting."""
        allowed = accepting_statuses(message.sender_type, message.status)
        params = {
            "p_message_id": str(uuid.uuid4()),
            "p_room_id": room_id,
            "p_user_id": user_id,
            "p_sender_id": user_id if message.sender_type is SenderType.HUMAN else None,
            "p_sender_type": message.sender_type.value,
            "p_content": message.content,
            "p_text": message.text,
            "p_stream_id": message.stream_id,
            "p_status": message.status.value,
            "p_key": message.idempotency_key,
            "p_now": now,
        }
        lookup = {"p_room_id": room_id, "p_user_id": user_id, "p_key": message.idempotency_key}
        for _ in range(_APPEND_ATTEMPTS):
            row = (await session.execute(_APPEND[allowed], params)).first()
            if row is not None:
                return _message(row), True
            found = (await session.execute(_ROOM_AND_STORED, lookup)).first()
            if found is None:
                raise RoomNotFound(room_id)
            if found._mapping["message_id"] is not None:
                return _message(found), False
            current = RoomStatus(found._mapping["room_status"])
            if current not in allowed:
                raise RoomNotAccepting(room_id, message.sender_type, current)
        # The status kept changing between the two statements: refused, as the last try was.
        raise RoomNotAccepting(room_id, message.sender_type, current)

    async def list_messages(
        self,
        session: Executor,
        *,
        user_id: str,
        room_id: str,
        limit: int,
        after: tuple[datetime, int] | None,
        latest: bool,
    ) -> list[Message]:
        """Messages oldest first; `latest` takes the newest `limit` (still oldest first).

        One statement unless it finds nothing, when a second tells an empty room from
        RoomNotFound; each stands alone, so this may run in `autocommit()`.
        """
        params: dict[str, Any] = {"p_room_id": room_id, "p_user_id": user_id, "p_limit": limit}
        if latest:
            q = _LIST_LATEST
        elif after is None:
            q = _LIST_FIRST
        else:
            q = _LIST_AFTER
            params["p_after_time"], params["p_after_seq"] = after
        found = [_message(r) for r in (await session.execute(q, params)).all()]
        if not found:
            await self.get(session, user_id=user_id, room_id=room_id)
        return found[::-1] if latest else found

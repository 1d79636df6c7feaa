"""The rooms use cases: what each RPC does, in terms of the repository and collaborators.

No gRPC and no SQL here; the servicer validates and maps, the repository stores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from services.common.errors import InvalidArgument
from services.common.paging import Pages
from services.rooms.agents import AgentDirectory
from services.rooms.domain import (
    MESSAGES_PAGE_DEFAULT,
    MESSAGES_PAGE_MAX,
    ROOMS_PAGE_DEFAULT,
    ROOMS_PAGE_MAX,
    Action,
    AgentSummary,
    Message,
    NewMessage,
    Room,
)
from services.rooms.notifier import RoomNotifier
from services.rooms.repository import RoomRepository

log = logging.getLogger("arconv.rooms")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _to_us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class Rooms:
    """Create-or-resume, state changes with notification, listings, and message history."""

    def __init__(
        self,
        *,
        repo: RoomRepository,
        agents: AgentDirectory,
        notifier: RoomNotifier,
        page_secret: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._repo = repo
        self._agents = agents
        self._notifier = notifier
        self._room_pages = Pages(
            page_secret, "rooms", default=ROOMS_PAGE_DEFAULT, maximum=ROOMS_PAGE_MAX
        )
        self._message_pages = Pages(
            page_secret, "messages", default=MESSAGES_PAGE_DEFAULT, maximum=MESSAGES_PAGE_MAX
        )
        self._clock = clock

    async def create(self, *, user_id: str, agent_id: str) -> tuple[Room, bool]:
        """The user's open room with the agent, or a new one; (room, resumed)."""
        # Before any write: an unknown agent or an unreachable avatar service creates nothing.
        await self._agents.require_agent(agent_id)
        async with self._repo.autocommit() as s:
            room, resumed = await self._repo.create_or_resume(
                s, user_id=user_id, agent_id=agent_id, now=self._clock()
            )
        log.info(
            "room resumed" if resumed else "room created",
            extra={"fields": {"room_id": room.room_id, "agent_id": agent_id}},
        )
        return room, resumed

    async def get(self, *, user_id: str, room_id: str) -> tuple[Room, AgentSummary]:
        async with self._repo.reading() as s:
            room = await self._repo.get(s, user_id=user_id, room_id=room_id)
        return room, await self._agents.summary(room.agent_id)

    async def list_rooms(
        self, *, user_id: str, page_size: int, page_token: str, include_ended: bool
    ) -> tuple[list[Room], str]:
        size = self._room_pages.size(page_size)
        query = {"include_ended": include_ended}
        cursor = self._room_pages.cursor(page_token, user_id=user_id, query=query, types=(int, str))
        after = None if cursor is None else (_from_us(cursor[0]), cursor[1])
        async with self._repo.reading() as s:
            found = await self._repo.list_rooms(
                s, user_id=user_id, include_ended=include_ended, limit=size + 1, after=after
            )
        return self._room_pages.page(
            found,
            size=size,
            user_id=user_id,
            query=query,
            cursor_of=lambda r: [_to_us(r.last_activity_time), r.room_id],
        )

    async def change(self, *, user_id: str, room_id: str, action: Action) -> Room:
        """Pause, resume or end; the mesh hears of it once the change is committed."""
        async with self._repo.transaction() as s:
            room = await self._repo.transition(
                s, user_id=user_id, room_id=room_id, action=action, now=self._clock()
            )
        log.info(
            "room state changed",
            extra={"fields": {"room_id": room_id, "status": room.status.value}},
        )
        await self._notifier.state_changed(room)
        return room

    async def messages(
        self, *, user_id: str, room_id: str, page_size: int, page_token: str, latest: bool
    ) -> tuple[list[Message], str]:
        size = self._message_pages.size(page_size)
        if latest and page_token:
            raise InvalidArgument(
                "page_token cannot be combined with latest",
                violations=[("page_token", "must be empty when latest is true")],
            )
        query = {"room_id": room_id}
        cursor = self._message_pages.cursor(
            page_token, user_id=user_id, query=query, types=(int, int)
        )
        after = None if cursor is None else (_from_us(cursor[0]), cursor[1])
        async with self._repo.reading() as s:
            found = await self._repo.list_messages(
                s,
                user_id=user_id,
                room_id=room_id,
                limit=size if latest else size + 1,
                after=after,
                latest=latest,
            )
        if latest:
            return found, ""
        return self._message_pages.page(
            found,
            size=size,
            user_id=user_id,
            query=query,
            cursor_of=lambda m: [_to_us(m.create_time), m.seq],
        )

    async def append(
        self, *, user_id: str, room_id: str, message: NewMessage
    ) -> tuple[Message, bool]:
        async with self._repo.autocommit() as s:
            return await self._repo.append_message(
                s, user_id=user_id, room_id=room_id, message=message, now=self._clock()
            )

"""A message sent as soon as the previous reply ended starts its reply at once.

The previous reply publishes stream_ended and only then releases the room, so the next
reply may find the room still held by a reply whose stream_ended is already in the log.
It must not wait for an event that has already been published.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import pytest
from arconv.stream.v1 import stream_service_pb2 as pb

from services.common.bus import Bus, BusEvent, InProcessBus
from services.common.errors import DomainError
from services.common.kv import InProcessKV
from services.common.redis_bus import RedisBus
from services.llm.persona import PersonaProvider
from services.stream.core import ConversationCore
from services.stream.ports import (
    MessageStatus,
    Persona,
    RoomInfo,
    RoomStatus,
    Sender,
    StoredMessage,
)
from services.stream.state import CoreConfig


class MemoryRooms:
    def __init__(self) -> None:
        self.messages: dict[str, list[StoredMessage]] = {}

    async def get_room(self, user_id: str, room_id: str) -> RoomInfo:
        return RoomInfo(room_id, user_id, "nova", RoomStatus.ACTIVE)

    async def append_message(
        self,
        user_id: str,
        room_id: str,
        *,
        sender: Sender,
        content: str,
        idempotency_key: str,
        text: str = "",
        stream_id: str = "",
        status: MessageStatus = MessageStatus.COMPLETE,
    ) -> tuple[StoredMessage, bool]:
        message = StoredMessage(uuid.uuid4().hex, sender, content, text, stream_id, status)
        self.messages.setdefault(room_id, []).append(message)
        return message, True

    async def recent_messages(
        self, user_id: str, room_id: str, limit: int
    ) -> Sequence[StoredMessage]:
        return self.messages.get(room_id, [])[-limit:]


class Agents:
    async def get_persona(self, user_id: str, agent_id: str) -> Persona:
        return Persona(agent_id, "Nova", "You are Nova.", "")


class WaitRecordingBus:
    """A bus that records how long each blocking read was allowed to wait."""

    def __init__(self, inner: Bus) -> None:
        self._inner = inner
        self.waits: list[float] = []

    async def read(
        self, room: str, after_id: int, *, limit: int = 256, block_s: float | None = None
    ) -> list[BusEvent]:
        if block_s:
            self.waits.append(block_s)
        return await self._inner.read(room, after_id, limit=limit, block_s=block_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        b: Bus = InProcessBus()
    else:
        b = RedisBus(
            request.getfixturevalue("redis_base_url"),
            prefix=request.getfixturevalue("redis_prefix"),
        )
    yield b
    await b.close()


async def _abort(err: DomainError) -> None:
    raise AssertionError(f"unexpected abort: {err}")


async def test_back_to_back_messages_do_not_wait_for_a_published_end(bus: Bus) -> None:
    recording = WaitRecordingBus(bus)
    rooms = MemoryRooms()
    core = ConversationCore(
        bus=cast(Bus, recording),
        kv=InProcessKV(),
        rooms=rooms,
        agents=Agents(),
        provider=PersonaProvider(0.0),
        config=CoreConfig(messages_per_minute=1000),
    )
    room = f"room-{uuid.uuid4().hex[:8]}"
    session, _ = await core.join("alice", room, 0, _abort)
    await session.start()
    events = session.events()
    ended = []
    try:
        for turn in range(10):
            await core.send_message(
                "alice", room, f"Tell me more {turn}", f"c{turn}", session=session
            )
            while True:
                event = pb.ConverseResponse.FromString(await anext(events))
                if event.HasField("stream_ended"):
                    ended.append(event.stream_ended.reason)
                    break
    finally:
        await core.leave(session)
        await core.aclose()

    assert ended == [pb.STREAM_END_REASON_COMPLETED] * 10, "no reply was cut short"
    agent = [m for m in rooms.messages[room] if m.sender is Sender.AGENT]
    assert len(agent) == 10
    # Each wait for the room to be released starts short and doubles; a reply that waited
    # on the log for a second per turn (the old behaviour) would add up to about 10 s.
    assert sum(recording.waits) < 1.0, recording.waits

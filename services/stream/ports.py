"""What the conversation core needs from other services: rooms and agents, as small interfaces.

The gRPC adapters live in `services.stream.clients`; tests may pass their own. Every call acts
for a user: the rooms and avatar services apply their own ownership rules to that user.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class RoomStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    ENDED = "ENDED"


class Sender(enum.StrEnum):
    HUMAN = "HUMAN"
    AGENT = "AGENT"


class MessageStatus(enum.StrEnum):
    COMPLETE = "COMPLETE"
    INTERRUPTED = "INTERRUPTED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room_id: str
    user_id: str
    agent_id: str
    status: RoomStatus


@dataclass(frozen=True, slots=True)
class StoredMessage:
    message_id: str
    sender: Sender
    content: str
    text: str
    stream_id: str = ""
    status: MessageStatus = MessageStatus.COMPLETE


@dataclass(frozen=True, slots=True)
class Persona:
    """The agent as the LLM sees it."""

    agent_id: str
    name: str
    system_prompt: str
    model: str


class Rooms(Protocol):
    """The rooms service, acting for `user_id`.

    Raises `NotFound` for a room of another user, `FailedPrecondition` for a state the
    operation does not allow, `Unavailable` when the service cannot be reached.
    """

    async def get_room(self, user_id: str, room_id: str) -> RoomInfo: ...

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
        """Stores a message; returns it and whether it was created (False: a retry)."""
        ...

    async def recent_messages(
        self, user_id: str, room_id: str, limit: int
    ) -> Sequence[StoredMessage]:
        """The newest `limit` messages, oldest first."""
        ...

    async def pause_room(self, user_id: str, room_id: str) -> RoomStatus: ...

    async def resume_room(self, user_id: str, room_id: str) -> RoomStatus: ...


class Agents(Protocol):
    """The avatar service's agent profiles, acting for `user_id`."""

    async def get_persona(self, user_id: str, agent_id: str) -> Persona: ...

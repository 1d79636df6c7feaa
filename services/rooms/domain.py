"""Room rules: statuses and their transitions, input validation, domain records and errors.

Nothing here knows about gRPC or SQL.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.common import ids
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

MAX_CONTENT_CHARS = 4000
MAX_STREAM_ID_CHARS = ids.MAX_STREAM_ID_CHARS
MAX_IDEMPOTENCY_KEY_CHARS = 128
ROOMS_PAGE_DEFAULT, ROOMS_PAGE_MAX = 20, 100
MESSAGES_PAGE_DEFAULT, MESSAGES_PAGE_MAX = 50, 200

_PRINTABLE_KEY = re.compile(r"[\x21-\x7e]+")
# C0 controls other than tab, line feed and carriage return: PostgreSQL refuses NUL in text,
# and the stream service refuses or strips all of them before a message gets here.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


class RoomStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    ENDED = "ENDED"


OPEN_STATUSES = frozenset({RoomStatus.ACTIVE, RoomStatus.PAUSED})


class SenderType(enum.StrEnum):
    HUMAN = "HUMAN"
    AGENT = "AGENT"


class MessageStatus(enum.StrEnum):
    COMPLETE = "COMPLETE"
    INTERRUPTED = "INTERRUPTED"
    FAILED = "FAILED"


class Action(enum.Enum):
    """A state change a user asks for: which statuses it leaves from, and where it goes."""

    PAUSE = (frozenset({RoomStatus.ACTIVE}), RoomStatus.PAUSED)
    RESUME = (frozenset({RoomStatus.PAUSED}), RoomStatus.ACTIVE)
    END = (frozenset({RoomStatus.ACTIVE, RoomStatus.PAUSED}), RoomStatus.ENDED)

    @property
    def sources(self) -> frozenset[RoomStatus]:
        return self.value[0]

    @property
    def target(self) -> RoomStatus:
        return self.value[1]


def accepting_statuses(
    sender: SenderType, status: MessageStatus = MessageStatus.COMPLETE
) -> frozenset[RoomStatus]:
    """Statuses in which a room accepts a message from `sender`.

    An agent reply may finish just as the person pauses, so AGENT messages are accepted
    while PAUSED; a reply cut short because the room ended (INTERRUPTED or FAILED) is
    still stored in the ENDED room, so the history keeps what the person heard. A person
    speaks only into an ACTIVE room.
    """
    if sender is SenderType.HUMAN:
        return frozenset({RoomStatus.ACTIVE})
    if status is MessageStatus.COMPLETE:
        return OPEN_STATUSES
    return OPEN_STATUSES | {RoomStatus.ENDED}


@dataclass(frozen=True, slots=True)
class Room:
    room_id: str
    user_id: str
    agent_id: str
    status: RoomStatus
    create_time: datetime
    last_activity_time: datetime
    end_time: datetime | None


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    room_id: str
    sender_id: str
    sender_type: SenderType
    content: str
    text: str
    stream_id: str
    status: MessageStatus
    create_time: datetime
    seq: int


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A validated AppendMessage request."""

    sender_type: SenderType
    content: str
    text: str
    stream_id: str
    status: MessageStatus
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class AgentSummary:
    agent_id: str
    name: str = ""
    avatar_status: str = ""  # an AvatarStatus enum name, "" when there is no avatar
    avatar_url: str = ""
    unavailable: bool = False


# --- errors ----------------------------------------------------------------------------------


class RoomNotFound(NotFound):
    """The room does not exist or is someone else's: one message for both (no existence leak)."""

    def __init__(self, room_id: str) -> None:
        super().__init__("room", room_id)


class AgentNotFound(NotFound):
    def __init__(self, agent_id: str) -> None:
        super().__init__("agent", agent_id)


class AvatarServiceUnavailable(Unavailable):
    def __init__(self, why: str) -> None:
        super().__init__(
            f"the avatar service cannot be reached ({why}); retry later",
            retry_after_s=1.0,
            reason="AVATAR_SERVICE_UNAVAILABLE",
        )


class IllegalTransition(FailedPrecondition):
    def __init__(self, room_id: str, action: Action, current: RoomStatus) -> None:
        allowed = " or ".join(sorted(s.value for s in action.sources))
        super().__init__(
            f"cannot {action.name.lower()} room {room_id!r}: it is {current.value}, not {allowed}",
            reason="ILLEGAL_TRANSITION",
            metadata={"status": status_name(current), "room_id": room_id},
            subject=f"room/{room_id}",
        )
        self.current = current


class RoomNotAccepting(FailedPrecondition):
    def __init__(self, room_id: str, sender: SenderType, current: RoomStatus) -> None:
        super().__init__(
            f"room {room_id!r} is {current.value}; it does not accept {sender.value} messages",
            reason="ROOM_NOT_ACCEPTING_MESSAGES",
            metadata={"status": status_name(current), "room_id": room_id},
            subject=f"room/{room_id}",
        )
        self.current = current


def status_name(status: RoomStatus) -> str:
    """The proto enum name of a status ("ROOM_STATUS_PAUSED"), as put in error details."""
    return f"ROOM_STATUS_{status.value}"


# --- validation ------------------------------------------------------------------------------


validate_agent_id = ids.agent_id
validate_room_id = ids.room_id


_NO_CONTROL = "no control characters other than tab, line feed and carriage return"


def validate_new_message(
    *,
    sender_type: SenderType | None,
    content: str,
    text: str,
    stream_id: str,
    status: MessageStatus | None,
    idempotency_key: str,
    strip: Callable[[str], str],
) -> NewMessage:
    """Checks an AppendMessage request; derives `text` from `content` when it is empty."""
    violations: list[tuple[str, str]] = []
    if sender_type is None:
        violations.append(("sender_type", "SENDER_TYPE_HUMAN or SENDER_TYPE_AGENT"))
    # An AGENT reply that ended before any text (its replica lost the bus, or it could not
    # start) is still stored, empty, so the history shows how the turn ended.
    ended_early = sender_type is SenderType.AGENT and status not in (None, MessageStatus.COMPLETE)
    if not content and not ended_early:
        violations.append(("content", "required"))
    elif len(content) > MAX_CONTENT_CHARS:
        violations.append(("content", f"at most {MAX_CONTENT_CHARS} characters"))
    elif _CONTROL.search(content):
        violations.append(("content", _NO_CONTROL))
    if len(text) > MAX_CONTENT_CHARS:
        violations.append(("text", f"at most {MAX_CONTENT_CHARS} characters"))
    elif _CONTROL.search(text):
        violations.append(("text", _NO_CONTROL))
    if len(stream_id) > MAX_STREAM_ID_CHARS or (stream_id and not stream_id.isprintable()):
        violations.append(("stream_id", f"at most {MAX_STREAM_ID_CHARS} printable characters"))
    if status is None:
        violations.append(("status", "a MessageStatus value"))
    elif sender_type is SenderType.HUMAN and status is not MessageStatus.COMPLETE:
        violations.append(("status", "HUMAN messages are always COMPLETE"))
    if not idempotency_key:
        violations.append(("idempotency_key", "required"))
    elif len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS or not _PRINTABLE_KEY.fullmatch(
        idempotency_key
    ):
        violations.append(
            ("idempotency_key", f"1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters")
        )
    if violations:
        raise InvalidArgument(
            "invalid message: " + "; ".join(f"{f}: {d}" for f, d in violations),
            violations=violations,
        )
    assert sender_type is not None and status is not None
    return NewMessage(
        sender_type=sender_type,
        content=content,
        text=text or strip(content),
        stream_id=stream_id,
        status=status,
        idempotency_key=idempotency_key,
    )

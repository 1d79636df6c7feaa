"""Token rules: operations, claims, deny reasons, plans and quota windows (no gRPC, no SQL)."""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.common import ids
from services.common.errors import FailedPrecondition, InvalidArgument

OPERATIONS = ("tts.synthesize", "tts.viseme_stream")
# A longer list is refused as a whole, before each entry is looked at (one violation, not one
# per entry).
MAX_OPERATIONS = 10
MAX_TOKEN_CHARS = 8192
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Reason(enum.StrEnum):
    """Why VerifyProviderToken refused a token (machine-readable, stable)."""

    INVALID = "INVALID"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    SCOPE = "SCOPE"
    VOICE = "VOICE"
    INPUT_TOO_LONG = "INPUT_TOO_LONG"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"


class Action(enum.StrEnum):
    """What an audit row records."""

    ISSUE = "issue"
    REFRESH = "refresh"
    REVOKE = "revoke"
    REVOKE_ROOM = "revoke_room"
    VERIFY_DENIED = "verify_denied"


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    daily_characters: int
    requests_per_token_per_hour: int


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified contents of a provider token."""

    token_id: str
    user_id: str
    room_id: str
    agent_id: str
    provider: str
    voice_id: str
    operations: tuple[str, ...]
    max_input_length: int
    issued_at: int
    expires_at: int

    @property
    def scope(self) -> str:
        return " ".join(self.operations)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a new token is bound to (before it has an id and times)."""

    user_id: str
    room_id: str
    agent_id: str
    provider: str
    voice_id: str
    operations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """VerifyProviderToken's answer. `claims` is set whenever the signature was valid."""

    reason: Reason | None
    claims: Claims | None = None
    quota_remaining: int = 0
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.reason is None


def validate_operations(ops: Sequence[str]) -> tuple[str, ...]:
    """The requested operations, or INVALID_ARGUMENT with one violation per bad entry."""
    if not ops:
        raise InvalidArgument(
            "operations is empty; request one or more of " + ", ".join(OPERATIONS),
            violations=[("operations", f"one or more of {', '.join(OPERATIONS)}")],
        )
    if len(ops) > MAX_OPERATIONS:
        raise InvalidArgument(
            f"operations has {len(ops)} entries; at most {MAX_OPERATIONS}, each operation once",
            violations=[("operations", f"at most {MAX_OPERATIONS} entries")],
        )
    violations: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, op in enumerate(ops):
        if op not in OPERATIONS:
            violations.append(
                (f"operations[{i}]", f"unknown operation; use {' or '.join(OPERATIONS)}")
            )
        elif op in seen:
            violations.append((f"operations[{i}]", f"{op!r} is listed twice"))
        seen.add(op)
    if violations:
        raise InvalidArgument("operations are invalid", violations=violations)
    return tuple(ops)


def parse_scope(scope: object) -> tuple[str, ...] | None:
    """A token's scope claim as operations, or None if it is not a valid scope."""
    if not isinstance(scope, str) or not scope:
        return None
    ops = scope.split(" ")
    if len(set(ops)) != len(ops) or any(op not in OPERATIONS for op in ops):
        return None
    return tuple(ops)


validate_room_id = ids.room_id


def validate_token_id(token_id: str) -> str:
    if not token_id:
        raise InvalidArgument("token_id is required", violations=[("token_id", "required")])
    if not _TOKEN_ID.fullmatch(token_id):
        raise InvalidArgument(
            "token_id is malformed", violations=[("token_id", "1-64 characters of [A-Za-z0-9_-]")]
        )
    return token_id


def validate_token_text(token: str, field: str = "token") -> str:
    if not token:
        raise InvalidArgument(f"{field} is required", violations=[(field, "required")])
    return token


def refresh_refusal(reason: Reason) -> FailedPrecondition:
    """RefreshProviderToken's error for a token that cannot be refreshed any more."""
    what = {Reason.EXPIRED: "expired or not yet valid", Reason.REVOKED: "revoked"}[reason]
    return FailedPrecondition(
        f"the token is {what}; issue a new one",
        reason=f"TOKEN_{reason.value}",
        subject="token",
    )


def refresh_after(issued_at: int, expires_at: int) -> int:
    """When a client should refresh: 80% into the lifetime."""
    return issued_at + (expires_at - issued_at) * 4 // 5


def day_window(now: float) -> tuple[str, datetime]:
    """The UTC day of `now` (the quota window's name) and when it resets (next UTC midnight)."""
    return _day(int(now // 86_400))


@functools.lru_cache(maxsize=4)
def _day(day: int) -> tuple[str, datetime]:
    # Every request of a day asks for the same window: worked out once per day (bench
    # figure (e), IssueProviderToken calls/s).
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)
    return start.strftime("%Y-%m-%d"), start + timedelta(days=1)


def quota_warning(used: int, limit: int) -> bool:
    """True at or past 80% of the quota."""
    return limit > 0 and used * 5 >= limit * 4

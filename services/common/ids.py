"""The shapes of the ids clients send, checked before any storage sees them.

An id that is not of its kind's shape is INVALID_ARGUMENT at once: no database query, Redis
key or log line is ever built from a malformed (or megabytes long) id.
"""

from __future__ import annotations

import re
import uuid

from services.common.errors import InvalidArgument

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_STREAM_ID_CHARS = 128
_STREAM_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_STREAM_ID_CHARS}}}")


def _required(field: str) -> InvalidArgument:
    return InvalidArgument(f"{field} is required", violations=[(field, "required")])


def room_id(value: str, field: str = "room_id") -> str:
    """The canonical (lower-case) form of a UUID room id, or INVALID_ARGUMENT."""
    if not value:
        raise _required(field)
    if not _UUID.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be a UUID (8-4-4-4-12 hex digits)", violations=[(field, "not a UUID")]
        )
    return str(uuid.UUID(value))


def agent_id(value: str, field: str = "agent_id") -> str:
    """The id, or INVALID_ARGUMENT naming the field."""
    if not value:
        raise _required(field)
    if not AGENT_ID.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be 1 to 64 characters of [a-z0-9_-], starting with a letter or digit",
            violations=[(field, "1 to 64 characters of [a-z0-9_-], starting with [a-z0-9]")],
        )
    return value


def stream_id(value: str, field: str = "stream_id", *, required: bool = True) -> str:
    """A reply's id (as the stream service made it): 1 to 128 printable ASCII characters.
    Empty is allowed where `required` is False."""
    if not value:
        if required:
            raise _required(field)
        return value
    if not _STREAM_ID.fullmatch(value):
        raise InvalidArgument(
            f"{field} is not a reply id: at most {MAX_STREAM_ID_CHARS} printable ASCII characters",
            violations=[(field, f"1 to {MAX_STREAM_ID_CHARS} printable ASCII characters")],
        )
    return value

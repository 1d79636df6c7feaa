"""One error vocabulary: the domain errors every service raises.

Each error says what went wrong as its `kind` (one of `ErrorKind`) and a stable `reason`,
with the facts a client needs (the fields at fault, the missing resource, when to retry).
Nothing here knows about gRPC: `services.common.status` is the one translation to a gRPC
status with google.rpc details, applied by the server's errors interceptor and by the
stream servicer to end a call from outside its handler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import ClassVar

# Error trailers stay small whatever the request held: at most this many field violations
# (the last one says how many more there were), and every text clipped. A client's input can
# reach a message, a violation or a resource name, so none of them grows with it.
MAX_VIOLATIONS = 20
MAX_MESSAGE_CHARS = 1000
MAX_DETAIL_CHARS = 200


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text`, or its first `limit` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ErrorKind(StrEnum):
    """What kind of failure an error is, from the client's side. The names are gRPC's
    canonical codes, which every edge maps from (a status at the servicer boundary, an HTTP
    status in the voice service's OpenAI-compatible route)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    DATA_LOSS = "DATA_LOSS"
    INTERNAL = "INTERNAL"


class DomainError(Exception):
    """Base of every error that reaches a client. `reason` is a stable UPPER_SNAKE code: the
    one given, else the class's `reason`, else the name of its kind."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL
    reason: str = ""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason if reason is not None else self.reason or self.kind.value
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    """The request is malformed; `violations` are (field, description) pairs."""

    kind = ErrorKind.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[tuple[str, str]] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = list(violations)


class NotFound(DomainError):
    """No `resource_type` named `name` (for this caller)."""

    kind = ErrorKind.NOT_FOUND

    def __init__(self, resource_type: str, name: str, message: str | None = None) -> None:
        super().__init__(message or f"{resource_type} {name!r} not found")
        self.resource_type = resource_type
        self.name = name


class FailedPrecondition(DomainError):
    """The system is not in a state the request needs; `subject` is what is in the way."""

    kind = ErrorKind.FAILED_PRECONDITION

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.subject = subject


class PermissionDenied(DomainError):
    kind = ErrorKind.PERMISSION_DENIED


class Unauthenticated(DomainError):
    kind = ErrorKind.UNAUTHENTICATED


class AlreadyExists(DomainError):
    kind = ErrorKind.ALREADY_EXISTS


class OutOfRange(DomainError):
    kind = ErrorKind.OUT_OF_RANGE


class ResourceExhausted(DomainError):
    """A quota or limit on `subject` is used up; `retry_after_s` when it frees up by itself."""

    kind = ErrorKind.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        *,
        subject: str = "",
        retry_after_s: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.subject = subject
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    """A dependency cannot be reached; the client may retry after `retry_after_s`."""

    kind = ErrorKind.UNAVAILABLE

    def __init__(self, message: str, *, retry_after_s: float = 1.0, reason: str | None = None):
        super().__init__(message, reason=reason, metadata={"retryable": "true"})
        self.retry_after_s = retry_after_s


class DeadlineExceeded(DomainError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class Unimplemented(DomainError):
    kind = ErrorKind.UNIMPLEMENTED


class DataLoss(DomainError):
    kind = ErrorKind.DATA_LOSS


class Internal(DomainError):
    kind = ErrorKind.INTERNAL

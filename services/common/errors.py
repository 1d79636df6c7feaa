"""One error vocabulary: domain errors, and their translation to gRPC status with details.

Domain code raises `DomainError` subclasses; `to_status` turns one into a gRPC status with a
`google.rpc.Status` of details (grpcio-status). The server's errors interceptor applies it to
whatever a handler, auth or request decoding raises, and the stream servicer to end a call
from outside its handler; the only status built elsewhere is the edge's fixed refusal of
internal services (envoy/envoy.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "arconv.dev"

# Error trailers stay small whatever the request held: at most this many field violations
# (the last one says how many more there were), and every text clipped. A client's input can
# reach a message, a violation or a resource name, so none of them grows with it.
MAX_VIOLATIONS = 20
MAX_MESSAGE_CHARS = 1000
MAX_DETAIL_CHARS = 200


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text`, or its first `limit` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DomainError(Exception):
    """Base of every error that reaches a client. `reason` is a stable UPPER_SNAKE code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[object]:
        """The google.rpc detail messages attached to the status."""
        return [
            error_details_pb2.ErrorInfo(
                reason=self.reason,
                domain=DOMAIN,
                metadata={clip(k): clip(v) for k, v in self.metadata.items()},
            )
        ]


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[tuple[str, str]] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = list(violations)

    def details(self) -> list[object]:
        out = super().details()
        if self.violations:
            shown = self.violations[:MAX_VIOLATIONS]
            more = len(self.violations) - len(shown)
            if more:
                shown = [*shown[:-1], ("", f"and {more + 1} more violations not listed")]
            out.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=clip(f), description=clip(d)
                        )
                        for f, d in shown
                    ]
                )
            )
        return out


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, name: str, message: str | None = None) -> None:
        super().__init__(message or f"{resource_type} {name!r} not found")
        self.resource_type = resource_type
        self.name = name

    def details(self) -> list[object]:
        return [
            *super().details(),
            error_details_pb2.ResourceInfo(
                resource_type=self.resource_type, resource_name=clip(self.name)
            ),
        ]


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"

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

    def details(self) -> list[object]:
        return [
            *super().details(),
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=self.reason,
                        subject=clip(self.subject),
                        description=clip(self.message, MAX_MESSAGE_CHARS),
                    )
                ]
            ),
        ]


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class OutOfRange(DomainError):
    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "OUT_OF_RANGE"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"

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

    def details(self) -> list[object]:
        out = super().details()
        out.append(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=clip(self.subject),
                        description=clip(self.message, MAX_MESSAGE_CHARS),
                    )
                ]
            )
        )
        if self.retry_after_s is not None:
            out.append(_retry_info(self.retry_after_s))
        return out


class Unavailable(DomainError):
    """A dependency cannot be reached; the client may retry (RetryInfo detail)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, reason: str | None = None):
        super().__init__(message, reason=reason, metadata={"retryable": "true"})
        self.retry_after_s = retry_after_s

    def details(self) -> list[object]:
        return [*super().details(), _retry_info(self.retry_after_s)]


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unimplemented(DomainError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class Internal(DomainError):
    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"


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


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    whole = int(seconds)
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    )


def to_status(err: DomainError) -> grpc.Status:
    """The gRPC status (code, message, google.rpc.Status details) for a domain error."""
    packed = []
    for d in err.details():
        a = any_pb2.Any()
        a.Pack(d)  # type: ignore[arg-type]
        packed.append(a)
    st = status_pb2.Status(
        code=_code_value(err.code), message=clip(err.message, MAX_MESSAGE_CHARS), details=packed
    )
    return rpc_status.to_status(st)


def _code_value(code: grpc.StatusCode) -> int:
    value = code.value[0]
    assert isinstance(value, int)
    return value


def status_details(err: grpc.aio.AioRpcError | grpc.RpcError) -> list[object]:
    """Decodes the google.rpc details of a received error (for clients and tests)."""
    st = rpc_status.from_call(err)  # type: ignore[arg-type]
    if st is None:
        return []
    out: list[object] = []
    for a in st.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.QuotaFailure,
            error_details_pb2.RetryInfo,
        ):
            if a.Is(cls.DESCRIPTOR):
                m = cls()
                a.Unpack(m)
                out.append(m)
    return out


CODE_NAMES: dict[int, str] = {v: k for k, v in code_pb2.Code.items()}

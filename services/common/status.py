"""The one translation of domain errors to gRPC: a status code, a message and a
`google.rpc.Status` of details (grpcio-status).

The server's errors interceptor ends a call with `abort` for whatever a handler, auth or
request decoding raises, and the stream servicer a call from outside its handler; the stream
protocol's in-band errors carry `code_value`. The only status built elsewhere is the edge's
fixed refusal of internal services (envoy/envoy.yaml). `status_details` reads the details of
a received error back (for adapters of other services, and tests).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common.errors import (
    MAX_MESSAGE_CHARS,
    MAX_VIOLATIONS,
    DomainError,
    ErrorKind,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    clip,
)

DOMAIN = "arconv.dev"

_CODES: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.DATA_LOSS: grpc.StatusCode.DATA_LOSS,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


# What a call to another service may end with that means "not now" rather than "no": an
# adapter reports its dependency unavailable (retryable) for these.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)


def grpc_code(err: DomainError) -> grpc.StatusCode:
    """The gRPC status code of a domain error."""
    return _CODES[err.kind]


def code_value(err: DomainError) -> int:
    """The status code as its number (google.rpc.Code), as the stream's in-band errors carry it."""
    value = grpc_code(err).value[0]
    assert isinstance(value, int)
    return value


def details(err: DomainError) -> list[Message]:
    """The google.rpc detail messages of a domain error's status: always an ErrorInfo, then
    what the error's class carries (field violations, the missing resource, the failed
    precondition or quota, when to retry)."""
    out: list[Message] = [
        error_details_pb2.ErrorInfo(
            reason=err.reason,
            domain=DOMAIN,
            metadata={clip(k): clip(v) for k, v in err.metadata.items()},
        )
    ]
    match err:
        case InvalidArgument(violations=violations) if violations:
            shown = violations[:MAX_VIOLATIONS]
            more = len(violations) - len(shown)
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
        case NotFound():
            out.append(
                error_details_pb2.ResourceInfo(
                    resource_type=err.resource_type, resource_name=clip(err.name)
                )
            )
        case FailedPrecondition():
            out.append(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=err.reason,
                            subject=clip(err.subject),
                            description=clip(err.message, MAX_MESSAGE_CHARS),
                        )
                    ]
                )
            )
        case ResourceExhausted():
            out.append(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=clip(err.subject),
                            description=clip(err.message, MAX_MESSAGE_CHARS),
                        )
                    ]
                )
            )
            if err.retry_after_s is not None:
                out.append(_retry_info(err.retry_after_s))
        case Unavailable():
            out.append(_retry_info(err.retry_after_s))
    return out


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    whole = int(seconds)
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    )


def to_status(err: DomainError) -> grpc.Status:
    """The gRPC status (code, message, google.rpc.Status details) for a domain error."""
    packed = []
    for d in details(err):
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    st = status_pb2.Status(
        code=code_value(err), message=clip(err.message, MAX_MESSAGE_CHARS), details=packed
    )
    return rpc_status.to_status(st)


async def abort(context: grpc.aio.ServicerContext, err: DomainError) -> None:
    """Ends the call with the error's status (raises grpc.aio.AbortError)."""
    status = to_status(err)
    await context.abort(status.code, status.details, status.trailing_metadata)


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

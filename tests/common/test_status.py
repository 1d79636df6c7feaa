"""The one mapping of domain errors to gRPC status: codes, reasons and the details of each kind."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from services.common.errors import (
    DataLoss,
    DomainError,
    ErrorKind,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from services.common.status import DOMAIN, code_value, details, grpc_code, to_status


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_kind_is_the_status_code_of_its_name(kind: ErrorKind) -> None:
    err = type("KindError", (DomainError,), {"kind": kind})("failed")
    assert grpc_code(err) is grpc.StatusCode[kind.name]
    assert code_value(err) == grpc.StatusCode[kind.name].value[0]
    assert err.reason == kind.value  # no reason given: the kind's name


def test_a_reason_given_or_set_by_the_class_wins_over_the_kind() -> None:
    assert PermissionDenied("no", reason="INTERNAL_METHOD").reason == "INTERNAL_METHOD"

    class ModelCorrupt(DataLoss):
        reason = "MODEL_CORRUPT"

    corrupt = ModelCorrupt("the stored model does not match its sha256")
    assert (grpc_code(corrupt), corrupt.reason) == (grpc.StatusCode.DATA_LOSS, "MODEL_CORRUPT")
    assert ModelCorrupt("again", reason="OTHER").reason == "OTHER"


def _types(err: DomainError) -> list[str]:
    return [type(d).__name__ for d in details(err)]


@pytest.mark.parametrize(
    ("err", "types"),
    [
        (PermissionDenied("no"), ["ErrorInfo"]),
        (InvalidArgument("bad"), ["ErrorInfo"]),
        (InvalidArgument("bad", violations=[("room_id", "required")]), ["ErrorInfo", "BadRequest"]),
        (NotFound("room", "r1"), ["ErrorInfo", "ResourceInfo"]),
        (FailedPrecondition("ended", subject="room/r1"), ["ErrorInfo", "PreconditionFailure"]),
        (ResourceExhausted("quota"), ["ErrorInfo", "QuotaFailure"]),
        (ResourceExhausted("quota", retry_after_s=2), ["ErrorInfo", "QuotaFailure", "RetryInfo"]),
        (Unavailable("down"), ["ErrorInfo", "RetryInfo"]),
    ],
)
def test_each_error_carries_the_details_of_its_class(err: DomainError, types: list[str]) -> None:
    assert _types(err) == types
    info = details(err)[0]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == (err.reason, DOMAIN)


def test_the_status_packs_code_message_and_details_in_order() -> None:
    err = Unavailable("the database is unavailable; retry", retry_after_s=1.5, reason="DB_DOWN")
    status = to_status(err)
    assert status.code is grpc.StatusCode.UNAVAILABLE and status.details == err.message
    (key, raw) = status.trailing_metadata[0]
    assert key == "grpc-status-details-bin"
    st = status_pb2.Status.FromString(raw)
    unpacked: list[Message] = []
    for a, cls in zip(
        st.details, (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo), strict=True
    ):
        m = cls()
        assert a.Unpack(m)
        unpacked.append(m)
    info, retry = unpacked
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "DB_DOWN" and info.metadata["retryable"] == "true"
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 500_000_000)

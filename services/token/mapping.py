"""Protobuf ↔ domain conversions for the token service: its enum table, defined once."""

from __future__ import annotations

from arconv.token.v1 import token_service_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from services.token.domain import Claims, Reason, refresh_after

REASON_TO_PB = {
    Reason.INVALID: pb.DENY_REASON_INVALID,
    Reason.EXPIRED: pb.DENY_REASON_EXPIRED,
    Reason.REVOKED: pb.DENY_REASON_REVOKED,
    Reason.SCOPE: pb.DENY_REASON_SCOPE,
    Reason.VOICE: pb.DENY_REASON_VOICE,
    Reason.INPUT_TOO_LONG: pb.DENY_REASON_INPUT_TOO_LONG,
    Reason.RATE_LIMITED: pb.DENY_REASON_RATE_LIMITED,
    Reason.QUOTA_EXCEEDED: pb.DENY_REASON_QUOTA_EXCEEDED,
}


def ts(epoch_s: float) -> Timestamp:
    out = Timestamp()
    out.FromSeconds(int(epoch_s))
    return out


def issued_to_pb(token: str, c: Claims) -> pb.IssueProviderTokenResponse:
    return pb.IssueProviderTokenResponse(
        token=token,
        token_id=c.token_id,
        provider=c.provider,
        voice_id=c.voice_id,
        operations=list(c.operations),
        max_input_length=c.max_input_length,
        expire_time=ts(c.expires_at),
        refresh_after=ts(refresh_after(c.issued_at, c.expires_at)),
        agent_id=c.agent_id,
        room_id=c.room_id,
    )

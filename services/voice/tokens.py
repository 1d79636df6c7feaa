"""Provider tokens, verified and metered by the token service (one call per request).

The voice service holds no key and keeps no counter: the token service decides, and its
reason travels to the client in the status's ErrorInfo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
import jwt
from arconv.token.v1 import token_service_pb2 as token_pb
from arconv.token.v1 import token_service_pb2_grpc as token_grpc

from services.common.errors import (
    DomainError,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("arconv.voice.tokens")

SYNTHESIZE = "tts.synthesize"
VISEME_STREAM = "tts.viseme_stream"


@dataclass(frozen=True, slots=True)
class Admission:
    """A request the token service allowed (and, when metered, counted)."""

    user_id: str
    token_id: str
    voice_id: str
    reserved: int


_R = token_pb.DenyReason


def refusal(resp: token_pb.VerifyProviderTokenResponse) -> DomainError:
    """The status for a token the token service refused. The ErrorInfo's metadata carries the
    token service's own reason (`token_reason`, a DenyReason name)."""
    err = _refusal(resp)
    err.metadata["token_reason"] = _R.Name(resp.reason)
    return err


def _refusal(resp: token_pb.VerifyProviderTokenResponse) -> DomainError:
    msg = resp.message or "the provider token was refused"
    r = resp.reason
    if r == _R.DENY_REASON_SCOPE:
        return PermissionDenied(f"provider token: {msg}", reason="TOKEN_SCOPE")
    if r == _R.DENY_REASON_VOICE:
        return PermissionDenied(f"provider token: {msg}", reason="TOKEN_VOICE")
    if r == _R.DENY_REASON_INPUT_TOO_LONG:
        return InvalidArgument(
            f"text is too long: {msg}", reason="INPUT_TOO_LONG", violations=[("text", msg)]
        )
    if r == _R.DENY_REASON_RATE_LIMITED:
        return ResourceExhausted(
            f"provider token: {msg}", subject=f"token:{resp.token_id}", reason="RATE_LIMITED"
        )
    if r == _R.DENY_REASON_QUOTA_EXCEEDED:
        return ResourceExhausted(
            f"daily quota: {msg}", subject=f"user:{resp.user_id}", reason="QUOTA_EXCEEDED"
        )
    reason = {_R.DENY_REASON_EXPIRED: "TOKEN_EXPIRED", _R.DENY_REASON_REVOKED: "TOKEN_REVOKED"}
    return Unauthenticated(
        f"provider token: {msg}; send a token from IssueProviderToken",
        reason=reason.get(r, "TOKEN_INVALID"),
    )


class TokenGate:
    def __init__(
        self, stub: token_grpc.TokenInternalServiceStub, *, timeout_s: float = 5.0
    ) -> None:
        self._stub = stub
        self._timeout = timeout_s

    async def _verify(
        self, token: str, operation: str, voice_id: str, length: int, consume: bool
    ) -> token_pb.VerifyProviderTokenResponse:
        req = token_pb.VerifyProviderTokenRequest(
            token=token,
            operation=operation,
            voice_id=voice_id,
            input_length=length,
            consume=consume,
        )
        try:
            resp: token_pb.VerifyProviderTokenResponse = await self._stub.VerifyProviderToken(
                req, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # an empty or oversized token
                raise Unauthenticated(
                    f"provider token: {exc.details()}", reason="TOKEN_INVALID"
                ) from exc
            raise Unavailable(f"the token service cannot verify tokens: {exc.details()}") from exc
        if not resp.allowed:
            raise refusal(resp)
        return resp

    async def admit(
        self, token: str, *, voice_id: str, input_length: int, visemes: bool, consume: bool = True
    ) -> Admission:
        """Checks a request and reserves `input_length` characters of the user's quota.

        With `visemes` the token must also carry `tts.viseme_stream`; that is checked first,
        without counting anything, so a refusal leaves every counter as it was.
        """
        if not token:
            raise Unauthenticated(
                "missing provider token; send 'authorization: Bearer <provider token>'",
                reason="TOKEN_MISSING",
            )
        if visemes:
            await self._verify(token, VISEME_STREAM, voice_id, input_length, False)
        resp = await self._verify(token, SYNTHESIZE, voice_id, input_length, consume)
        return Admission(
            user_id=resp.user_id,
            token_id=resp.token_id,
            voice_id=voice_id or _token_voice(token),
            reserved=input_length if consume else 0,
        )

    async def refund(self, token: str, admission: Admission, used: int) -> None:
        """Gives back the reserved characters that were not synthesized."""
        unused = admission.reserved - used
        if unused <= 0:
            return
        req = token_pb.RefundProviderUsageRequest(token=token, characters=unused)
        try:
            await self._stub.RefundProviderUsage(req, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "quota refund failed",
                extra={"fields": {"token_id": admission.token_id, "error": exc.details()}},
            )


def _token_voice(token: str) -> str:
    """The token's voice claim. The token service has just verified the signature."""
    claims = jwt.decode(token, options={"verify_signature": False})
    voice = claims.get("voice_id", "")
    return voice if isinstance(voice, str) else ""

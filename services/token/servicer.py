"""gRPC mapping of arconv.token.v1.TokenService (the proto documents each RPC)."""

from __future__ import annotations

import json

import grpc
from arconv.token.v1 import token_service_pb2 as pb
from arconv.token.v1 import token_service_pb2_grpc as pb_grpc

from services.common.auth import principal
from services.token import mapping
from services.token.domain import Reason
from services.token.service import TokenService


class TokenServicer(pb_grpc.TokenServiceServicer):
    def __init__(self, *, service: TokenService) -> None:
        self._service = service

    async def IssueProviderToken(
        self, request: pb.IssueProviderTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssueProviderTokenResponse:
        user = principal().require_user()
        token, claims = await self._service.issue(
            user_id=user, room_id=request.room_id, operations=list(request.operations)
        )
        return mapping.issued_to_pb(token, claims)

    async def RefreshProviderToken(
        self, request: pb.RefreshProviderTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshProviderTokenResponse:
        user = principal().require_user()
        token, claims = await self._service.refresh(user_id=user, token=request.token)
        return pb.RefreshProviderTokenResponse(token=mapping.issued_to_pb(token, claims))

    async def RevokeProviderToken(
        self, request: pb.RevokeProviderTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeProviderTokenResponse:
        user = principal().require_user()
        revoked = await self._service.revoke(user_id=user, token_id=request.token_id)
        return pb.RevokeProviderTokenResponse(revoked=revoked)

    async def GetUsage(
        self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUsageResponse:
        user = principal().require_user()
        u = await self._service.usage(user_id=user)
        return pb.GetUsageResponse(
            plan=u.plan.name,
            characters_used=u.characters_used,
            characters_limit=u.plan.daily_characters,
            requests_per_token_per_hour=u.plan.requests_per_token_per_hour,
            active_tokens=u.active_tokens,
            warning=u.warning,
            reset_time=mapping.ts(u.reset_time.timestamp()),
        )

    async def GetJwks(
        self, request: pb.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJwksResponse:
        jwks = self._service.jwks()
        return pb.GetJwksResponse(
            keys=[pb.Jwk(**k) for k in jwks["keys"]],
            jwks_json=json.dumps(jwks, separators=(",", ":")),
        )


class TokenInternalServicer(pb_grpc.TokenInternalServiceServicer):
    """TokenInternalService: the token service's RPCs for the other services of the mesh."""

    def __init__(self, *, service: TokenService) -> None:
        self._service = service

    async def VerifyProviderToken(
        self, request: pb.VerifyProviderTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyProviderTokenResponse:
        d = await self._service.verify(
            token=request.token,
            operation=request.operation,
            voice_id=request.voice_id,
            input_length=request.input_length,
            consume=request.consume,
        )
        resp = pb.VerifyProviderTokenResponse(
            allowed=d.allowed,
            reason=mapping.REASON_TO_PB[d.reason] if d.reason else pb.DENY_REASON_UNSPECIFIED,
            quota_remaining=d.quota_remaining,
            message=d.message,
        )
        # Identity is only echoed for a token that passed signature and time checks.
        c = d.claims
        if c is not None and d.reason not in (Reason.INVALID, Reason.EXPIRED):
            resp.user_id = c.user_id
            resp.agent_id = c.agent_id
            resp.token_id = c.token_id
            resp.operations.extend(c.operations)
            resp.expire_time.CopyFrom(mapping.ts(c.expires_at))
        return resp

    async def RevokeRoomTokens(
        self, request: pb.RevokeRoomTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeRoomTokensResponse:
        count = await self._service.revoke_room(room_id=request.room_id)
        return pb.RevokeRoomTokensResponse(revoked_count=count)

    async def RefundProviderUsage(
        self, request: pb.RefundProviderUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefundProviderUsageResponse:
        used = await self._service.refund(token=request.token, characters=request.characters)
        return pb.RefundProviderUsageResponse(characters_used=used)

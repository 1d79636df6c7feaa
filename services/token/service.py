"""The token service's use cases: issue, refresh, verify, revoke, usage.

Collaborators come in through the constructor: the codec (keys), the limits (key-value store),
the repository (SQL) and the directory (rooms and avatar services). No gRPC here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.token.codec import TokenCodec
from services.token.directory import Directory
from services.token.domain import (
    Action,
    Claims,
    Decision,
    Grant,
    Plan,
    Reason,
    day_window,
    quota_warning,
    refresh_refusal,
    validate_operations,
    validate_room_id,
    validate_token_id,
    validate_token_text,
)
from services.token.keys import KeyRing
from services.token.limits import Limits
from services.token.repository import TokenRepository, at

log = logging.getLogger("arconv.token")


@dataclass(frozen=True, slots=True)
class PlanBook:
    """Plans by name, which plan each user has, and the default plan."""

    plans: Mapping[str, Plan]
    user_plans: Mapping[str, str]
    default: str

    def plan_for(self, user_id: str) -> Plan:
        return self.plans[self.user_plans.get(user_id, self.default)]


@dataclass(frozen=True, slots=True)
class Usage:
    plan: Plan
    characters_used: int
    active_tokens: int
    warning: bool
    reset_time: datetime


class TokenService:
    def __init__(
        self,
        *,
        codec: TokenCodec,
        keys: KeyRing,
        limits: Limits,
        repo: TokenRepository,
        directory: Directory,
        plans: PlanBook,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._codec = codec
        self._keys = keys
        self._limits = limits
        self._repo = repo
        self._directory = directory
        self._plans = plans
        self._clock = clock
        self._reloading = asyncio.Lock()

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self._keys.jwks()

    async def issue(
        self, *, user_id: str, room_id: str, operations: Sequence[str]
    ) -> tuple[str, Claims]:
        room_id = validate_room_id(room_id)
        ops = validate_operations(operations)
        now = self._clock()
        await self._limits.take_issue(user_id, now=now)
        room = await self._directory.room(user_id=user_id, room_id=room_id)
        if room.ended:
            raise _room_ended(room_id)
        voice = await self._directory.voice(user_id=user_id, agent_id=room.agent_id)
        grant = Grant(
            user_id=user_id,
            room_id=room.room_id,
            agent_id=room.agent_id,
            provider=voice.provider,
            voice_id=voice.voice_id,
            operations=ops,
        )
        return await self._mint(grant, now=now, action=Action.ISSUE)

    async def refresh(self, *, user_id: str, token: str) -> tuple[str, Claims]:
        """A new token with the same binding. The old one stays valid until it expires."""
        validate_token_text(token)
        decoded = self._codec.decode(token)
        old = decoded.claims
        if old is None:
            raise InvalidArgument(
                "token is not a valid provider token",
                reason="TOKEN_INVALID",
                violations=[("token", decoded.message)],
            )
        if old.user_id != user_id:
            raise PermissionDenied("the token belongs to another user", reason="TOKEN_NOT_YOURS")
        if decoded.reason is Reason.EXPIRED:
            raise refresh_refusal(Reason.EXPIRED)
        if await self._is_revoked(old.token_id):
            raise refresh_refusal(Reason.REVOKED)
        now = self._clock()
        await self._limits.take_refresh(user_id, now=now)
        room = await self._directory.room(user_id=user_id, room_id=old.room_id)
        if room.ended:
            raise _room_ended(old.room_id)
        grant = Grant(
            user_id=user_id,
            room_id=old.room_id,
            agent_id=old.agent_id,
            provider=old.provider,
            voice_id=old.voice_id,
            operations=old.operations,
        )
        return await self._mint(grant, now=now, action=Action.REFRESH, parent=old.token_id)

    async def _mint(
        self, grant: Grant, *, now: float, action: Action, parent: str | None = None
    ) -> tuple[str, Claims]:
        token, claims = self._codec.mint(grant, now=int(now))
        async with self._repo.transaction() as s:
            await self._repo.add(
                s, claims=claims, kid=self._keys.signer.kid, parent_token_id=parent
            )
            await self._repo.audit(
                s,
                action=action,
                time=at(now),
                claims=claims,
                operation=claims.scope,
                detail=f"refreshed from {parent}" if parent else "",
            )
        # The room may have ended after the rooms service said it was open. RevokeRoomTokens
        # marks the room before it looks for tokens, and this looks for the mark after the
        # token is committed, so one of the two always catches the token.
        if await self._limits.room_ended(grant.room_id):
            await self._revoke_late(claims, now)
            raise _room_ended(grant.room_id)
        return token, claims

    async def _revoke_late(self, claims: Claims, now: float) -> None:
        await self._limits.revoke(
            claims.token_id, expires_at=claims.expires_at, now=now, leeway_s=self._codec.leeway_s
        )
        async with self._repo.transaction() as s:
            if await self._repo.mark_revoked(s, token_id=claims.token_id, now=at(now)):
                await self._repo.audit(
                    s,
                    action=Action.REVOKE_ROOM,
                    time=at(now),
                    claims=claims,
                    detail="issued while the room ended",
                )

    async def verify(
        self, *, token: str, operation: str, voice_id: str, input_length: int, consume: bool
    ) -> Decision:
        """Checks one TTS request. A refusal is audited and consumes nothing."""
        validate_token_text(token)
        if not operation:
            raise InvalidArgument("operation is required", violations=[("operation", "required")])
        now = self._clock()
        decision = await self._decide(token, operation, voice_id, input_length, consume, now)
        if not decision.allowed:
            assert decision.reason is not None
            async with self._repo.transaction() as s:
                await self._repo.audit(
                    s,
                    action=Action.VERIFY_DENIED,
                    time=at(now),
                    claims=decision.claims,
                    operation=operation,
                    reason=decision.reason.value,
                    detail=decision.message,
                )
        return decision

    async def _decide(
        self,
        token: str,
        operation: str,
        voice_id: str,
        input_length: int,
        consume: bool,
        now: float,
    ) -> Decision:
        decoded = self._codec.decode(token)
        c = decoded.claims
        if decoded.reason is not None or c is None:
            return Decision(decoded.reason or Reason.INVALID, c, message=decoded.message)
        if await self._is_revoked(c.token_id):
            return Decision(Reason.REVOKED, c, message="token is revoked")
        if operation not in c.operations:
            return Decision(Reason.SCOPE, c, message=f"operation not in scope {c.scope!r}")
        if voice_id and voice_id != c.voice_id:
            return Decision(Reason.VOICE, c, message="voice is not the token's voice")
        if input_length > c.max_input_length:
            return Decision(
                Reason.INPUT_TOO_LONG,
                c,
                message=f"input_length {input_length} is over {c.max_input_length}",
            )
        plan = self._plans.plan_for(c.user_id)
        if not consume:
            used = await self._limits.quota_used(c.user_id, now=now)
            return Decision(None, c, quota_remaining=max(0, plan.daily_characters - used))
        reason, remaining = await self._limits.consume(c, plan, input_length, now=now)
        if reason is Reason.RATE_LIMITED:
            msg = f"over {plan.requests_per_token_per_hour} requests per hour for this token"
            return Decision(reason, c, remaining, msg)
        if reason is Reason.QUOTA_EXCEEDED:
            msg = f"over the daily quota of {plan.daily_characters} characters"
            return Decision(reason, c, remaining, msg)
        return Decision(None, c, quota_remaining=remaining)

    async def refund(self, *, token: str, characters: int) -> int:
        """Gives back characters a consumed request reserved but did not synthesize."""
        validate_token_text(token)
        if characters <= 0:
            raise InvalidArgument(
                "characters must be at least 1", violations=[("characters", "at least 1")]
            )
        decoded = self._codec.decode(token)
        c = decoded.claims
        if c is None or decoded.reason not in (None, Reason.EXPIRED):
            raise InvalidArgument(
                "token is not a valid provider token",
                reason="TOKEN_INVALID",
                violations=[("token", decoded.message)],
            )
        return await self._limits.refund(c.user_id, characters, now=self._clock())

    async def revoke(self, *, user_id: str, token_id: str) -> bool:
        """Revokes one of the user's tokens; False if it was already revoked or expired."""
        validate_token_id(token_id)
        now = self._clock()
        async with self._repo.transaction() as s:
            rec = await self._repo.get_for_user(s, token_id=token_id, user_id=user_id)
        if rec is None:
            raise NotFound("token", token_id)
        expires_at = rec.expire_time.timestamp()
        if expires_at + self._codec.leeway_s <= now:
            return False
        # The shared store first: once it holds the key every replica refuses the token. A
        # failure after it leaves revoke_time unset, and a retry completes the job.
        await self._limits.revoke(
            token_id, expires_at=expires_at, now=now, leeway_s=self._codec.leeway_s
        )
        async with self._repo.transaction() as s:
            changed = await self._repo.mark_revoked(s, token_id=token_id, now=at(now))
            if changed:
                await self._repo.audit(
                    s,
                    action=Action.REVOKE,
                    time=at(now),
                    user_id=rec.user_id,
                    agent_id=rec.agent_id,
                    room_id=rec.room_id,
                    token_id=token_id,
                )
        return changed

    async def revoke_room(self, *, room_id: str) -> int:
        """Revokes every token of a room that could still pass verification."""
        room_id = validate_room_id(room_id)
        now = self._clock()
        leeway = self._codec.leeway_s
        await self._limits.mark_room_ended(room_id, ttl_s=self._codec.ttl_s + leeway)
        async with self._repo.transaction() as s:
            recs = await self._repo.live_for_room(s, room_id=room_id, now=at(now - leeway))
            for rec in recs:
                await self._limits.revoke(
                    rec.token_id, expires_at=rec.expire_time.timestamp(), now=now, leeway_s=leeway
                )
                await self._repo.mark_revoked(s, token_id=rec.token_id, now=at(now))
                await self._repo.audit(
                    s,
                    action=Action.REVOKE_ROOM,
                    time=at(now),
                    user_id=rec.user_id,
                    agent_id=rec.agent_id,
                    room_id=rec.room_id,
                    token_id=rec.token_id,
                )
        return len(recs)

    async def usage(self, *, user_id: str) -> Usage:
        now = self._clock()
        plan = self._plans.plan_for(user_id)
        used = await self._limits.quota_used(user_id, now=now)
        async with self._repo.transaction() as s:
            active = await self._repo.count_active(s, user_id=user_id, now=at(now))
        _, reset = day_window(now)
        return Usage(
            plan=plan,
            characters_used=used,
            active_tokens=active,
            warning=quota_warning(used, plan.daily_characters),
            reset_time=reset,
        )

    async def restore_revocations(self) -> set[str]:
        """Marks every revoked, unexpired token of the database in the store, then records
        that the store holds them all; the ids marked."""
        now = self._clock()
        async with self._repo.transaction() as s:
            recs = await self._repo.revoked_unexpired(s, now=at(now - self._codec.leeway_s))
        for rec in recs:
            await self._limits.revoke(
                rec.token_id,
                expires_at=rec.expire_time.timestamp(),
                now=now,
                leeway_s=self._codec.leeway_s,
            )
        await self._limits.revocations_loaded()
        return {rec.token_id for rec in recs}

    async def _is_revoked(self, token_id: str) -> bool:
        """The revocation check, which never fails open: when the store has lost its data
        (a Redis restart without persistence), the revocations are loaded again from the
        database before the answer."""
        revoked = await self._limits.is_revoked(token_id)
        if revoked is not None:
            return revoked
        async with self._reloading:
            revoked = await self._limits.is_revoked(token_id)  # another call reloaded meanwhile
            if revoked is not None:
                return revoked
            log.warning("the token store lost its revocations; loading them again")
            return token_id in await self.restore_revocations()


def _room_ended(room_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        "the room has ended; tokens are only issued for open rooms",
        reason="ROOM_ENDED",
        subject=f"rooms/{room_id}",
    )

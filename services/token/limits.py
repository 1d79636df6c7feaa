"""Rate limits, quotas and the revocation list, kept in the key-value store.

Keys (under the store's prefix; the user id is always the last part):
  issue:<minute>:<user>     IssueProviderToken calls in the current minute
  refresh:<minute>:<user>   RefreshProviderToken calls in the current minute
  rate:<token id>           consumed requests of a token (a one-hour window from its first use)
  quota:<UTC day>:<user>    characters consumed today
  revoked:<token id>        present while a revoked token would otherwise still be valid
  revocations:loaded        present once the revoked tokens of the database are all marked; a
                            store that lost its data (a Redis restart without persistence)
                            lacks it, and the marks are loaded again before any answer
  room_ended:<room id>      set by RevokeRoomTokens, for issues that raced with it
"""

from __future__ import annotations

import math

from services.common.errors import ResourceExhausted
from services.common.kv import KV, Bound
from services.token.domain import Claims, Plan, Reason, day_window

HOUR_S = 3600
LOADED = "revocations:loaded"


class Limits:
    def __init__(self, kv: KV, *, issue_per_minute: int, refresh_per_minute: int) -> None:
        self._kv = kv
        self._issue = issue_per_minute
        self._refresh = refresh_per_minute

    async def take_issue(self, user_id: str, *, now: float) -> None:
        """Counts one IssueProviderToken call; RESOURCE_EXHAUSTED past the per-minute limit."""
        await self._take("issue", self._issue, user_id, now)

    async def take_refresh(self, user_id: str, *, now: float) -> None:
        await self._take("refresh", self._refresh, user_id, now)

    async def _take(self, what: str, limit: int, user_id: str, now: float) -> None:
        minute = int(now // 60)
        result = await self._kv.incr_within([Bound(f"{what}:{minute}:{user_id}", 1, limit, 120)])
        if not result.allowed:
            retry = max(1.0, math.ceil((minute + 1) * 60 - now))
            raise ResourceExhausted(
                f"too many {what} calls: at most {limit} a minute; retry in {retry:.0f} s",
                subject=f"user:{user_id}",
                retry_after_s=retry,
                reason=f"{what.upper()}_RATE_LIMITED",
            )

    async def consume(
        self, claims: Claims, plan: Plan, input_length: int, *, now: float
    ) -> tuple[Reason | None, int]:
        """Counts one request of `claims`' token and `input_length` characters of its user.

        Both limits are checked before anything is counted, in one atomic step: a refused
        request consumes nothing. Returns the refusal reason (or None) and the characters left.
        """
        day, reset = day_window(now)
        quota_ttl = reset.timestamp() - now + HOUR_S
        result = await self._kv.incr_within(
            [
                Bound(f"rate:{claims.token_id}", 1, plan.requests_per_token_per_hour, HOUR_S),
                Bound(
                    f"quota:{day}:{claims.user_id}", input_length, plan.daily_characters, quota_ttl
                ),
            ]
        )
        remaining = max(0, plan.daily_characters - result.values[1])
        if result.allowed:
            return None, remaining
        return (Reason.RATE_LIMITED if result.refused == 0 else Reason.QUOTA_EXCEEDED), remaining

    async def refund(self, user_id: str, characters: int, *, now: float) -> int:
        """Gives `characters` back to today's quota of `user_id`, never below zero."""
        day, reset = day_window(now)
        key = f"quota:{day}:{user_id}"
        value = await self._kv.incr(key, -characters, ttl_s=reset.timestamp() - now + HOUR_S)
        if value < 0:  # the day turned since the reservation: nothing of today to give back
            value = await self._kv.incr(key, -value, ttl_s=reset.timestamp() - now + HOUR_S)
        return value

    async def quota_used(self, user_id: str, *, now: float) -> int:
        day, _ = day_window(now)
        return await self._kv.get_int(f"quota:{day}:{user_id}")

    async def requests_used(self, token_id: str) -> int:
        return await self._kv.get_int(f"rate:{token_id}")

    async def revoke(self, token_id: str, *, expires_at: float, now: float, leeway_s: int) -> None:
        """Marks a token revoked for as long as it could still pass verification."""
        ttl = max(1.0, expires_at + leeway_s - now)
        await self._kv.set(f"revoked:{token_id}", "1", ttl_s=ttl)

    async def is_revoked(self, token_id: str) -> bool | None:
        """Whether the token is marked revoked; None if the store does not hold every
        revocation (it lost its data since they were loaded): never a guess."""
        loaded, revoked = await self._kv.get_many([LOADED, f"revoked:{token_id}"])
        if revoked is not None:
            return True
        return False if loaded is not None else None

    async def revocations_loaded(self) -> None:
        """Records that every revocation of the database is marked in the store."""
        await self._kv.set(LOADED, "1")

    async def mark_room_ended(self, room_id: str, *, ttl_s: float) -> None:
        await self._kv.set(f"room_ended:{room_id}", "1", ttl_s=ttl_s)

    async def room_ended(self, room_id: str) -> bool:
        return await self._kv.exists(f"room_ended:{room_id}")

"""SQL storage of issued tokens and the audit trail (SQLAlchemy 2, async).

The caller owns the transaction (services.common.db.Repository): `async with
repo.transaction() as s:`, then `s` is passed to each call. A lost database becomes
UNAVAILABLE in the errors interceptor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Repository
from services.token.domain import Action, Claims
from services.token.models import AuditEntry, IssuedToken


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: str
    user_id: str
    room_id: str
    agent_id: str
    expire_time: datetime
    revoke_time: datetime | None


# Control characters (NUL among them, which PostgreSQL refuses in text) in values that came
# from a caller, such as the operation a TTS proxy passes on from its client.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _clean(value: str, limit: int) -> str:
    """`value` fit for an audit column: control characters replaced, at most `limit` long."""
    return _CONTROL.sub("\ufffd", value[:limit])


def utc(t: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def _record(row: IssuedToken) -> TokenRecord:
    return TokenRecord(
        token_id=row.token_id,
        user_id=row.user_id,
        room_id=row.room_id,
        agent_id=row.agent_id,
        expire_time=utc(row.expire_time),
        revoke_time=utc(row.revoke_time) if row.revoke_time else None,
    )


class TokenRepository(Repository):
    async def add(
        self, s: AsyncSession, *, claims: Claims, kid: str, parent_token_id: str | None = None
    ) -> None:
        s.add(
            IssuedToken(
                token_id=claims.token_id,
                user_id=claims.user_id,
                room_id=claims.room_id,
                agent_id=claims.agent_id,
                provider=claims.provider,
                voice_id=claims.voice_id,
                operations=claims.scope,
                kid=kid,
                parent_token_id=parent_token_id,
                issue_time=at(claims.issued_at),
                expire_time=at(claims.expires_at),
                revoke_time=None,
            )
        )
        await s.flush()

    async def get_for_user(
        self, s: AsyncSession, *, token_id: str, user_id: str
    ) -> TokenRecord | None:
        row = await s.scalar(
            sa.select(IssuedToken).where(
                IssuedToken.token_id == token_id, IssuedToken.user_id == user_id
            )
        )
        return None if row is None else _record(row)

    async def mark_revoked(self, s: AsyncSession, *, token_id: str, now: datetime) -> bool:
        """Sets revoke_time if not set yet; True if this call revoked it."""
        result = await s.execute(
            sa.update(IssuedToken)
            .where(IssuedToken.token_id == token_id, IssuedToken.revoke_time.is_(None))
            .values(revoke_time=now)
        )
        return bool(getattr(result, "rowcount", 0))

    async def live_for_room(
        self, s: AsyncSession, *, room_id: str, now: datetime
    ) -> list[TokenRecord]:
        """The room's unexpired, unrevoked tokens, locked for update where supported."""
        rows = await s.scalars(
            sa.select(IssuedToken)
            .where(
                IssuedToken.room_id == room_id,
                IssuedToken.revoke_time.is_(None),
                IssuedToken.expire_time > now,
            )
            .order_by(IssuedToken.token_id)
            .with_for_update()
        )
        return [_record(r) for r in rows]

    async def count_active(self, s: AsyncSession, *, user_id: str, now: datetime) -> int:
        n = await s.scalar(
            sa.select(sa.func.count())
            .select_from(IssuedToken)
            .where(
                IssuedToken.user_id == user_id,
                IssuedToken.revoke_time.is_(None),
                IssuedToken.expire_time > now,
            )
        )
        return int(n or 0)

    async def revoked_unexpired(self, s: AsyncSession, *, now: datetime) -> list[TokenRecord]:
        """Revoked tokens that have not expired yet (to rebuild the revocation cache)."""
        rows = await s.scalars(
            sa.select(IssuedToken).where(
                IssuedToken.revoke_time.is_not(None), IssuedToken.expire_time > now
            )
        )
        return [_record(r) for r in rows]

    async def audit(
        self,
        s: AsyncSession,
        *,
        action: Action,
        time: datetime,
        claims: Claims | None = None,
        user_id: str = "",
        agent_id: str = "",
        room_id: str = "",
        token_id: str = "",
        operation: str = "",
        reason: str = "",
        detail: str = "",
    ) -> None:
        if claims is not None:
            user_id = user_id or claims.user_id
            agent_id = agent_id or claims.agent_id
            room_id = room_id or claims.room_id
            token_id = token_id or claims.token_id
        s.add(
            AuditEntry(
                time=time,
                action=action.value,
                user_id=_clean(user_id, 128),
                agent_id=_clean(agent_id, 128),
                room_id=_clean(room_id, 128),
                token_id=_clean(token_id, 64),
                operation=_clean(operation, 64),
                reason=_clean(reason, 32),
                detail=_clean(detail, 200),
            )
        )
        await s.flush()

"""The token service's tables: issued tokens (never the token string) and the audit trail."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class IssuedToken(Base):
    """One issued token: what it is bound to and when it ends. `operations` is space-separated."""

    __tablename__ = "token_issued"

    token_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    room_id: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    agent_id: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    provider: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    voice_id: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    operations: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    kid: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    parent_token_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    issue_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    expire_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    revoke_time: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)

    __table_args__ = (
        sa.Index("ix_token_issued_user_expire", "user_id", "expire_time"),
        sa.Index("ix_token_issued_room_expire", "room_id", "expire_time"),
        sa.Index("ix_token_issued_revoked_expire", "revoke_time", "expire_time"),
    )


class AuditEntry(Base):
    """One audited event. Never holds a token string: ids and reasons only."""

    __tablename__ = "token_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    user_id: Mapped[str] = mapped_column(sa.String(128), nullable=False, default="")
    agent_id: Mapped[str] = mapped_column(sa.String(128), nullable=False, default="")
    room_id: Mapped[str] = mapped_column(sa.String(128), nullable=False, default="")
    token_id: Mapped[str] = mapped_column(sa.String(64), nullable=False, default="")
    operation: Mapped[str] = mapped_column(sa.String(64), nullable=False, default="")
    reason: Mapped[str] = mapped_column(sa.String(32), nullable=False, default="")
    detail: Mapped[str] = mapped_column(sa.String(200), nullable=False, default="")

    __table_args__ = (
        sa.Index("ix_token_audit_user_time", "user_id", "time"),
        sa.Index("ix_token_audit_token", "token_id"),
    )

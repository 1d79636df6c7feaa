"""The avatar service's tables: agent profiles and their generated avatars."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class AgentRow(Base):
    """One agent's AR profile. `appearance` is the validated Appearance as a JSON object."""

    __tablename__ = "avatar_agents"

    agent_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    system_prompt: Mapped[str] = mapped_column(sa.Text, nullable=False)
    model: Mapped[str] = mapped_column(sa.String(200), nullable=False, default="")
    appearance: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)
    voice_provider: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    voice_id: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    create_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    update_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)

    __table_args__ = (sa.Index("ix_avatar_agents_name_id", "name", "agent_id"),)


class AvatarRow(Base):
    """The current avatar of an agent and the state of its generation job.

    `job_id` changes with every generation; writers compare it (and the lease) so that a
    stale worker can never overwrite a newer job. A worker holds the job while `lease_owner`
    is set and `lease_expires` is in the future; an expired lease means the worker is gone.
    """

    __tablename__ = "avatar_avatars"

    agent_id: Mapped[str] = mapped_column(
        sa.String(64),
        sa.ForeignKey("avatar_agents.agent_id", ondelete="CASCADE"),
        primary_key=True,
    )
    job_id: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    style: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    provider: Mapped[str] = mapped_column(sa.String(32), nullable=False, default="")
    lods: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, nullable=False)
    morph_targets: Mapped[list[str]] = mapped_column(sa.JSON, nullable=False)
    # Capabilities.to_json() of the stored model; NULL until READY, and for models stored
    # before this column existed (those had no skin and no clips: see _avatar).
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    error: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")
    stage: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    percent: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    generation_count: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    resume_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(
        sa.DateTime(timezone=True), nullable=True
    )
    create_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)
    update_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), nullable=False)

    __table_args__ = (sa.Index("ix_avatar_avatars_status", "status"),)

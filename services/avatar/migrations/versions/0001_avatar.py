"""Agents and avatars.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "avatar_agents",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("appearance", sa.JSON(), nullable=False),
        sa.Column("voice_provider", sa.String(64), nullable=False),
        sa.Column("voice_id", sa.String(128), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_avatar_agents_name_id", "avatar_agents", ["name", "agent_id"])
    op.create_table(
        "avatar_avatars",
        sa.Column(
            "agent_id",
            sa.String(64),
            sa.ForeignKey("avatar_agents.agent_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("style", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("lods", sa.JSON(), nullable=False),
        sa.Column("morph_targets", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("generation_count", sa.Integer(), nullable=False),
        sa.Column("resume_count", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_avatar_avatars_status", "avatar_avatars", ["status"])


def downgrade() -> None:
    op.drop_index("ix_avatar_avatars_status", table_name="avatar_avatars")
    op.drop_table("avatar_avatars")
    op.drop_index("ix_avatar_agents_name_id", table_name="avatar_agents")
    op.drop_table("avatar_agents")

"""Issued provider tokens and the audit trail.

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

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "token_issued",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(128), nullable=False),
        sa.Column("voice_id", sa.String(128), nullable=False),
        sa.Column("operations", sa.String(200), nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("parent_token_id", sa.String(64), nullable=True),
        sa.Column("issue_time", _TIME, nullable=False),
        sa.Column("expire_time", _TIME, nullable=False),
        sa.Column("revoke_time", _TIME, nullable=True),
    )
    op.create_index("ix_token_issued_user_expire", "token_issued", ["user_id", "expire_time"])
    op.create_index("ix_token_issued_room_expire", "token_issued", ["room_id", "expire_time"])
    op.create_index(
        "ix_token_issued_revoked_expire", "token_issued", ["revoke_time", "expire_time"]
    )
    op.create_table(
        "token_audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(128), nullable=False),
        sa.Column("room_id", sa.String(128), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False),
    )
    op.create_index("ix_token_audit_user_time", "token_audit", ["user_id", "time"])
    op.create_index("ix_token_audit_token", "token_audit", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_token_audit_token", table_name="token_audit")
    op.drop_index("ix_token_audit_user_time", table_name="token_audit")
    op.drop_table("token_audit")
    op.drop_index("ix_token_issued_revoked_expire", table_name="token_issued")
    op.drop_index("ix_token_issued_room_expire", table_name="token_issued")
    op.drop_index("ix_token_issued_user_expire", table_name="token_issued")
    op.drop_table("token_issued")

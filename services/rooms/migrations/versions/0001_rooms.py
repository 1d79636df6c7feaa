"""rooms and messages

Revision ID: 0001_rooms
Revises:
Create Date: 2025-01-01 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.rooms.models import UtcDateTime

revision: str = "0001_rooms"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status IN ('ACTIVE', 'PAUSED')"


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("room_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("last_activity_time", UtcDateTime(), nullable=False),
        sa.Column("end_time", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("room_id", name="pk_rooms"),
    )
    op.create_index("ix_rooms_user_activity", "rooms", ["user_id", "last_activity_time"])
    op.create_index("ix_rooms_agent_id", "rooms", ["agent_id"])
    op.create_index(
        "uq_rooms_open_user_agent",
        "rooms",
        ["user_id", "agent_id"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_table(
        "messages",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("room_id", sa.String(36), nullable=False),
        sa.Column("sender_id", sa.String(128), nullable=False),
        sa.Column("sender_type", sa.String(8), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("stream_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["rooms.room_id"],
            name="fk_messages_room_id_rooms",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("message_id", name="uq_messages_message_id"),
        sa.UniqueConstraint("room_id", "idempotency_key", name="uq_messages_room_idempotency"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_messages_room_time", "messages", ["room_id", "create_time", "seq"])


def downgrade() -> None:
    op.drop_index("ix_messages_room_time", table_name="messages")
    op.drop_table("messages")
    op.drop_index("uq_rooms_open_user_agent", table_name="rooms")
    op.drop_index("ix_rooms_agent_id", table_name="rooms")
    op.drop_index("ix_rooms_user_activity", table_name="rooms")
    op.drop_table("rooms")

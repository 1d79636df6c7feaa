"""Avatar capabilities: what the stored model can drive (skin, clips, morphs, VRM).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

Nullable: avatars stored before this revision keep NULL, read as "no skin, no clips, the
recorded morph targets" (true of every model made before rigging existed).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("avatar_avatars", sa.Column("capabilities", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("avatar_avatars") as batch:
        batch.drop_column("capabilities")

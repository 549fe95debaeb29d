"""text columns: room for every name Telegram sends and every reason an admin types

`members.display_name` was VARCHAR(128), one short of a Telegram first name (64) + space +
last name (64), so such a member could not even register on PostgreSQL;
`tier_changes.reason` took 64 characters of a reason typed in the shell.

Revision ID: 0003c
Revises: 0002
Create Date: 2026-12-01 02:10:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003c"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Widen the columns people's text reaches."""
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.alter_column(
            "display_name",
            existing_type=sa.String(length=128),
            type_=sa.String(length=256),
            existing_nullable=False,
        )
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.alter_column(
            "reason",
            existing_type=sa.String(length=64),
            type_=sa.Text(),
            existing_nullable=False,
        )


def downgrade() -> None:
    """Narrow them again, cutting what no longer fits."""
    op.execute("UPDATE members SET display_name = substr(display_name, 1, 128)")
    op.execute("UPDATE tier_changes SET reason = substr(reason, 1, 64)")
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.alter_column(
            "reason",
            existing_type=sa.Text(),
            type_=sa.String(length=64),
            existing_nullable=False,
        )
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.alter_column(
            "display_name",
            existing_type=sa.String(length=256),
            type_=sa.String(length=128),
            existing_nullable=False,
        )

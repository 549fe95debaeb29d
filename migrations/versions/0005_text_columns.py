"""text columns: room for every reason an admin types

`tier_changes.reason` was VARCHAR(64): a longer reason typed in the shell
(`cardshop set-tier --reason`) failed on PostgreSQL. Member names are cut to fit in
`core.members` instead of widening `members.display_name`: on SQLite a type change
rebuilds the table, and dropping `members`, which every table refers to, fails under
foreign keys inside the migration's transaction.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 02:10:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Widen the reason of a tier change to text."""
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.alter_column(
            "reason",
            existing_type=sa.String(length=64),
            type_=sa.Text(),
            existing_nullable=False,
        )


def downgrade() -> None:
    """Narrow it again, cutting what no longer fits."""
    op.execute("UPDATE tier_changes SET reason = substr(reason, 1, 64)")
    with op.batch_alter_table("tier_changes", schema=None) as batch_op:
        batch_op.alter_column(
            "reason",
            existing_type=sa.Text(),
            type_=sa.String(length=64),
            existing_nullable=False,
        )

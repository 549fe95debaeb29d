"""index members.referrer_id: the tier metrics count referrals without scanning members

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 03:00:00.000000

The referrals subquery of the tier metrics (`core/tiers/metrics.py`) runs after every purchase and
once per member in the quarterly review; without this index it read all of `members`.
The other columns it filters on already have fitting indexes: orders by
(member_id, created_at), violations by member_id.
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_members_referrer_id"), ["referrer_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_members_referrer_id"))

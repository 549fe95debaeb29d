"""index orders by (member_id, paid_at): the tier metrics read only their window

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 09:00:00.000000

Spend and purchases count orders by when they were paid, and an active referral is a
referred member with an order paid in the last year (`core/tiers/metrics.py`). Through
(member_id, created_at) those reads walked every order a member ever placed; this index
bounds them to the window. Fulfilment, counted by when orders were placed, keeps using
(member_id, created_at).
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_member_paid", ["member_id", "paid_at"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_member_paid")

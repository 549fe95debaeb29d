"""referral commission: ledger kinds commission and commission_rev

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 10:00:00.000000

A referrer's commission (分销返利) is a ledger row of kind `commission` carrying the
order's id; its reversal on refund is a `commission_rev` row. A partial unique index
on `order_id` among each kind makes a second commission (or a second reversal) of one
order impossible whatever the code does. On SQLite, changing the kind CHECK rebuilds
`wallet_entries` (batch mode), as 0009 did.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = "kind IN ('topup', 'purchase', 'refund', 'adjustment', 'topup_refund')"
KINDS_AFTER = (
    "kind IN ('topup', 'purchase', 'refund', 'adjustment', 'topup_refund', "
    "'commission', 'commission_rev')"
)
COMMISSION_ROWS = "kind = 'commission'"
REVERSAL_ROWS = "kind = 'commission_rev'"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("wallet_entries", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_wallet_entries_kind_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_wallet_entries_kind_known"), KINDS_AFTER)
        batch_op.create_index(
            "uq_wallet_entries_commission_order",
            ["order_id"],
            unique=True,
            sqlite_where=sa.text(COMMISSION_ROWS),
            postgresql_where=sa.text(COMMISSION_ROWS),
        )
        batch_op.create_index(
            "uq_wallet_entries_commission_reversal_order",
            ["order_id"],
            unique=True,
            sqlite_where=sa.text(REVERSAL_ROWS),
            postgresql_where=sa.text(REVERSAL_ROWS),
        )


def downgrade() -> None:
    """Downgrade schema: commissions and their reversals become adjustments."""
    op.execute(
        "UPDATE wallet_entries SET kind = 'adjustment' "
        "WHERE kind IN ('commission', 'commission_rev')"
    )
    with op.batch_alter_table("wallet_entries", schema=None) as batch_op:
        batch_op.drop_index("uq_wallet_entries_commission_reversal_order")
        batch_op.drop_index("uq_wallet_entries_commission_order")
        batch_op.drop_constraint(op.f("ck_wallet_entries_kind_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_wallet_entries_kind_known"), KINDS_BEFORE)

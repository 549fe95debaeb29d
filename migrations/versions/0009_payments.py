"""payments: wallet top-ups by Telegram Stars and 易支付, credited exactly once

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 06:00:00.000000

`payments` holds one row per top-up, unique on the provider's charge id. The ledger
gains `payment_id` and the kind `topup_refund`; a partial unique index on `payment_id`
among `topup` rows makes a second credit of one payment impossible whatever the code
does. On SQLite, changing the kind CHECK rebuilds `wallet_entries` (batch mode); no
table refers to it, so the rebuild drops and renames it freely.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = "kind IN ('topup', 'purchase', 'refund', 'adjustment')"
KINDS_AFTER = "kind IN ('topup', 'purchase', 'refund', 'adjustment', 'topup_refund')"
TOPUP_ROWS = "kind = 'topup'"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("charge_amount", sa.Integer(), nullable=False),
        sa.Column("charge_currency", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("provider_charge_id", sa.String(length=255), nullable=True),
        sa.Column("then_buy", sa.JSON(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("credited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'paid', 'credited', 'refunding', 'refunded', 'expired')",
            name=op.f("ck_payments_state_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint("charge_amount > 0", name=op.f("ck_payments_charge_amount_positive")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_payments_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("provider", "provider_charge_id", name=op.f("uq_payments_provider")),
        sa.UniqueConstraint("reference", name=op.f("uq_payments_reference")),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index("ix_payments_member_created", ["member_id", "created_at"])
        batch_op.create_index("ix_payments_state_expires", ["state", "expires_at"])

    with op.batch_alter_table("wallet_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_wallet_entries_payment_id_payments"), "payments", ["payment_id"], ["id"]
        )
        batch_op.drop_constraint(op.f("ck_wallet_entries_kind_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_wallet_entries_kind_known"), KINDS_AFTER)
        batch_op.create_index(
            "uq_wallet_entries_topup_payment",
            ["payment_id"],
            unique=True,
            sqlite_where=sa.text(TOPUP_ROWS),
            postgresql_where=sa.text(TOPUP_ROWS),
        )


def downgrade() -> None:
    """Downgrade schema: the ledger's top-up refunds become adjustments."""
    op.execute("UPDATE wallet_entries SET kind = 'adjustment' WHERE kind = 'topup_refund'")
    with op.batch_alter_table("wallet_entries", schema=None) as batch_op:
        batch_op.drop_index("uq_wallet_entries_topup_payment")
        batch_op.drop_constraint(op.f("ck_wallet_entries_kind_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_wallet_entries_kind_known"), KINDS_BEFORE)
        batch_op.drop_constraint(op.f("fk_wallet_entries_payment_id_payments"), type_="foreignkey")
        batch_op.drop_column("payment_id")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_state_expires")
        batch_op.drop_index("ix_payments_member_created")
    op.drop_table("payments")

"""reservations: members of tiers with `reservation` hold codes of a product (库存预留)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 10:00:00.000000

`codes.reserved_by` names the member holding an unsold code, so the purchase's single
claim statement can prefer the buyer's own holds and skip everyone else's. The partial
index `ix_codes_available` narrows to unsold *unreserved* codes (the shelf everyone
sees); `ix_codes_reserved` finds a member's holds. `reservations` keeps each hold's
bookkeeping, at most one open per member and product. On SQLite adding the foreign key
rebuilds `codes` (batch mode).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNSOLD = "order_id IS NULL"
ON_SHELF = "order_id IS NULL AND reserved_by IS NULL"
HELD = "order_id IS NULL AND reserved_by IS NOT NULL"
OPEN = "ended_at IS NULL"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("codes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reserved_by", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_codes_reserved_by_members"), "members", ["reserved_by"], ["id"]
        )
        batch_op.drop_index(
            "ix_codes_available", sqlite_where=sa.text(UNSOLD), postgresql_where=sa.text(UNSOLD)
        )
        batch_op.create_index(
            "ix_codes_available",
            ["product_id", "id"],
            sqlite_where=sa.text(ON_SHELF),
            postgresql_where=sa.text(ON_SHELF),
        )
        batch_op.create_index(
            "ix_codes_reserved",
            ["reserved_by", "product_id", "id"],
            sqlite_where=sa.text(HELD),
            postgresql_where=sa.text(HELD),
        )
    op.create_table(
        "reservations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_reservations_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["products.id"], name=op.f("fk_reservations_product_id_products")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index("ix_reservations_expires", ["expires_at"])
        batch_op.create_index(
            "ux_reservations_open",
            ["member_id", "product_id"],
            unique=True,
            sqlite_where=sa.text(OPEN),
            postgresql_where=sa.text(OPEN),
        )


def downgrade() -> None:
    """Downgrade schema: every hold ends, its codes back on the shelf."""
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index("ux_reservations_open")
        batch_op.drop_index("ix_reservations_expires")
    op.drop_table("reservations")
    with op.batch_alter_table("codes", schema=None) as batch_op:
        batch_op.drop_index("ix_codes_reserved")
        batch_op.drop_index("ix_codes_available")
        batch_op.create_index(
            "ix_codes_available",
            ["product_id", "id"],
            sqlite_where=sa.text(UNSOLD),
            postgresql_where=sa.text(UNSOLD),
        )
        batch_op.drop_constraint(op.f("fk_codes_reserved_by_members"), type_="foreignkey")
        batch_op.drop_column("reserved_by")

"""codes: an order's codes through a partial index, so stock counts keep theirs

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-09 10:00:00.000000

`ix_codes_order_id` covered every code, the unsold ones (`order_id IS NULL`) included.
After `ANALYZE`, SQLite's planner took it for `order_id IS NULL AND product_id = ?`
(reading every unsold code of every product) instead of the partial `ix_codes_available`:
a category page went from 6 ms to 1.39 s at a million codes. `ix_codes_sold` holds sold
codes only, so it still finds an order's codes and no stock count can choose it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOLD = sa.text("order_id IS NOT NULL")


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("codes", schema=None) as batch_op:
        batch_op.drop_index("ix_codes_order_id")
        batch_op.create_index(
            "ix_codes_sold", ["order_id"], sqlite_where=SOLD, postgresql_where=SOLD
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("codes", schema=None) as batch_op:
        batch_op.drop_index("ix_codes_sold")
        batch_op.create_index("ix_codes_order_id", ["order_id"], unique=False)

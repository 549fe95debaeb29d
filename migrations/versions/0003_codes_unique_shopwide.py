"""codes unique shop-wide: one digest, one code, whatever the product

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 02:15:00.000000

Before this revision a code was unique per (product, digest), so the same code could be
stocked under two products. Copies already stored are settled before the constraint:

- a code that was sold keeps the sold row; its unsold copies are removed, since selling
  one would hand a buyer a code already used;
- a code never sold keeps its oldest row (the product it was first stocked for);
- a code sold more than once keeps every sold row (each buyer keeps their order and its
  code); the first sale keeps the digest, the later ones get `sold-twice:<id>`.

What was done is written to the audit log (`dedupe_codes`), never a code.
"""

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOLD_TWICE_MARK = "sold-twice:"

codes = sa.table(
    "codes",
    sa.column("id", sa.Integer),
    sa.column("product_id", sa.Integer),
    sa.column("digest", sa.String),
    sa.column("order_id", sa.Integer),
    sa.column("sold_at", sa.DateTime(timezone=True)),
)
products = sa.table("products", sa.column("id", sa.Integer), sa.column("sku", sa.String))
audit_log = sa.table(
    "audit_log",
    sa.column("actor", sa.String),
    sa.column("action", sa.String),
    sa.column("target", sa.String),
    sa.column("before", sa.JSON),
    sa.column("after", sa.JSON),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _settle_copies(connection: sa.Connection) -> None:
    """Leave one row per digest, except codes already sold more than once."""
    repeated = (
        sa.select(codes.c.digest)
        .group_by(codes.c.digest)
        .having(sa.func.count() > 1)
        .scalar_subquery()
    )
    rows = connection.execute(
        sa.select(codes.c.id, codes.c.digest, codes.c.order_id, products.c.sku)
        .join(products, products.c.id == codes.c.product_id)
        .where(codes.c.digest.in_(repeated))
        # Sold rows first (by when), then the oldest unsold: the first of a group stays.
        .order_by(
            codes.c.digest,
            codes.c.order_id.is_(None),
            codes.c.sold_at,
            codes.c.id,
        )
    ).all()
    groups: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        groups[row.digest].append(row)
    removed: dict[str, int] = defaultdict(int)
    sold_twice: list[int] = []
    for copies in groups.values():
        for row in copies[1:]:
            if row.order_id is None:
                connection.execute(sa.delete(codes).where(codes.c.id == row.id))
                removed[row.sku] += 1
            else:
                connection.execute(
                    sa.update(codes)
                    .where(codes.c.id == row.id)
                    .values(digest=f"{SOLD_TWICE_MARK}{row.id}")
                )
                sold_twice.append(row.id)
    if groups:
        connection.execute(
            sa.insert(audit_log).values(
                actor="migration:0003",
                action="dedupe_codes",
                target="codes",
                before={"codes_stored_more_than_once": len(groups)},
                after={"unsold_copies_removed": dict(removed), "sold_twice_code_ids": sold_twice},
                created_at=datetime.now(UTC),
            )
        )


def upgrade() -> None:
    """Upgrade schema."""
    _settle_copies(op.get_bind())
    with op.batch_alter_table("codes", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_codes_product_id"), type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_codes_digest"), ["digest"])


def downgrade() -> None:
    """Downgrade schema (copies removed on the way up stay removed)."""
    with op.batch_alter_table("codes", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_codes_digest"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_codes_product_id"), ["product_id", "digest"]
        )

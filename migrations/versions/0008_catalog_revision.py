"""catalog revision: a counter every change to the catalog bumps, for in-process caches

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 06:00:00.000000

Buyers' screens price from a copy of the catalog kept in memory (`core/catalog.py`).
Each screen reads `catalog_revision` in the same statement as its stock counts and
reloads the copy when it moved. Triggers, not the services, bump it, so that no
writer can forget to: the bot, a `cardshop` command, another worker or a hand-typed
UPDATE in a shell all bump it in the transaction of their change. PostgreSQL bumps
once per statement (TRUNCATE too), SQLite once per row (it has no statement triggers).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The tables whose rows the cached catalog is built from.
CATALOG_TABLES = ("categories", "products", "tier_prices")
#: The one statement both databases' triggers run: the row appears on the first change.
BUMP = (
    "INSERT INTO catalog_revision (id, revision) VALUES (1, 1)"
    " ON CONFLICT (id) DO UPDATE SET revision = catalog_revision.revision + 1"
)


def _trigger(table: str, event: str) -> str:
    return f"{table}_{event.lower()}_bumps_catalog_revision"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "catalog_revision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_revision")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION bump_catalog_revision() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
        for table in CATALOG_TABLES:
            op.execute(
                f"CREATE TRIGGER {_trigger(table, 'change')}"
                f" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_revision()"
            )
        return
    for table in CATALOG_TABLES:
        for event in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {_trigger(table, event)} AFTER {event} ON {table}"
                f" BEGIN {BUMP}; END"
            )


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        for table in CATALOG_TABLES:
            op.execute(f"DROP TRIGGER {_trigger(table, 'change')} ON {table}")
        op.execute("DROP FUNCTION bump_catalog_revision()")
    else:
        for table in CATALOG_TABLES:
            for event in ("INSERT", "UPDATE", "DELETE"):
                op.execute(f"DROP TRIGGER {_trigger(table, event)}")
    op.drop_table("catalog_revision")

"""members: PostgreSQL leaves a fifth of each page free (fillfactor 80)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-12 10:00:00.000000

Every purchase, top-up and check-in updates its member's row, and the quarterly review
updates most of a million rows in a few seconds. With room left on the row's page,
PostgreSQL writes the new version beside the old one and, since none of the columns
these updates change is indexed, touches no index at all (a HOT update); on a full page
it writes the version elsewhere and adds an entry to each of the table's five indexes.
New pages get the room at once; pages already full get it as they are rewritten
(`VACUUM FULL members`). SQLite has no such setting.
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE members SET (fillfactor = 80)")


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE members RESET (fillfactor)")

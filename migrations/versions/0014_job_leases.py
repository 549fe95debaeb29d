"""jobs: a run is held under a lease (holder, expiry) renewed by a heartbeat; broadcast
deliveries remember when they were claimed

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10 10:00:00.000000

With several workers, a run without `finished_at` could be one that crashed or one that
another worker is still running; `Jobs` started it again either way. A run now names its
holder and holds until `lease_until`, which its worker pushes forward while it runs, so
a second worker starts it only after the first has stopped renewing (died).

A broadcast delivery claimed (`sending`) by a worker that died stayed so until some
process restarted, and kept its broadcast from finishing; `claimed_at` lets the other
workers settle a claim older than any send as interrupted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("held_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("broadcast_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("broadcast_deliveries", schema=None) as batch_op:
        batch_op.drop_column("claimed_at")
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("held_by")

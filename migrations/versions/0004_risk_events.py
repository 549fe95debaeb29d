"""risk events: refused purchases and tripped limits, per member

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 02:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "risk_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=96), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('failure', 'trip')", name=op.f("ck_risk_events_kind_known")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_risk_events_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_events")),
        sa.UniqueConstraint("member_id", "kind", "key", name=op.f("uq_risk_events_member_id")),
    )
    with op.batch_alter_table("risk_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_risk_events_member_kind_created", ["member_id", "kind", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_risk_events_unnotified",
            ["id"],
            unique=False,
            sqlite_where=sa.text("kind = 'trip' AND notified_at IS NULL"),
            postgresql_where=sa.text("kind = 'trip' AND notified_at IS NULL"),
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("risk_events", schema=None) as batch_op:
        batch_op.drop_index("ix_risk_events_unnotified")
        batch_op.drop_index("ix_risk_events_member_kind_created")
    op.drop_table("risk_events")

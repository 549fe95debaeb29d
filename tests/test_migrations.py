"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from core.models import Base, Member
from core.uow import Database


async def test_models_and_migrations_do_not_drift(db: Database) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with db.engine.connect() as connection:
        changes = await connection.run_sync(diff)
    assert changes == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_member_rows_have_room_for_their_next_version(db: Database) -> None:
    """PostgreSQL fills member pages to 80 %, as the model says, so the updates of every
    purchase and of the quarterly review stay on the row's page (HOT); SQLite has no
    such setting."""

    def options(connection: Connection) -> list[str]:
        return list(
            connection.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'members'"))
            or []
        )

    async with db.engine.connect() as connection:
        assert await connection.run_sync(options) == ["fillfactor=80"]
    assert Member.__table__.dialect_options["postgresql"]["with"] == {"fillfactor": 80}

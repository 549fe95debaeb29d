"""One `INSERT … ON CONFLICT DO NOTHING` helper, called one way from a session or a connection."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import Connection

from core.clock import ManualClock
from core.models import JobNotice, JobRun
from core.sql import insert_ignoring_conflict
from core.uow import Database

CORE = Path(__file__).resolve().parent.parent / "core"


async def test_second_insert_of_a_key_inserts_nothing(db: Database, clock: ManualClock) -> None:
    values = {"job": "review", "period": "2026Q3", "started_at": clock.now()}
    async with db.transaction() as session:
        first = await session.scalar(insert_ignoring_conflict(session, JobRun), values)
        again = await session.scalar(insert_ignoring_conflict(session, JobRun), values)
    assert isinstance(first, int)
    assert again is None


async def test_a_connection_gets_the_same_cached_statement(
    db: Database, clock: ManualClock
) -> None:
    """The purchase path runs on a plain Connection: same statement, built once per table."""

    def on_connection(conn: Connection) -> tuple[object, str | None, str | None]:
        statement = insert_ignoring_conflict(conn, JobNotice)
        values = {"key": "low:1", "created_at": clock.now()}
        return statement, conn.scalar(statement, values), conn.scalar(statement, values)

    async with db.transaction() as session:
        from_session = insert_ignoring_conflict(session, JobNotice)
        connection = await session.connection()
        statement, first, again = await connection.run_sync(on_connection)
    assert statement is from_session
    assert (first, again) == ("low:1", None)


def test_no_other_module_builds_its_own() -> None:
    builders = {
        path.name
        for path in CORE.glob("*.py")
        if re.search(r"on_conflict_do_nothing|OR IGNORE", path.read_text(), re.IGNORECASE)
    }
    assert builders == {"sql.py"}

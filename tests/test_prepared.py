"""`Prepared` runs a statement straight on the DBAPI connection (`sqlite3`, asyncpg's
adapter) and reads and writes exactly as SQLAlchemy would: the same values in
(datetimes, JSON), the same rows out, the same exceptions, and every statement still
seen by whoever listens to the engine."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import Engine, bindparam, event, func, insert, literal, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from core.clock import ManualClock
from core.db import table_of
from core.models import JobRun
from core.prepared import Prepared
from core.sql import ignoring_conflict
from core.uow import Database

_runs = table_of(JobRun)

#: A read with every kind of value: aware datetimes, JSON, NULL, a literal, labels.
_READ = (
    select(
        _runs.c.id,
        _runs.c.job,
        _runs.c.started_at,
        _runs.c.finished_at,
        _runs.c.result,
        literal(7).label("seven"),
        (_runs.c.id + bindparam("plus")).label("shifted"),
    )
    .where(_runs.c.period == bindparam("period"))
    .order_by(_runs.c.job)
)

_FINISH = (
    update(_runs)
    .where(_runs.c.job == bindparam("j"))
    .values(finished_at=bindparam("at", type_=_runs.c.finished_at.type), result=bindparam("r"))
    .returning(_runs.c.finished_at, _runs.c.result)
)


def _values(clock: ManualClock, job: str) -> dict[str, Any]:
    return {"job": job, "period": "2026-11-22", "started_at": clock.now()}


async def _seed(db: Database, clock: ManualClock) -> None:
    def work(conn: Connection) -> None:
        conn.execute(insert(_runs), [_values(clock, "a"), _values(clock, "b")])
        conn.execute(
            update(_runs)
            .where(_runs.c.job == "a")
            .values(finished_at=clock.now() + timedelta(minutes=5), result={"n": [1, "二"]})
        )

    await db.run(work)


def _without_sqlalchemy_execution() -> Any:
    """Any statement through SQLAlchemy's execution fails inside the block."""
    return mock.patch.object(Connection, "execute", side_effect=AssertionError("via SQLAlchemy"))


async def test_rows_read_as_sqlalchemy_reads_them(db: Database, clock: ManualClock) -> None:
    await _seed(db, clock)
    params = {"period": "2026-11-22", "plus": 100}
    prepared = Prepared(_READ)

    def both(conn: Connection) -> tuple[list[Any], list[Any]]:
        expected = conn.execute(_READ, params).all()
        with _without_sqlalchemy_execution():
            return expected, prepared.all(conn, params)

    expected, got = await db.run(both)
    assert [tuple(row) for row in got] == [tuple(row) for row in expected]
    assert len(got) == 2
    first = got[0]
    assert first.finished_at == clock.now() + timedelta(minutes=5)
    assert first.finished_at.utcoffset() == timedelta(0)
    assert (first.result, first.seven, first.shifted) == ({"n": [1, "二"]}, 7, first.id + 100)
    assert got[1].finished_at is None


async def test_writes_store_what_sqlalchemy_stores(db: Database, clock: ManualClock) -> None:
    await _seed(db, clock)
    at = clock.now() + timedelta(hours=1)

    def finish(conn: Connection) -> Any:
        with _without_sqlalchemy_execution():
            return Prepared(_FINISH).first(conn, {"j": "b", "at": at, "r": [True]})

    returned = await db.run(finish)
    assert (returned.finished_at, returned.result) == (at, [True])
    async with db.read() as session:
        stored = (await session.execute(select(JobRun).where(JobRun.job == "b"))).scalar_one()
    assert (stored.finished_at, stored.result) == (at, [True])


async def test_each_datetime_is_stored_as_itself(db: Database, clock: ManualClock) -> None:
    """Datetime binds remember the last value they converted (a purchase binds one `now`
    nine times): equal values in other objects, other values and the first again, across
    statements and columns, are each stored as they are."""
    first, later = clock.now(), clock.now() + timedelta(seconds=1)
    equal = first + timedelta(0)  # equal to `first`, another object
    values = [first, first, later, equal, first, later]

    def write(conn: Connection) -> None:
        with _without_sqlalchemy_execution():
            for number, at in enumerate(values):
                ignoring_conflict(JobRun).scalar(
                    conn, _values(clock, f"t{number}") | {"started_at": at}
                )
                Prepared(_FINISH).all(conn, {"j": f"t{number}", "at": values[-number - 1], "r": 0})

    await db.run(write)
    async with db.read() as session:
        stored = (await session.execute(select(JobRun).order_by(JobRun.job))).scalars().all()
    assert [(r.started_at, r.finished_at) for r in stored] == list(
        zip(values, reversed(values), strict=True)
    )


async def test_a_conflict_inserts_nothing_and_says_so(db: Database, clock: ManualClock) -> None:
    def twice(conn: Connection) -> tuple[Any, Any]:
        prepared = ignoring_conflict(JobRun)
        return prepared.scalar(conn, _values(clock, "c")), prepared.scalar(
            conn, _values(clock, "c")
        )

    first, again = await db.run(twice)
    assert isinstance(first, int)
    assert again is None


async def test_a_broken_constraint_raises_sqlalchemys_error(
    db: Database, clock: ManualClock
) -> None:
    """Callers catch SQLAlchemy's exceptions whichever way the statement ran; the failed
    work leaves nothing behind."""
    plain = Prepared(insert(_runs))

    def duplicate(conn: Connection) -> None:
        with _without_sqlalchemy_execution():
            plain.all(conn, _values(clock, "d"))
            plain.all(conn, _values(clock, "d"))

    with pytest.raises(IntegrityError):
        await db.run(duplicate)
    async with db.read() as session:
        assert (await session.scalars(select(JobRun.id).where(JobRun.job == "d"))).all() == []


async def test_listeners_see_every_statement(db: Database, clock: ManualClock) -> None:
    """Counting and EXPLAIN-ing tests listen on the engine: with a listener, the
    statement runs through SQLAlchemy and the listener sees it, with the same result."""
    await _seed(db, clock)
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", note)
    try:
        rows = await db.run(
            lambda conn: Prepared(_READ).all(conn, {"period": "2026-11-22", "plus": 1})
        )
    finally:
        event.remove(Engine, "before_cursor_execute", note)
    assert len(rows) == 2
    assert any("FROM job_runs" in statement for statement in seen)


async def test_many_rows_store_what_sqlalchemy_stores(db: Database, clock: ManualClock) -> None:
    """`many` is the bulk writes' executemany (the quarterly review's million rows)."""
    rows = [_values(clock, f"m{i}") | {"finished_at": clock.now(), "result": [i]} for i in range(3)]

    def write(conn: Connection) -> None:
        with _without_sqlalchemy_execution():
            Prepared(insert(_runs)).many(conn, rows)

    await db.run(write)
    async with db.read() as session:
        stored = (await session.execute(select(JobRun).order_by(JobRun.job))).scalars().all()
    assert [(r.job, r.finished_at, r.result) for r in stored] == [
        (f"m{i}", clock.now(), [i]) for i in range(3)
    ]
    with pytest.raises(IntegrityError):
        await db.run(lambda conn: Prepared(insert(_runs)).many(conn, rows[:1]))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_lost_connection_is_never_handed_out_again(db: Database) -> None:
    """A connection the server dropped under a statement is invalidated, as SQLAlchemy's
    own execution does it: the error says so, and the next work gets a live one (a
    SQLite file has no server to drop it)."""
    suicide = Prepared(select(func.pg_terminate_backend(func.pg_backend_pid())))
    one = Prepared(select(literal(1)))

    with pytest.raises(DBAPIError) as lost:
        await db.run(lambda conn: suicide.all(conn, {}))
    assert lost.value.connection_invalidated
    for _ in range(3):
        assert await db.run(lambda conn: one.scalar(conn, {})) == 1

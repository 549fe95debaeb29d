"""`Database.riding`: work that joins the first write transaction a task opens, once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from core.db import table_of
from core.models import ProcessedUpdate
from core.sql import insert_ignoring_conflict
from core.uow import Database
from tests.conftest import START

UPDATES = table_of(ProcessedUpdate)


def _claim(update_id: int) -> Callable[[Connection], None]:
    def claim(conn: Connection) -> None:
        conn.execute(
            insert_ignoring_conflict(conn, ProcessedUpdate),
            {"source": "rider", "update_id": update_id, "created_at": START},
        )

    return claim


async def _claims(db: Database) -> int:
    async with db.read() as session:
        count = await session.scalar(select(func.count()).select_from(UPDATES))
        return int(count or 0)


async def test_the_rider_joins_the_first_committed_write_only(db: Database) -> None:
    with db.riding(_claim(1)) as rider:
        async with db.read():
            pass
        assert not rider.done  # a read carries nothing
        with pytest.raises(RuntimeError):
            async with db.transaction():
                raise RuntimeError("rolled back, and the rider with it")
        assert not rider.done
        assert await _claims(db) == 0
        async with db.transaction(), db.transaction():  # nested: taken once
            pass
        assert rider.done
        await db.run(lambda conn: None)
    assert await _claims(db) == 1


async def test_the_rider_joins_run_and_expires_with_its_block(db: Database) -> None:
    with db.riding(_claim(2)) as rider:
        await db.run(lambda conn: None)
        assert rider.done
    with db.riding(_claim(3)) as rider:
        later = asyncio.Event()

        async def outlives_the_block() -> None:
            await later.wait()
            async with db.transaction():
                pass

        task = asyncio.create_task(outlives_the_block())
    later.set()
    await task
    assert not rider.done  # the task kept a copy of the context, not the ride
    assert await _claims(db) == 1

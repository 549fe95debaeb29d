"""The unit of work: the only place a transaction begins, commits or rolls back.

Services open `db.transaction()` around one business step; repositories and helpers
only add statements to the session they are given and never commit.

A hot path that is a few Core statements (the purchase) is written once as a plain
function over a sync `Connection` and handed to `db.run(work)`, which makes it one
transaction at the cost of a single hop: on PostgreSQL through the async engine's
greenlet (`run_sync`), on a SQLite file in a dedicated writer thread that owns a sync
engine on the same file. SQLite lets one writer in at a time anyway, so one thread
serialising those transactions loses nothing and spares them the lock waits. Helpers
written over a `Connection` serve async callers too, through `run_on(session, ...)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from core.db import READ_ONLY, create_engine, create_sync_engine, is_postgres, sqlite_file_url

T = TypeVar("T")
P = ParamSpec("P")


class _SqliteWriter:
    """One thread with a sync engine on the SQLite file; each `run` is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    def _transact(self, work: Callable[[Connection], T]) -> T:
        with self._engine.begin() as conn:
            return work(conn)

    async def run(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transact, work)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=True)


class Database:
    """An engine plus the ways to use it: a write transaction, a read snapshot, `run`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = is_postgres(engine)
        self._writer = async_sessionmaker(engine, expire_on_commit=False)
        self._reader = async_sessionmaker(
            engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self._sqlite_url = sqlite_file_url(engine)
        self._sqlite_writer: _SqliteWriter | None = None

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(create_engine(url))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed when the block ends, rolled back on error."""
        async with self._writer() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction; on SQLite it never waits for a writer."""
        async with self._reader() as session, session.begin():
            yield session

    async def run(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` as one write transaction: committed if it returns, rolled back if it raises.

        `work` must only touch the database through `conn` (it may run in another
        thread). If the awaiting task is cancelled on SQLite, the transaction still
        finishes in the writer thread; callers make such work idempotent.
        """
        if self._sqlite_url is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        if self._sqlite_writer is None:
            self._sqlite_writer = _SqliteWriter(create_sync_engine(self._sqlite_url))
        return await self._sqlite_writer.run(work)

    async def dispose(self) -> None:
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
            self._sqlite_writer = None
        await self.engine.dispose()


async def run_on(
    session: AsyncSession,
    helper: Callable[Concatenate[Connection, P], T],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Call a `Connection` helper inside an async session's transaction.

    Pending ORM objects are flushed first, as the session would before any statement of
    its own, so the helper's statements land in the order the caller wrote them.
    """

    def call(sync_session: Session) -> T:
        sync_session.flush()
        return helper(sync_session.connection(), *args, **kwargs)

    return await session.run_sync(call)

"""The unit of work: the only place a transaction begins, commits or rolls back.

Services open `db.transaction()` around one business step; repositories and helpers
only add statements to the session they are given and never commit.

A hot path that is a few Core statements (the purchase) is written once as a plain
function over a sync `Connection` and handed to `db.run(work)`, which makes it one
transaction at the cost of a single hop: on PostgreSQL through the async engine's
greenlet (`run_sync`), on a SQLite file in a dedicated writer thread that owns a sync
engine on the same file. SQLite lets one writer in at a time anyway, so one thread
serialising those transactions loses nothing and spares them the lock waits; and that
thread commits together whatever piled up while it was busy (`_GroupCommit`), each piece
of work in a savepoint of its own, so twenty concurrent buyers cost one commit, not
twenty, and a purchase that fails takes none of its neighbours with it. Helpers
written over a `Connection` serve async callers too, through `run_on(session, ...)`.
`db.run_read(work)` is the same single hop for a read (on SQLite in reader threads of
their own, which WAL lets run beside the writer).

A `Rider` is work that joins the first write transaction a task opens: the chat
runtime records an update as handled in the same transaction as the update's own
effect (a purchase, a check-in), so a crash cannot keep one without the other and a
second worker handling the same update at once rolls its effect back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from core.db import (
    READ_ONLY,
    create_engine,
    create_sync_engine,
    driver_of,
    is_postgres,
    open_statements,
    sqlite_file_url,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

#: Threads that read a SQLite file beside its writer (WAL readers never wait for it).
SQLITE_READERS = 2


class _SqliteThreads:
    """Reader threads with a read-only sync engine on the SQLite file (a deferred BEGIN);
    each `run` is one transaction, and a read never queues behind a purchase. The one
    writer is `_GroupCommit`."""

    def __init__(self, engine: Engine, *, threads: int, name: str) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

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


#: The most pieces of work one group commit takes: enough to share a commit among a
#: crowd, few enough that the first of them does not wait long for the last.
GROUP_MAX = 50


class _GroupCommit:
    """The SQLite writer thread, committing concurrent `run`s together.

    While a transaction is running, new work queues; the thread then takes everything
    queued (up to `GROUP_MAX`) into the next transaction, each piece between a SAVEPOINT
    and its RELEASE. A piece that raises is rolled back to its savepoint and raises to
    its own caller only, exactly as if it had been a transaction of its own; the others
    are committed. Work in the group sees the work before it as committed, so the
    group is the same as running them one after another. Alone in the queue, work runs
    as a plain transaction (no savepoint). If the COMMIT itself fails, nothing of the
    group was kept and every caller gets the error.

    Callers' futures are resolved through their loop after the COMMIT, so no caller
    hears of success before its work is committed.

    The thread keeps its connection from one group to the next instead of taking it
    from the pool each time (a checkout, its checks and the ROLLBACK of the return cost
    as much as a purchase's statements). After a group that failed, or one that left a
    statement open (a result not read to its end, which would keep its snapshot), the
    connection goes back to the pool, whose checks replace it if need be (`core.db`).
    """

    def __init__(self, engine: Engine, *, name: str) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._queue: list[_Queued[Any]] = []
        self._draining = False
        #: The thread's connection, kept from group to group while they succeed.
        self._conn: Connection | None = None

    async def run(self, work: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queue.append(_Queued(work, future, loop))
            start, self._draining = not self._draining, True
        if start:
            self._thread.submit(self._drain)
        return await future

    def _drain(self) -> None:
        """Commit groups until the queue is empty (in the writer thread)."""
        while True:
            with self._lock:
                group, self._queue = self._queue[:GROUP_MAX], self._queue[GROUP_MAX:]
                if not group:
                    self._draining = False
                    return
            self._commit(group)

    def _commit(self, group: list[_Queued[Any]]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        if self._conn is None:
            self._conn = self._engine.connect()
        conn = self._conn
        try:
            with conn.begin():
                if len(group) == 1:
                    outcomes.append((group[0].work(conn), None))
                else:
                    for queued in group:
                        outcomes.append(_in_savepoint(conn, queued.work))
        except BaseException as failure:  # nothing of the group is kept
            outcomes = [(None, failure)] * len(group)
            self._release()
        else:
            if open_statements(driver_of(conn)):
                self._release()
        # One wake-up per event loop for the whole group, not one per caller.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for queued, (result, error) in zip(group, outcomes, strict=True):
            by_loop.setdefault(queued.loop, []).append((queued.future, result, error))
        for loop, resolved in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, resolved)
            except RuntimeError:  # that loop is closed: nobody is waiting
                log.warning("writer results arrived after their event loop closed")

    def _release(self) -> None:
        """Back to the pool, whose checks the next group's connection passes again."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _dispose(self) -> None:
        self._release()
        self._engine.dispose()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._dispose)
        self._thread.shutdown(wait=True)


@dataclass(frozen=True, slots=True)
class _Queued(Generic[T]):
    """A piece of work waiting for the writer, and where its outcome goes."""

    work: Callable[[Connection], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop


def _in_savepoint(
    conn: Connection, work: Callable[[Connection], T]
) -> tuple[Any, Exception | None]:
    """`work` between a SAVEPOINT and its RELEASE; rolled back to it if it raises.

    The three statements go straight to the `sqlite3` connection: through SQLAlchemy
    (`begin_nested`) they would cost as much as a purchase's own statements, and work
    run here never opens savepoints of its own, so SQLAlchemy has nothing to track.
    """
    driver = driver_of(conn)
    driver.execute("SAVEPOINT run")
    try:
        result = work(conn)
    except Exception as error:
        driver.execute("ROLLBACK TO run")
        driver.execute("RELEASE run")
        return None, error
    driver.execute("RELEASE run")
    return result, None


#: A caller's future, and the result or the error to hand it.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _resolve(outcomes: list[_Outcome]) -> None:
    """Hand each member of a group its outcome, unless its caller stopped waiting."""
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class Rider:
    """Work that joins the first write transaction its task opens on one database.

    `done` turns True once that transaction committed with it; a transaction that
    rolls back takes it along, and the next one carries it again. Set it going with
    `Database.riding`; once that block is left, it rides nowhere (not even in a task
    started inside the block, whose context kept a copy).
    """

    def __init__(self, db: Database, work: Callable[[Connection], None]) -> None:
        self.db = db
        self.work = work
        self.done = False
        #: Inside a transaction right now: a transaction nested in it does not take it twice.
        self.aboard = False
        self.expired = False


_RIDER: ContextVar[Rider | None] = ContextVar("cardshop_rider", default=None)


def _in_transaction(conn: Connection, work: Callable[[Connection], T]) -> T:
    """`work` in a transaction begun and ended in the same hop as the work itself: on
    PostgreSQL, `AsyncEngine.begin()` takes a hop into a greenlet of its own for the
    BEGIN and another for the COMMIT, about 60 µs of Python a transaction."""
    with conn.begin():
        return work(conn)


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
        self._sqlite_writer: _GroupCommit | None = None
        self._sqlite_readers: _SqliteThreads | None = None

    @classmethod
    def from_url(cls, url: str) -> Database:
        return cls(create_engine(url))

    @contextmanager
    def riding(self, work: Callable[[Connection], None]) -> Iterator[Rider]:
        """Run `work` inside the first write transaction this task opens in the block."""
        rider = Rider(self, work)
        token = _RIDER.set(rider)
        try:
            yield rider
        finally:
            rider.expired = True
            _RIDER.reset(token)

    def _boarding(self) -> Rider | None:
        rider = _RIDER.get()
        if rider is None or rider.db is not self or rider.done or rider.aboard or rider.expired:
            return None
        return rider

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed when the block ends, rolled back on error."""
        rider = self._boarding()
        async with self._writer() as session, session.begin():
            if rider is None:
                yield session
            else:
                rider.aboard = True
                try:
                    await run_on(session, rider.work)
                    yield session
                finally:
                    rider.aboard = False
        if rider is not None:
            rider.done = True

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction; on SQLite it never waits for a writer."""
        async with self._reader() as session, session.begin():
            yield session

    async def run(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` as one write transaction: committed if it returns, rolled back if it raises.

        `work` must only touch the database through `conn` (it may run in another
        thread). If the awaiting task is cancelled on SQLite, the transaction still
        finishes in the writer thread; callers make such work idempotent. On SQLite the
        transaction may be shared with other `run`s (`_GroupCommit`), `work` in a
        savepoint of its own: it must not end the transaction itself.
        """
        rider = self._boarding()
        if rider is None:
            return await self._run(work)
        carried = rider.work

        def work_with_rider(conn: Connection) -> T:
            carried(conn)
            return work(conn)

        rider.aboard = True
        try:
            result = await self._run(work_with_rider)
        finally:
            rider.aboard = False
        rider.done = True
        return result

    async def _run(self, work: Callable[[Connection], T]) -> T:
        if self._sqlite_url is None:
            async with self.engine.connect() as conn:
                return await conn.run_sync(_in_transaction, work)
        if self._sqlite_writer is None:
            self._sqlite_writer = _GroupCommit(
                create_sync_engine(self._sqlite_url), name="sqlite-writer"
            )
        return await self._sqlite_writer.run(work)

    async def run_read(self, work: Callable[[Connection], T]) -> T:
        """`work(conn)` reading in a single hop like `run`: for one statement, or a few
        that need no common snapshot.

        On PostgreSQL each statement is its own snapshot (autocommit: no BEGIN and
        COMMIT round trips around a single read); on SQLite `work` runs in one deferred
        transaction in a reader thread. `work` must only read, and only through `conn`.
        """
        if self._sqlite_url is None:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(
                    isolation_level="AUTOCOMMIT", **{READ_ONLY: True}
                )
                return await conn.run_sync(work)
        if self._sqlite_readers is None:
            engine = create_sync_engine(self._sqlite_url).execution_options(**{READ_ONLY: True})
            self._sqlite_readers = _SqliteThreads(
                engine, threads=SQLITE_READERS, name="sqlite-reader"
            )
        return await self._sqlite_readers.run(work)

    async def dispose(self) -> None:
        for threads in (self._sqlite_writer, self._sqlite_readers):
            if threads is not None:
                await threads.close()
        self._sqlite_writer = self._sqlite_readers = None
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

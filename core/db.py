"""The async engine for SQLite or PostgreSQL, tuned for the purchase path.

SQLite in WAL mode needs every writing transaction to start with `BEGIN IMMEDIATE`:
a deferred transaction that reads and then writes fails with "database is locked" when
another writer got there first, whatever `busy_timeout` says. So the driver's own
transaction handling is switched off and the engine emits the BEGIN itself
(SQLAlchemy's SQLite dialect documents this recipe). Read-only work asks for a plain
deferred BEGIN via `READ_ONLY` so browsing never waits for a writer.

The purchase path also gets a plain synchronous engine on the same SQLite file
(`create_sync_engine`): a whole purchase then costs one hop to a thread instead of
several hops per statement through aiosqlite.

PostgreSQL connections are pinged before use only when they sat idle in the pool for a
while (`PING_AFTER_IDLE_SECONDS`): SQLAlchemy's `pool_pre_ping` pings on every
checkout, which over asyncpg is three round trips (BEGIN, `;`, ROLLBACK), more than the
one statement most of the bot's reads are. A connection used a moment ago is alive but
for a server restart in between, which costs the one update that meets it an apology
and replaces the pool.

Both SQLite engines pool their connections, and in WAL mode a statement left half-read on a
connection (not stepped to its end, not reset) keeps that connection's snapshot after
its transaction has ended: COMMIT and ROLLBACK do not reset it, so every later
transaction on the connection would read the database as it was then, and a writing
one would fail with "database is locked". Every connection is therefore checked when
the pool hands it out; one with a statement still open is logged and replaced.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, Table, event
from sqlalchemy import create_engine as create_plain_engine
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

#: Execution option that marks a connection as read-only (deferred BEGIN on SQLite).
READ_ONLY = "cardshop_read_only"

SQLITE_BUSY_TIMEOUT_MS = 30_000

#: PostgreSQL connections kept open. A connection beyond them (up to `OVERFLOW` more) is
#: opened when work needs it and closed when it comes back: under a crowd of buyers a
#: pool of 10 opened and closed connections all the time, each a new server process and
#: the most expensive thing a purchase did (`make bench`, 20 at once). Kept this size,
#: four workers stay within PostgreSQL's default 100 connections.
POOL_SIZE = 20
OVERFLOW = 4

#: A pooled PostgreSQL connection idle this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 10.0

#: The connection's statements that have started and not finished, this one among them
#: (SQLite's `sqlite_stmt` table, present when built with SQLITE_ENABLE_STMTVTAB).
_BUSY_STATEMENTS = "SELECT sql FROM sqlite_stmt WHERE busy"


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _tune_sqlite(engine: Engine) -> None:
    """WAL, immediate write transactions and a busy timeout on every connection."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "checkout")
    def _on_checkout(_dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        left_open = open_statements(_sqlite3_of(record.driver_connection))
        if left_open:
            log.error(
                "a pooled SQLite connection still had a statement open, which keeps an "
                "ended transaction's snapshot; replaced. Open: %s",
                " | ".join(left_open),
            )
            raise DisconnectionError("SQLite connection with a statement left open")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def driver_of(conn: Connection) -> sqlite3.Connection:
    """The `sqlite3` connection under a sync engine's connection to a SQLite file."""
    return _sqlite3_of(conn.connection.driver_connection)


def _sqlite3_of(driver: Any) -> sqlite3.Connection:
    """The `sqlite3` connection under a pooled pysqlite or aiosqlite connection.

    aiosqlite runs its `sqlite3` connection in a thread of its own; while the connection
    sits in the pool that thread is idle, and asking the connection directly costs a few
    microseconds where a hop to the thread costs a few hundred.
    """
    if isinstance(driver, sqlite3.Connection):
        return driver
    return cast(sqlite3.Connection, driver._conn)


def open_statements(connection: sqlite3.Connection) -> list[str]:
    """The SQL of statements started and not finished on `connection`; [] when SQLite
    cannot tell (built without `sqlite_stmt`)."""
    try:
        cursor = connection.execute(_BUSY_STATEMENTS)
    except sqlite3.OperationalError:
        return []
    try:
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return [sql for (sql,) in rows if sql != _BUSY_STATEMENTS]


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle for a while."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("a pooled connection failed its ping") from exc


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Create the engine for `url`; SQLite gets WAL, immediate writes and a busy timeout."""
    if not url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, pool_size=POOL_SIZE, max_overflow=OVERFLOW)
        _ping_when_idle(engine.sync_engine)
        return engine

    _prepare_sqlite_file(url)
    # aiosqlite opens its connection in its own thread; the pool's checkout check reads it
    # from the event loop's thread while it is idle.
    engine = create_async_engine(
        url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False}
    )
    _tune_sqlite(engine.sync_engine)
    return engine


def sqlite_file_url(engine: AsyncEngine) -> URL | None:
    """The plain pysqlite URL of an async engine's SQLite file; None for memory or other DBs.

    An in-memory database exists once per connection, so a second engine would not see it.
    """
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return url.set(drivername="sqlite")


def create_sync_engine(url: URL) -> Engine:
    """A synchronous engine on the same SQLite file, tuned exactly like the async one."""
    engine = create_plain_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    _tune_sqlite(engine)
    return engine


def table_of(model: type[DeclarativeBase]) -> Table:
    """A mapped class's `Table`, for Core statements that skip the ORM's per-call work."""
    return cast(Table, model.__table__)


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"

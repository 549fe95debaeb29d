"""The async engine for SQLite or PostgreSQL, tuned for the purchase path.

SQLite in WAL mode needs every writing transaction to start with `BEGIN IMMEDIATE`:
a deferred transaction that reads and then writes fails with "database is locked" when
another writer got there first, whatever `busy_timeout` says. So the driver's own
transaction handling is switched off and the engine emits the BEGIN itself
(SQLAlchemy's SQLite dialect documents this recipe). Read-only work asks for a plain
deferred BEGIN via `READ_ONLY` so browsing never waits for a writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: Execution option that marks a connection as read-only (deferred BEGIN on SQLite).
READ_ONLY = "cardshop_read_only"

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Create the engine for `url`; SQLite gets WAL, immediate writes and a busy timeout."""
    if not url.startswith("sqlite"):
        return create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=10)

    _prepare_sqlite_file(url)
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"

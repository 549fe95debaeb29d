"""Counts the SQL an update costs: statements, and read and write transactions.

Listens on every `Engine` (the async engine's sync core, and the SQLite reader and
writer threads' engines alike), so nothing a code path does escapes the count. Counts,
unlike timings, are exact on a noisy machine, which makes them fit to assert.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection

from core.db import READ_ONLY


@dataclass(frozen=True)
class SqlCount:
    statements: int = 0
    reads: int = 0
    writes: int = 0

    def __sub__(self, other: SqlCount) -> SqlCount:
        return SqlCount(
            self.statements - other.statements, self.reads - other.reads, self.writes - other.writes
        )


@dataclass
class SqlCounter:
    """Running totals; `now()` is a snapshot, and snapshots subtract."""

    statements: int = 0
    reads: int = 0
    writes: int = 0
    executed: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> SqlCount:
        with self._lock:
            return SqlCount(self.statements, self.reads, self.writes)

    def _begin(self, conn: Connection) -> None:
        with self._lock:
            if conn.get_execution_options().get(READ_ONLY, False):
                self.reads += 1
            else:
                self.writes += 1

    def _statement(self, _conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN"):  # SQLite's BEGIN, emitted by core.db on "begin"
            return
        with self._lock:
            self.statements += 1
            self.executed.append(statement)


@contextmanager
def counting_sql() -> Iterator[SqlCounter]:
    """Count every statement and transaction on every engine inside the block."""
    counter = SqlCounter()
    event.listen(Engine, "begin", counter._begin)
    event.listen(Engine, "before_cursor_execute", counter._statement)
    try:
        yield counter
    finally:
        event.remove(Engine, "before_cursor_execute", counter._statement)
        event.remove(Engine, "begin", counter._begin)

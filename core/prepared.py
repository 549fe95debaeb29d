"""Statements compiled once and run straight on the DBAPI connection: the hot path's SQL.

SQLAlchemy spends 35–45 µs of Python on every execution (an execution context, the
cache key of the statement, the parameters processed by name, a result with its
metadata) where `sqlite3` itself takes about 7 µs for the purchase's statements. On a
SQLite file every write goes through one writer thread (`core.uow`), and on PostgreSQL
the one event loop runs every purchase's Python: either way that overhead is the
shop's ceiling on purchases a second, as `make bench` measured.

A `Prepared` keeps SQLAlchemy for everything but that last step: the statement is a
Core construct like any other, compiled by SQLAlchemy for the database, with the
column types' own bind and result processors (so a datetime is stored and read exactly
as SQLAlchemy would), and a failing statement raises SQLAlchemy's own exception
(`IntegrityError` for a broken constraint). Only the per-execution machinery is skipped,
and only where it is safe:

- the driver is `sqlite3` (the SQLite writer and reader threads) or asyncpg, through
  the DBAPI cursor of SQLAlchemy's adapter, which begins the transaction, keeps the
  prepared statements and translates the errors as it does for SQLAlchemy; over
  aiosqlite the statement runs through SQLAlchemy;
- nothing listens to `before_cursor_execute`: the tests that count statements or
  `EXPLAIN` them see the same statement run through SQLAlchemy.

Every row is read to its end, so no statement is left open on a pooled connection
(see `core.db`).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import DateTime, TypeDecorator
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPIModule
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeEngine

#: What can be prepared: a SELECT, or an INSERT, UPDATE or DELETE.
Statement = Select[*tuple[Any, ...]] | UpdateBase
#: Builds the statement for a database (by dialect name), for statements that differ.
Builder = Callable[[str], Statement]

_Process = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """One statement compiled for one database and one set of parameter names."""

    sql: str
    #: The positional parameters in order: each one's name and its bind processor.
    binds: tuple[tuple[str, _Process], ...]
    #: Values the statement fixed itself (literals, a LIMIT), by parameter name.
    fixed: Mapping[str, Any]
    #: The row type, named like SQLAlchemy's rows; None for a statement returning nothing.
    row: Callable[..., Any] | None
    #: Each column's result processor, or None when no column needs one.
    results: tuple[_Process, ...] | None

    @classmethod
    def compile(cls, statement: Statement, dialect: Dialect, keys: Sequence[str]) -> _Plan:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        if compiled.positiontup is None or compiled.post_compile_params:
            raise TypeError(f"cannot prepare {statement}: not plain positional SQL")
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise TypeError(f"cannot prepare {statement}: give every defaulted column a value")
        binds = tuple(
            (name, _bind_processor(compiled.binds[name].type, dialect))
            for name in compiled.positiontup
        )
        columns = list(getattr(statement, "exported_columns", ()))
        row = namedtuple("Row", [c.key for c in columns], rename=True) if columns else None
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
        return cls(
            sql=compiled.string,
            binds=binds,
            fixed={
                name: bind.effective_value
                for name, bind in compiled.binds.items()
                if not bind.required
            },
            row=row,
            results=results if any(results) else None,
        )

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, process in self.binds:
            value = params[name] if name in params else self.fixed[name]
            values.append(value if process is None else process(value))
        return values

    def many_args(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        processed: dict[tuple[int, Any], Any] = {}
        values = []
        for row in rows:
            cells = []
            for position, (name, process) in enumerate(self.binds):
                value = row[name] if name in row else self.fixed[name]
                if process is not None:
                    key = (position, value)
                    try:
                        value = processed[key]
                    except KeyError:
                        value = processed[key] = process(value)
                    except TypeError:  # unhashable (a JSON value): processed each time
                        value = process(value)
                cells.append(value)
            values.append(tuple(cells))
        return values

    def rows(self, fetched: Sequence[Sequence[Any]]) -> list[Any]:
        row, results = self.row, self.results
        if row is None:
            return []
        if results is None:
            return [row(*values) for values in fetched]
        return [
            row(*(v if p is None else p(v) for p, v in zip(results, values, strict=True)))
            for values in fetched
        ]


class Prepared:
    """A Core statement built once, run with SQLAlchemy's types but not its execution.

    Give it the statement, or a `Builder` when it differs by database. Rows come back as
    named tuples (`row.balance`, `row[0]`), or SQLAlchemy's `Row`s where the statement
    runs through SQLAlchemy; both read the same.
    """

    def __init__(self, statement: Statement | Builder) -> None:
        self._build = statement if callable(statement) else _same_everywhere(statement)
        self._plans: dict[tuple[str, tuple[str, ...]], _Plan] = {}

    def statement(self, dialect_name: str) -> Statement:
        """The Core statement for a database, as SQLAlchemy would run it."""
        return self._build(dialect_name)

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Every row the statement returns (none for one that returns nothing)."""
        dbapi = _direct(conn)
        if dbapi is None:
            result = conn.execute(self.statement(conn.dialect.name), dict(params))
            return list(result.all()) if result.returns_rows else []
        plan = self._plan(conn.dialect, params)
        args = plan.args(params)
        cursor = dbapi.cursor()
        try:
            cursor.execute(plan.sql, args)
            fetched = cursor.fetchall() if cursor.description else []
        except conn.dialect.loaded_dbapi.Error as error:
            raise _translated(conn, cursor, error, plan.sql, args, many=False) from error
        finally:
            cursor.close()
        return plan.rows(fetched)

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """The statement once per row, as one executemany; for writes returning nothing.

        Each row becomes one tuple, and a bind processor is called once per distinct
        value of its parameter: a bulk write's rows share their few timestamps and flags.
        """
        if not rows:
            return
        dbapi = _direct(conn)
        if dbapi is None:
            conn.execute(self.statement(conn.dialect.name), [dict(row) for row in rows])
            return
        plan = self._plan(conn.dialect, rows[0])
        values = plan.many_args(rows)
        cursor = dbapi.cursor()
        try:
            cursor.executemany(plan.sql, values)
        except conn.dialect.loaded_dbapi.Error as error:
            raise _translated(conn, cursor, error, plan.sql, values, many=True) from error
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any | None:
        """The first row, or None."""
        rows = self.all(conn, params)
        return rows[0] if rows else None

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any | None:
        """The first column of the first row, or None."""
        rows = self.all(conn, params)
        return rows[0][0] if rows else None

    def _plan(self, dialect: Dialect, params: Mapping[str, Any]) -> _Plan:
        key = (dialect.name, tuple(params))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan.compile(self.statement(dialect.name), dialect, key[1])
        return plan


#: One bind processor per database and datetime type, shared by every plan and
#: remembering the last value it processed (`_remembering_last`).
_DATETIME_BINDS: WeakKeyDictionary[Dialect, dict[Hashable, _Process]] = WeakKeyDictionary()


def _bind_processor(bind_type: TypeEngine[Any], dialect: Dialect) -> _Process:
    """The type's bind processor for `dialect`; for a datetime, one shared by every plan
    that binds the same type, remembering its last value.

    A purchase binds the same `now` nine times over its statements (the order's two
    timestamps, the ledger's, the claim's, the activity's...), and converting a datetime
    for the driver costs more than many a statement's other arguments together.
    """
    process = bind_type.dialect_impl(dialect).bind_processor(dialect)
    impl = bind_type.impl_instance if isinstance(bind_type, TypeDecorator) else bind_type
    if process is None or not isinstance(impl, DateTime):
        return process
    if isinstance(bind_type, TypeDecorator) and not bind_type.cache_ok:
        return _remembering_last(process)  # no cache key to share it by
    shared = _DATETIME_BINDS.setdefault(dialect, {})
    key = bind_type._static_cache_key  # equal keys compile to the same SQL and processing
    if key not in shared:
        shared[key] = _remembering_last(process)
    return shared[key]


def _remembering_last(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`process`, handing back its last result when given the very same (immutable)
    value again. The pair is one tuple, replaced whole, so the writer and reader
    threads sharing it never see one value with another's result."""
    last: list[tuple[Any, Any]] = [(object(), None)]

    def remembered(value: Any) -> Any:
        seen, result = last[0]
        if value is seen:
            return result
        result = process(value)
        last[0] = (value, result)
        return result

    return remembered


def _same_everywhere(statement: Statement) -> Builder:
    return lambda _dialect_name: statement


#: The drivers whose DBAPI connection a `Prepared` statement runs on directly: `sqlite3`
#: (the SQLite writer and reader threads) and SQLAlchemy's asyncpg adapter, whose
#: DBAPI cursor still begins the transaction and translates asyncpg's errors itself.
#: aiosqlite serves no hot path, and its adapter's cursor hops threads anyway.
DIRECT_DRIVERS = frozenset({"pysqlite", "asyncpg"})


def _direct(conn: Connection) -> DBAPIConnection | None:
    """The DBAPI connection to run on, or None to run through SQLAlchemy: another
    driver, or someone listening to the statements (a test counting or EXPLAIN-ing)."""
    if conn.dialect.driver not in DIRECT_DRIVERS or conn.dispatch.before_cursor_execute:
        return None
    return conn.connection.dbapi_connection


def _translated(
    conn: Connection, cursor: Any, error: DBAPIModule.Error, sql: str, args: Any, *, many: bool
) -> StatementError:
    """The driver's error as SQLAlchemy raises it (`IntegrityError` for a broken
    constraint), the connection invalidated first if the error lost it, as SQLAlchemy's
    own execution does, so the pool never hands it out again."""
    lost = conn.dialect.is_disconnect(error, conn.connection.dbapi_connection, cursor)
    if lost:
        conn.invalidate(error)
    return DBAPIError.instance(
        sql,
        args,
        error,
        conn.dialect.loaded_dbapi.Error,
        dialect=conn.dialect,
        ismulti=many,
        connection_invalidated=lost,
    )

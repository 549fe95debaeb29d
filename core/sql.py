"""Small SQL helpers shared by the services (never commit here)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import ColumnElement, Insert, String, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from core.db import table_of
from core.prepared import Prepared


def insert_ignoring_conflict(
    bind: AsyncSession | Connection, model: type[DeclarativeBase], /
) -> Insert:
    """`INSERT … ON CONFLICT DO NOTHING RETURNING <primary key>` for `bind`'s database.

    The way every natural-key award stays single under retries: the second insert of a
    key simply inserts nothing, and `RETURNING` (None then) tells the caller which case it
    was. Pass the values when executing it (`session.scalar(stmt, {...})`, a list of them
    for many rows): the statement is built once per database and table, so the purchase
    path skips building and cache-keying it on every call.
    """
    dialect = bind.get_bind().dialect if isinstance(bind, AsyncSession) else bind.dialect
    return _insert_ignoring_conflict(dialect.name, model)


@functools.cache
def ignoring_conflict(model: type[DeclarativeBase], /) -> Prepared:
    """`insert_ignoring_conflict` as a `Prepared`: the way helpers over a `Connection`
    write it (`ignoring_conflict(Order).scalar(conn, {...})`); sessions use the statement."""
    return Prepared(lambda dialect_name: _insert_ignoring_conflict(dialect_name, model))


@functools.cache
def _insert_ignoring_conflict(dialect_name: str, model: type[DeclarativeBase]) -> Insert:
    table = table_of(model)
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    insert: Insert = dialect.insert(table).on_conflict_do_nothing()
    return insert.returning(*table.primary_key.columns)


def constant(value: str) -> ColumnElement[str]:
    """`value` written into the SQL text instead of bound: for comparing a column that a
    partial index's WHERE names (`RiskEvent.kind == constant("trip")`).

    SQLite re-prepares a statement on every run when a bound value could decide whether
    a partial index applies: the purchase's one SELECT cost 300 µs instead of 30 that
    way. With the value in the text, either database's planner sees at once that the
    partial index fits. Only for the code's own constants, never outside input.
    """
    if not value.isidentifier():
        raise ValueError(f"not a constant: {value!r}")
    return literal_column(f"'{value}'", String())

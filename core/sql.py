"""Small SQL helpers shared by the services (never commit here)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


def insert_ignoring_conflict(
    session: AsyncSession, model: type[DeclarativeBase], /, **values: Any
) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` for either database.

    The way every natural-key award stays single under retries: the second insert of a
    key simply inserts nothing, and `RETURNING` tells the caller which case it was.
    """
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model).values(**values).on_conflict_do_nothing()

"""Stock of codes per product: claiming for an order (the hot path) and importing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import Code


async def claim_codes(
    session: AsyncSession, product_id: int, quantity: int, order_id: int, at: datetime
) -> list[bytes]:
    """Attach `quantity` available codes to `order_id` in one statement; their secrets.

    On PostgreSQL the inner select skips rows another buyer holds (`FOR UPDATE SKIP
    LOCKED`), so concurrent buyers never wait on or share a code; on SQLite the whole
    transaction already holds the write lock (`BEGIN IMMEDIATE`). The caller must roll
    back when fewer than `quantity` come back.
    """
    available = (
        select(Code.id)
        .where(Code.product_id == product_id, Code.order_id.is_(None))
        .order_by(Code.id)
        .limit(quantity)
    )
    if session.bind.dialect.name == "postgresql":
        available = available.with_for_update(skip_locked=True)
    result = await session.execute(
        update(Code)
        .where(Code.id.in_(available.scalar_subquery()))
        .values(order_id=order_id, sold_at=at)
        .returning(Code.secret)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())

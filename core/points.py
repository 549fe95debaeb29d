"""Spendable points (积分): lots with a 12-month expiry, awarded once per natural key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import add_months
from core.ladder import Ladder
from core.models import PointLot
from core.sql import insert_ignoring_conflict


async def award_points(
    session: AsyncSession,
    ladder: Ladder,
    member_id: int,
    *,
    source: str,
    source_key: str,
    amount: int,
    at: datetime,
) -> bool:
    """Add a lot of `amount` points under `source_key`; False if that key was awarded before.

    The key is unique in the database, so a retried update, a job run twice or two
    concurrent requests award once.
    """
    if amount <= 0:
        return False
    inserted = await session.scalar(
        insert_ignoring_conflict(
            session,
            PointLot,
            member_id=member_id,
            source=source,
            source_key=source_key,
            amount=amount,
            remaining=amount,
            earned_at=at,
            expires_at=add_months(at, ladder.points.expiry_months),
        ).returning(PointLot.id)
    )
    return inserted is not None

"""The activity log: what members did, feeding tier metrics and growth points (成长值)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import ActivityEvent, Member
from core.sql import insert_ignoring_conflict

KINDS = frozenset({"purchase", "checkin", "review", "ticket", "active"})


async def record(
    session: AsyncSession,
    member_id: int,
    kind: str,
    ref: str,
    *,
    at: datetime,
    growth: int = 0,
) -> bool:
    """Log one event under its natural key (`kind`, `ref`); growth is added once.

    Returns False when the event was already recorded (a retried update or job).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown activity kind {kind!r}")
    inserted = await session.scalar(
        insert_ignoring_conflict(
            session,
            ActivityEvent,
            member_id=member_id,
            kind=kind,
            ref=ref,
            growth=growth,
            occurred_at=at,
        ).returning(ActivityEvent.id)
    )
    if inserted is None:
        return False
    if growth:
        await session.execute(
            update(Member)
            .where(Member.id == member_id)
            .values(growth_points=Member.growth_points + growth)
        )
    return True

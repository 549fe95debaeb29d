"""The activity log: what members did, feeding tier metrics and growth points (成长值)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Connection

from core.db import table_of
from core.models import ActivityEvent, Member
from core.sql import ignoring_conflict

KINDS = frozenset({"purchase", "checkin", "review", "ticket", "active"})

_members = table_of(Member).c
_ADD_GROWTH = (
    update(table_of(Member))
    .where(_members.id == bindparam("member"))
    .values(growth_points=_members.growth_points + bindparam("growth"))
)


def record_on(
    conn: Connection,
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
    inserted = ignoring_conflict(ActivityEvent).scalar(
        conn,
        {"member_id": member_id, "kind": kind, "ref": ref, "growth": growth, "occurred_at": at},
    )
    if inserted is None:
        return False
    if growth:
        conn.execute(_ADD_GROWTH, {"member": member_id, "growth": growth})
    return True

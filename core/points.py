"""Spendable points (积分): lots with a 12-month expiry, awarded once per natural key.

Every award is a lot (`point_lots`) whose `remaining` only goes down through a row in
`point_spends` (redeem, expire, reverse) and back up through a `restore` row, so
`amount - remaining` of a lot always equals its spends minus its restores. Spending takes
the soonest-expiring lots first, and each decrement is a guarded UPDATE
(`remaining >= x`) on rows locked in one global order (expiry, id), so concurrent
redemptions can neither overdraw a lot nor deadlock each other. Points are separate from
growth points: nothing here touches a member's tier.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, ScalarSelect, and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock, add_months
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.models import Member, PointLot, PointShortfall, PointSpend
from core.sql import ignoring_conflict, insert_ignoring_conflict
from core.uow import Database, run_on

#: `point_spends.reason` values that give points back instead of taking them.
CREDIT_REASONS = frozenset({"restore"})


def award_points_on(
    conn: Connection,
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
    inserted = ignoring_conflict(PointLot).scalar(
        conn,
        {
            "member_id": member_id,
            "source": source,
            "source_key": source_key,
            "amount": amount,
            "remaining": amount,
            "earned_at": at,
            "expires_at": add_months(at, ladder.points.expiry_months),
        },
    )
    return inserted is not None


def available_points(
    member_id: int | ColumnElement[int], at: datetime | ColumnElement[datetime]
) -> ScalarSelect[int]:
    """Points the member can spend at `at`, as an expression a larger SELECT can embed."""
    return (
        select(func.coalesce(func.sum(PointLot.remaining), 0))
        .where(
            PointLot.member_id == member_id,
            PointLot.remaining > 0,
            PointLot.expires_at > at,
        )
        .scalar_subquery()
    )


async def available(session: AsyncSession, member_id: int, at: datetime) -> int:
    """Points the member can spend at `at`: what is left of lots not yet expired."""
    total = await session.scalar(select(available_points(member_id, at)))
    return int(total or 0)


def _take(conn: Connection, lot_id: int, amount: int) -> None:
    """Decrement one lot, refusing to go below zero even if a check above was stale."""
    taken = conn.scalar(
        update(PointLot)
        .where(PointLot.id == lot_id, PointLot.remaining >= amount)
        .values(remaining=PointLot.remaining - amount)
        .returning(PointLot.id)
    )
    if taken is None:
        raise RuntimeError(f"point lot {lot_id} changed under a lock")


def _spendable_lots(
    conn: Connection, member_id: int, at: datetime, *, also_lot: int | None = None
) -> list[tuple[int, int]]:
    """(id, remaining) of the member's unexpired lots, soonest-expiring first, locked.

    Every caller locks in the same (expires_at, id) order, so two transactions touching
    the same member's lots wait for each other instead of deadlocking.
    """
    spendable = and_(PointLot.remaining > 0, PointLot.expires_at > at)
    condition = spendable if also_lot is None else or_(spendable, PointLot.id == also_lot)
    rows = conn.execute(
        select(PointLot.id, PointLot.remaining)
        .where(PointLot.member_id == member_id, condition)
        .order_by(PointLot.expires_at, PointLot.id)
        .with_for_update()
    )
    return [(lot_id, remaining) for lot_id, remaining in rows]


def _spend_soonest(
    conn: Connection,
    member_id: int,
    lots: list[tuple[int, int]],
    amount: int,
    *,
    reason: str,
    order_id: int | None,
    at: datetime,
) -> int:
    """Take up to `amount` from `lots` in their order; returns what was taken."""
    left = amount
    spends = []
    for lot_id, remaining in lots:
        if left == 0:
            break
        part = min(remaining, left)
        if part <= 0:
            continue
        _take(conn, lot_id, part)
        spends.append(
            {
                "member_id": member_id,
                "lot_id": lot_id,
                "order_id": order_id,
                "reason": reason,
                "amount": part,
                "created_at": at,
            }
        )
        left -= part
    if spends:
        conn.execute(insert(PointSpend), spends)
    return amount - left


def redeem_on(
    conn: Connection, member_id: int, amount: int, *, order_id: int, at: datetime
) -> None:
    """Spend `amount` points for an order, soonest-expiring lots first.

    Runs inside the purchase transaction; raises INSUFFICIENT_POINTS (and changes
    nothing) when the member has fewer spendable points than `amount`.
    """
    if amount < 0:
        raise ShopError(ErrorCode.INVALID_AMOUNT, amount=amount)
    if amount == 0:
        return
    lots = _spendable_lots(conn, member_id, at)
    have = sum(remaining for _, remaining in lots)
    if have < amount:
        raise ShopError(ErrorCode.INSUFFICIENT_POINTS, available=have, needed=amount)
    _spend_soonest(conn, member_id, lots, amount, reason="redeem", order_id=order_id, at=at)


async def restore_redeemed(session: AsyncSession, order_id: int, at: datetime) -> int:
    """Give back the points a refunded order redeemed, to the lots they came from.

    Points from a lot that has expired since are not given back: they would have
    lapsed had the member not spent them. Each give-back is a `restore` row, so calling
    this twice for one order restores once. Returns the points restored.
    """
    lot_ids = (
        await session.scalars(
            select(PointSpend.lot_id)
            .where(PointSpend.order_id == order_id, PointSpend.reason == "redeem")
            .distinct()
        )
    ).all()
    if not lot_ids:
        return 0
    # Lock first, then read the ledger, so a concurrent restore's rows are seen.
    locked = await session.execute(
        select(PointLot.id, PointLot.member_id, PointLot.expires_at)
        .where(PointLot.id.in_(lot_ids))
        .order_by(PointLot.expires_at, PointLot.id)
        .with_for_update()
    )
    lots = [(lot_id, member_id, expires_at) for lot_id, member_id, expires_at in locked]
    net: dict[int, int] = defaultdict(int)
    ledger = await session.execute(
        select(PointSpend.lot_id, PointSpend.reason, func.sum(PointSpend.amount))
        .where(PointSpend.order_id == order_id, PointSpend.reason.in_(("redeem", "restore")))
        .group_by(PointSpend.lot_id, PointSpend.reason)
    )
    for lot_id, reason, total in ledger:
        net[lot_id] += int(total) if reason == "redeem" else -int(total)
    restored = 0
    for lot_id, member_id, expires_at in lots:
        owed = net[lot_id]
        if owed <= 0 or expires_at <= at:
            continue
        await session.execute(
            update(PointLot)
            .where(PointLot.id == lot_id)
            .values(remaining=PointLot.remaining + owed)
            .execution_options(synchronize_session=False)
        )
        session.add(
            PointSpend(
                member_id=member_id,
                lot_id=lot_id,
                order_id=order_id,
                reason="restore",
                amount=owed,
                created_at=at,
            )
        )
        restored += owed
    await session.flush()
    return restored


async def reverse(session: AsyncSession, member_id: int, source_key: str, *, at: datetime) -> int:
    """Take back what the lot `source_key` awarded (a refunded order's purchase points).

    Its remaining goes first; whatever of it was already redeemed is taken from the
    member's other lots, soonest-expiring first, never below zero, and what still cannot
    be taken is the shortfall. Points that expired from the lot are not owed. The
    `point_shortfalls` row (amount 0 when nothing fell short) is the once-only guard:
    reversing a key twice takes nothing the second time. Returns the points taken.
    """
    lot = (
        await session.execute(
            select(PointLot.id, PointLot.amount).where(
                PointLot.source_key == source_key, PointLot.member_id == member_id
            )
        )
    ).first()
    if lot is None:
        return 0
    lot_id, lot_amount = lot
    first = await session.scalar(
        insert_ignoring_conflict(session, PointShortfall),
        {"member_id": member_id, "source_key": source_key, "amount": 0, "created_at": at},
    )
    if first is None:
        return 0
    lots = await run_on(session, _spendable_lots, member_id, at, also_lot=lot_id)
    expired = await session.scalar(
        select(func.coalesce(func.sum(PointSpend.amount), 0)).where(
            PointSpend.lot_id == lot_id, PointSpend.reason == "expire"
        )
    )
    owed = lot_amount - int(expired or 0)
    own = [(i, remaining) for i, remaining in lots if i == lot_id]
    others = [(i, remaining) for i, remaining in lots if i != lot_id]
    taken = await run_on(
        session, _spend_soonest, member_id, own, owed, reason="reverse", order_id=None, at=at
    )
    taken += await run_on(
        session, _spend_soonest, member_id, others, owed - taken, reason="reverse",
        order_id=None, at=at,
    )  # fmt: skip
    if taken < owed:
        await session.execute(
            update(PointShortfall)
            .where(PointShortfall.id == first)
            .values(amount=owed - taken)
            .execution_options(synchronize_session=False)
        )
    return taken


@dataclass(frozen=True, slots=True)
class PointsBalance:
    available: int
    #: Points in lots that expire within the warning window (0 when none do).
    expiring: int
    #: When the first of those lots expires; None when nothing expires soon.
    expiring_at: datetime | None


@dataclass(frozen=True, slots=True)
class PointsEntry:
    """One line of the points statement; `amount` is signed (+ earned or restored)."""

    at: datetime
    kind: str  # earn, redeem, expire, reverse, restore
    source: str  # what the lot came from: checkin, review, purchase, ...
    amount: int
    order_id: int | None


@dataclass(frozen=True, slots=True)
class ExpiryWarning:
    """Points of one member about to expire, for the win-back (衰退预警) message."""

    member_id: int
    telegram_id: int | None
    locale: str | None
    amount: int
    #: The soonest expiry among the warned lots.
    expires_at: datetime


class Points:
    """The member-facing points statement and the expiry jobs."""

    def __init__(self, db: Database, ladder: Ladder, clock: Clock) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock

    def _warning_window(self, now: datetime) -> datetime:
        return now + timedelta(days=self._ladder.points.expiry_warning_days)

    async def balance(self, member_id: int) -> PointsBalance:
        now = self._clock.now()
        horizon = self._warning_window(now)
        async with self._db.read() as session:
            rows = await session.execute(
                select(PointLot.remaining, PointLot.expires_at).where(
                    PointLot.member_id == member_id,
                    PointLot.remaining > 0,
                    PointLot.expires_at > now,
                )
            )
            lots = [(remaining, expires_at) for remaining, expires_at in rows]
        soon = [(remaining, expires_at) for remaining, expires_at in lots if expires_at <= horizon]
        return PointsBalance(
            available=sum(remaining for remaining, _ in lots),
            expiring=sum(remaining for remaining, _ in soon),
            expiring_at=min((expires_at for _, expires_at in soon), default=None),
        )

    async def history(self, member_id: int, limit: int = 20) -> list[PointsEntry]:
        """The newest `limit` awards and spends, newest first."""
        async with self._db.read() as session:
            earned = await session.execute(
                select(PointLot.earned_at, PointLot.source, PointLot.amount)
                .where(PointLot.member_id == member_id)
                .order_by(PointLot.earned_at.desc(), PointLot.id.desc())
                .limit(limit)
            )
            spent = await session.execute(
                select(
                    PointSpend.created_at,
                    PointSpend.reason,
                    PointLot.source,
                    PointSpend.amount,
                    PointSpend.order_id,
                )
                .join(PointLot, PointLot.id == PointSpend.lot_id)
                .where(PointSpend.member_id == member_id)
                .order_by(PointSpend.created_at.desc(), PointSpend.id.desc())
                .limit(limit)
            )
            entries = [
                PointsEntry(at=at, kind="earn", source=source, amount=amount, order_id=None)
                for at, source, amount in earned
            ] + [
                PointsEntry(
                    at=at,
                    kind=reason,
                    source=source,
                    amount=amount if reason in CREDIT_REASONS else -amount,
                    order_id=order_id,
                )
                for at, reason, source, amount, order_id in spent
            ]
        entries.sort(key=lambda entry: entry.at, reverse=True)
        return entries[:limit]

    async def expire(self) -> int:
        """Zero the lots past their expiry, with an `expire` row each; returns points expired.

        Only lots with something left are touched, so a second run finds nothing.
        """
        now = self._clock.now()
        async with self._db.transaction() as session:
            rows = await session.execute(
                select(PointLot.id, PointLot.member_id, PointLot.remaining)
                .where(PointLot.remaining > 0, PointLot.expires_at <= now)
                .order_by(PointLot.expires_at, PointLot.id)
                .with_for_update()
            )
            total = 0
            for lot_id, member_id, remaining in rows:
                await run_on(session, _take, lot_id, remaining)
                session.add(
                    PointSpend(
                        member_id=member_id,
                        lot_id=lot_id,
                        order_id=None,
                        reason="expire",
                        amount=remaining,
                        created_at=now,
                    )
                )
                total += remaining
        return total

    async def expiry_warnings(self) -> list[ExpiryWarning]:
        """Mark and return lots expiring within the warning window, once per lot.

        The single `UPDATE ... WHERE warned_at IS NULL RETURNING` is the guard: a
        second (or concurrent) run gets nothing back for lots already warned.
        """
        now = self._clock.now()
        async with self._db.transaction() as session:
            marked = await session.execute(
                update(PointLot)
                .where(
                    PointLot.warned_at.is_(None),
                    PointLot.remaining > 0,
                    PointLot.expires_at > now,
                    PointLot.expires_at <= self._warning_window(now),
                )
                .values(warned_at=now)
                .returning(PointLot.member_id, PointLot.remaining, PointLot.expires_at)
                .execution_options(synchronize_session=False)
            )
            amounts: dict[int, int] = defaultdict(int)
            soonest: dict[int, datetime] = {}
            for member_id, remaining, expires_at in marked:
                amounts[member_id] += remaining
                soonest[member_id] = min(soonest.get(member_id, expires_at), expires_at)
            if not amounts:
                return []
            members = await session.execute(
                select(Member.id, Member.telegram_id, Member.locale).where(Member.id.in_(amounts))
            )
            return [
                ExpiryWarning(
                    member_id=member_id,
                    telegram_id=telegram_id,
                    locale=locale,
                    amount=amounts[member_id],
                    expires_at=soonest[member_id],
                )
                for member_id, telegram_id, locale in sorted(members)
            ]

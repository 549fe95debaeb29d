"""Referral commission (分销返利, seed 000): one level, credited once, reversed on refund.

When a referred member's order is delivered, their referrer earns the referrer's tier's
`commission_percent` of the order total, if that tier has `referral_commission`. The
amount is floored to the fen (a share never rounds up into money the shop did not make).
The credit is a `commission` ledger row carrying the order id, unique per order in the
database; the order's PAID → DELIVERED transition it rides on already makes it single,
the index makes it single whatever the code does. A refund takes it back as a
`commission_rev` row, never below zero: what the referrer already spent is the
shortfall, written into that row's reason (`shortfall=<fen>`).

Self-referral and referral loops earn nothing: the referrer chain above the buyer is
walked, and meeting the buyer (or any member twice) means a loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection

from core.clock import Clock
from core.db import table_of
from core.ladder import Ladder
from core.models import PAID_STATUSES, Member, Order, WalletEntry
from core.sql import constant
from core.uow import Database
from core.wallet import post_entry_on

_members = table_of(Member).c
_entries = table_of(WalletEntry).c
_referrers = table_of(Member).alias("referrers")

#: How far up the referrer chain a loop is looked for; deeper chains are taken as no loop.
MAX_CHAIN = 64

#: Orders paid within this window count a referred member as "bought" on the screen.
ACTIVE_DAYS = 365


def commission_amount(total: int, percent: int) -> int:
    """`percent` % of `total` 分, floored to the fen."""
    return total * percent // 100


@dataclass(frozen=True, slots=True)
class CommissionCredit:
    """A commission just credited, with what the bot needs to tell the referrer: their
    chat and language, and the buyer's name already masked (see `mask_name`)."""

    order_id: int
    referrer_id: int
    telegram_id: int | None
    locale: str | None
    buyer_name: str
    amount: int


#: The buyer's referrer and their tier, in one statement (none: the buyer was not referred),
#: with the referrer's chat and language and the buyer's name for the notice.
_REFERRER = (
    select(
        _referrers.c.id,
        _referrers.c.tier_key,
        _referrers.c.telegram_id,
        _referrers.c.locale,
        _members.display_name,
    )
    .select_from(table_of(Member))
    .join(_referrers, _referrers.c.id == _members.referrer_id)
    .where(_members.id == bindparam("buyer"))
)


def _in_loop(conn: Connection, buyer_id: int, referrer_id: int) -> bool:
    seen = {buyer_id}
    current: int | None = referrer_id
    for _ in range(MAX_CHAIN):
        if current is None:
            return False
        if current in seen:
            return True
        seen.add(current)
        current = conn.scalar(select(_members.referrer_id).where(_members.id == current))
    return False


def commission_on(
    conn: Connection, ladder: Ladder, order_id: int, buyer_id: int, total: int, at: datetime
) -> CommissionCredit | None:
    """Credit the buyer's referrer for a just-delivered order; what was credited, if any.

    Call it in the transaction that moved the order to delivered, once: the credit it
    returns is then the one and only, so telling the referrer about it tells them once.
    """
    found = conn.execute(_REFERRER, {"buyer": buyer_id}).first()
    if found is None or found.id == buyer_id:
        return None
    referrer_id = int(found.id)
    capabilities = ladder.tier(found.tier_key).capabilities
    # The tier first: the chain is walked only when there is something to pay.
    if not capabilities.referral_commission or _in_loop(conn, buyer_id, referrer_id):
        return None
    amount = commission_amount(total, capabilities.commission_percent)
    if amount <= 0:
        return None
    post_entry_on(
        conn,
        referrer_id,
        amount,
        kind="commission",
        at=at,
        order_id=order_id,
        reason=f"referral order {order_id}",
    )
    return CommissionCredit(
        order_id=order_id,
        referrer_id=referrer_id,
        telegram_id=found.telegram_id,
        locale=found.locale,
        buyer_name=mask_name(found.display_name or ""),
        amount=amount,
    )


def reverse_commission_on(conn: Connection, order_id: int, at: datetime) -> int:
    """Take back a refunded order's commission, never below zero; returns the 分 taken.

    What the referrer already spent stays with them and is recorded as the shortfall in
    the reversal row's reason; the row exists even when nothing could be taken, and its
    unique index makes a second reversal of one order impossible.
    """
    credit = conn.execute(
        select(_entries.member_id, _entries.amount).where(
            _entries.order_id == order_id, _entries.kind == constant("commission")
        )
    ).first()
    if credit is None:
        return 0
    referrer_id, owed = int(credit[0]), int(credit[1])
    balance_query = select(_members.balance).where(_members.id == referrer_id)
    if conn.dialect.name == "postgresql":
        balance_query = balance_query.with_for_update()
    balance = int(conn.scalar(balance_query) or 0)
    taken = min(owed, balance)
    post_entry_on(
        conn,
        referrer_id,
        -taken,
        kind="commission_rev",
        at=at,
        order_id=order_id,
        reason=f"refund of referral order {order_id}; shortfall={owed - taken}",
    )
    return taken


@dataclass(frozen=True, slots=True)
class CommissionLine:
    at: datetime
    buyer_name: str
    amount: int


@dataclass(frozen=True, slots=True)
class ReferralSummary:
    """What a referrer sees of their referrals (net amounts: reversals subtracted)."""

    code: str
    joined: int
    bought: int
    earned: int
    recent: tuple[CommissionLine, ...]


@dataclass(frozen=True, slots=True)
class ReferrerRow:
    member_id: int
    name: str
    joined: int
    bought: int
    #: Net: commission credited minus what refunds took back.
    earned: int
    #: What refunds took back, in 分 (positive).
    reversed: int


def mask_name(name: str) -> str:
    """A referred member's name as the referrer sees it: first character, then stars."""
    return (name[:1] + "***") if name else "***"


class Referrals:
    """Reading referrals: a member's own screen and the admin's report."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def summary(self, member_id: int, *, limit: int = 10) -> ReferralSummary:
        since = self._clock.now() - timedelta(days=ACTIVE_DAYS)
        async with self._db.read() as session:
            code = await session.scalar(select(Member.referral_code).where(Member.id == member_id))
            joined = await session.scalar(
                select(func.count()).select_from(Member).where(Member.referrer_id == member_id)
            )
            bought = await session.scalar(
                select(func.count(func.distinct(Order.member_id)))
                .join(Member, Member.id == Order.member_id)
                .where(
                    Member.referrer_id == member_id,
                    Order.status.in_(PAID_STATUSES),
                    Order.paid_at >= since,
                )
            )
            earned = await session.scalar(
                select(func.coalesce(func.sum(WalletEntry.amount), 0)).where(
                    WalletEntry.member_id == member_id,
                    WalletEntry.kind.in_(("commission", "commission_rev")),
                )
            )
            rows = (
                await session.execute(
                    select(WalletEntry.created_at, Member.display_name, WalletEntry.amount)
                    .join(Order, Order.id == WalletEntry.order_id)
                    .join(Member, Member.id == Order.member_id)
                    .where(
                        WalletEntry.member_id == member_id,
                        WalletEntry.kind == constant("commission"),
                    )
                    .order_by(WalletEntry.id.desc())
                    .limit(limit)
                )
            ).all()
        return ReferralSummary(
            code=str(code or ""),
            joined=int(joined or 0),
            bought=int(bought or 0),
            earned=int(earned or 0),
            recent=tuple(
                CommissionLine(at, mask_name(name or ""), amount) for at, name, amount in rows
            ),
        )

    async def report(self) -> list[ReferrerRow]:
        """Every member who referred someone, most commission first."""
        since = self._clock.now() - timedelta(days=ACTIVE_DAYS)
        async with self._db.read() as session:
            joined = dict(
                (
                    await session.execute(
                        select(Member.referrer_id, func.count())
                        .where(Member.referrer_id.is_not(None))
                        .group_by(Member.referrer_id)
                    )
                ).all()
            )
            bought = dict(
                (
                    await session.execute(
                        select(Member.referrer_id, func.count(func.distinct(Order.member_id)))
                        .join(Order, Order.member_id == Member.id)
                        .where(
                            Member.referrer_id.is_not(None),
                            Order.status.in_(PAID_STATUSES),
                            Order.paid_at >= since,
                        )
                        .group_by(Member.referrer_id)
                    )
                ).all()
            )
            earned: dict[int, int] = {}
            taken_back: dict[int, int] = {}
            for member_id, kind, amount in (
                await session.execute(
                    select(WalletEntry.member_id, WalletEntry.kind, func.sum(WalletEntry.amount))
                    .where(WalletEntry.kind.in_(("commission", "commission_rev")))
                    .group_by(WalletEntry.member_id, WalletEntry.kind)
                )
            ).all():
                earned[member_id] = earned.get(member_id, 0) + int(amount or 0)
                if kind == "commission_rev":
                    taken_back[member_id] = -int(amount or 0)
            ids = sorted(i for i in set(joined) | set(earned) if i is not None)
            names = dict(
                (
                    await session.execute(
                        select(Member.id, Member.display_name).where(Member.id.in_(ids))
                    )
                ).all()
            )
        rows = [
            ReferrerRow(
                member_id=int(i),
                name=names.get(i) or "",
                joined=int(joined.get(i, 0)),
                bought=int(bought.get(i, 0)),
                earned=earned.get(i, 0),
                reversed=taken_back.get(i, 0),
            )
            for i in ids
        ]
        return sorted(rows, key=lambda r: (-r.earned, -r.joined, r.member_id))

"""Shop statistics over the last N calendar days in the shop's time zone.

"Today" is the shop's calendar day, not UTC's, so a window of N days starts at local
midnight N-1 days ago and ends at the next local midnight. Revenue counts orders whose
money the shop kept (paid or delivered), by the moment they were paid. Money in is
counted apart, by payment method: top-ups credited in the window and not given back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from core.clock import Clock, local_day, next_local_midnight
from core.errors import ErrorCode, ShopError
from core.models import PAID_STATUSES, CheckIn, Member, Order, OrderStatus, Payment, PaymentState
from core.tickets import SupportMetrics, Tickets
from core.uow import Database

#: The longest window the stats answer for (a year and a leap day).
MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class DayPoint:
    day: date
    revenue: int
    orders: int


@dataclass(frozen=True, slots=True)
class MethodTotal:
    """Top-ups of one payment method: how many, and the 分 credited."""

    count: int
    amount: int


@dataclass(frozen=True, slots=True)
class StatsSummary:
    days: int
    date_from: date
    date_to: date
    #: Paid orders in the window: money kept (分), count and codes delivered with them.
    revenue: int
    orders: int
    codes_sold: int
    #: Orders refunded in the window and the money given back (分).
    refunds: int
    refunded: int
    new_members: int
    checkins: int
    #: Members per tier key, as of now (tiers without members are absent).
    tier_distribution: dict[str, int]
    #: Tickets opened in the window: SLA met, FRT, CSAT, FCR.
    tickets: SupportMetrics
    #: Money in: top-ups credited in the window and kept (not refunded), by payment
    #: method (stars, alipay, wxpay, qqpay); methods without any are absent.
    top_ups: dict[str, MethodTotal]


@dataclass(frozen=True, slots=True)
class Window:
    date_from: date
    date_to: date
    start: datetime
    end: datetime


class Stats:
    def __init__(self, db: Database, clock: Clock, zone: ZoneInfo, tickets: Tickets) -> None:
        self._db = db
        self._clock = clock
        self._zone = zone
        self._tickets = tickets

    def window(self, days: int) -> Window:
        """The last `days` shop-local calendar days, today included."""
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise ShopError(ErrorCode.INVALID_INPUT, field="days", max=MAX_DAYS)
        now = self._clock.now()
        today = local_day(now, self._zone)
        first = today - timedelta(days=days - 1)
        start = datetime.combine(first, time.min, self._zone).astimezone(UTC)
        return Window(first, today, start, next_local_midnight(now, self._zone))

    async def summary(self, days: int) -> StatsSummary:
        window = self.window(days)
        paid = (
            Order.status.in_(PAID_STATUSES),
            Order.paid_at >= window.start,
            Order.paid_at < window.end,
        )
        async with self._db.read() as session:
            revenue, orders, codes = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(Order.total), 0),
                        func.count(Order.id),
                        func.coalesce(func.sum(Order.quantity), 0),
                    ).where(*paid)
                )
            ).one()
            refunds, refunded = (
                await session.execute(
                    select(func.count(Order.id), func.coalesce(func.sum(Order.total), 0)).where(
                        Order.status == OrderStatus.REFUNDED.value,
                        Order.refunded_at >= window.start,
                        Order.refunded_at < window.end,
                    )
                )
            ).one()
            new_members = await session.scalar(
                select(func.count(Member.id)).where(
                    Member.created_at >= window.start, Member.created_at < window.end
                )
            )
            checkins = await session.scalar(
                select(func.count(CheckIn.id)).where(
                    CheckIn.day >= window.date_from, CheckIn.day <= window.date_to
                )
            )
            tiers = await session.execute(
                select(Member.tier_key, func.count(Member.id)).group_by(Member.tier_key)
            )
            distribution = {tier: int(count) for tier, count in tiers}
            by_method = await session.execute(
                select(Payment.method, func.count(Payment.id), func.sum(Payment.amount))
                .where(
                    Payment.state == PaymentState.CREDITED.value,
                    Payment.credited_at >= window.start,
                    Payment.credited_at < window.end,
                )
                .group_by(Payment.method)
            )
            top_ups = {
                method: MethodTotal(int(count), int(amount)) for method, count, amount in by_method
            }
        return StatsSummary(
            days=days,
            date_from=window.date_from,
            date_to=window.date_to,
            revenue=int(revenue),
            orders=int(orders),
            codes_sold=int(codes),
            refunds=int(refunds),
            refunded=int(refunded),
            new_members=new_members or 0,
            checkins=checkins or 0,
            tier_distribution=distribution,
            tickets=await self._tickets.metrics(window.start),
            top_ups=top_ups,
        )

    async def daily(self, days: int) -> list[DayPoint]:
        """Revenue and paid orders per shop-local day, oldest first, every day present."""
        window = self.window(days)
        async with self._db.read() as session:
            rows = await session.execute(
                select(Order.paid_at, Order.total).where(
                    Order.status.in_(PAID_STATUSES),
                    Order.paid_at >= window.start,
                    Order.paid_at < window.end,
                )
            )
            paid = rows.all()
        revenue = {window.date_from + timedelta(days=i): 0 for i in range(days)}
        orders = dict.fromkeys(revenue, 0)
        for paid_at, total in paid:
            day = local_day(cast(datetime, paid_at), self._zone)
            revenue[day] += total
            orders[day] += 1
        return [DayPoint(day, revenue[day], orders[day]) for day in revenue]

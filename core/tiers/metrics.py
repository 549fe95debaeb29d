"""The SQL that measures a member for the tier rules: every metric in one statement.

The metrics are computed, never stored (except lifetime spend, joint campaigns and
growth points, which live on the member row), so a refund, a violation or a referral's
purchase counts at the next measurement without anything to keep in step.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, Select, and_, bindparam, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.errors import ErrorCode, ShopError
from core.models import Member, Order, UTCDateTime, Violation
from core.tiers.rules import FULFILMENT_WITHOUT_ORDERS, Metrics

#: Windows that define the metrics named in tiers.toml (spend_365d, purchases_6m, ...).
YEAR = timedelta(days=365)
HALF_YEAR = timedelta(days=182)
VIOLATION_WINDOW = timedelta(days=90)

#: Orders whose money the shop kept; only these count as spend.
PAID_STATUSES = ("paid", "delivered")
#: Orders that reached an end (delivered or not): the base of the fulfilment rate.
SETTLED_STATUSES = ("paid", "delivered", "failed", "refunded")


def _metrics_statement() -> Select[Any]:
    """Every metric in one statement: the member row, one aggregate over orders, two counts.

    Built once with bound parameters: assembling a statement this size (and its cache
    key) on every purchase costs more than running it. Every window ends at `until`, so
    a quarterly review measures the quarter, not the moment the job happened to run.
    """
    until = bindparam("until", type_=UTCDateTime())
    year_ago = bindparam("year_ago", type_=UTCDateTime())
    half_year_ago = bindparam("half_year_ago", type_=UTCDateTime())
    violations_since = bindparam("violations_since", type_=UTCDateTime())
    member_id = bindparam("member_id", type_=Integer())
    paid = Order.status.in_(PAID_STATUSES)
    orders = (
        select(
            Order.member_id,
            func.sum(
                case(
                    (and_(paid, Order.paid_at >= year_ago, Order.paid_at <= until), Order.total),
                    else_=0,
                )
            ).label("spend"),
            func.count(
                case((and_(paid, Order.paid_at >= half_year_ago, Order.paid_at <= until), 1))
            ).label("purchases"),
            func.count(
                case((and_(Order.status.in_(SETTLED_STATUSES), Order.created_at >= year_ago), 1))
            ).label("settled"),
            func.count(case((and_(paid, Order.created_at >= year_ago), 1))).label("fulfilled"),
        )
        .where(Order.member_id == member_id, Order.created_at <= until)
        .group_by(Order.member_id)
        .subquery()
    )
    violations = (
        select(func.count(Violation.id))
        .where(
            Violation.member_id == member_id,
            Violation.serious.is_(True),
            Violation.created_at >= violations_since,
            Violation.created_at <= until,
        )
        .scalar_subquery()
    )
    referred = aliased(Member)
    referrals = (
        select(func.count(referred.id))
        .where(
            referred.referrer_id == member_id,
            exists().where(
                Order.member_id == referred.id,
                paid,
                Order.paid_at >= year_ago,
                Order.paid_at <= until,
            ),
        )
        .scalar_subquery()
    )
    return (
        select(
            Member.total_spent,
            Member.joint_campaigns,
            Member.growth_points,
            func.coalesce(orders.c.spend, 0),
            func.coalesce(orders.c.purchases, 0),
            func.coalesce(orders.c.settled, 0),
            func.coalesce(orders.c.fulfilled, 0),
            violations,
            referrals,
        )
        .select_from(Member)
        .outerjoin(orders, orders.c.member_id == Member.id)
        .where(Member.id == member_id)
    )


METRICS = _metrics_statement()


async def load_metrics(session: AsyncSession, member_id: int, now: datetime) -> Metrics:
    """The member's tier metrics at `now` (windows end there; lifetime spend is today's)."""
    row = (
        await session.execute(
            METRICS,
            {
                "member_id": member_id,
                "until": now,
                "year_ago": now - YEAR,
                "half_year_ago": now - HALF_YEAR,
                "violations_since": now - VIOLATION_WINDOW,
            },
        )
    ).one_or_none()
    if row is None:
        raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
    total, joint, growth, spend, purchases, settled, fulfilled, violated, referred_count = row
    return Metrics(
        total_spent=int(total),
        spend_365d=int(spend),
        purchases_6m=int(purchases),
        violations_90d=int(violated),
        fulfilment_rate=(
            FULFILMENT_WITHOUT_ORDERS if not settled else int(fulfilled) * 100 // int(settled)
        ),
        referrals_active=int(referred_count),
        joint_campaigns=int(joint),
        growth_points=int(growth),
    )

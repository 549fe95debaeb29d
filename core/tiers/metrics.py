"""The SQL that measures a member for the tier rules: any set of metrics in one statement.

The metrics are computed, never stored (except lifetime spend, joint campaigns and
growth points, which live on the member row), so a refund, a violation or a referral's
purchase counts at the next measurement without anything to keep in step.

Each metric is read by one of four parts, and a statement holds only the parts asked
for: the check after a purchase or check-in measures just what could still move the
member (`rules.settlement_check`), the level card and the review measure everything.
Every part reads an index range bounded by its window, so years of old orders cost
nothing: paid orders by (member_id, paid_at), settled ones by (member_id, created_at).

The quarterly review measures a whole range of members at once (`measure_range`): the
same parts, each one GROUP BY statement over the range instead of one row per member,
built from the same conditions so the two ways of measuring cannot drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Integer,
    Select,
    bindparam,
    case,
    exists,
    func,
    select,
    true,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from core.errors import ErrorCode, ShopError
from core.ladder import Metric
from core.models import (
    PAID_STATUSES,
    SETTLED_STATUSES,
    Member,
    Order,
    UTCDateTime,
    Violation,
)
from core.tiers.rules import FULFILMENT_WITHOUT_ORDERS, ROW_METRICS, Metrics

#: Windows that define the metrics named in tiers.toml (spend_365d, purchases_6m, ...).
YEAR = timedelta(days=365)
HALF_YEAR = timedelta(days=182)
VIOLATION_WINDOW = timedelta(days=90)

_member_id = bindparam("member_id", type_=Integer())
_until = bindparam("until", type_=UTCDateTime())
_year_ago = bindparam("year_ago", type_=UTCDateTime())
_half_year_ago = bindparam("half_year_ago", type_=UTCDateTime())
_violations_since = bindparam("violations_since", type_=UTCDateTime())


class _Part(Enum):
    """What a statement reads to measure some of the metrics."""

    MEMBER = "member"
    PAID = "paid"
    SETTLED = "settled"
    VIOLATIONS = "violations"
    REFERRALS = "referrals"


_PART_OF: Mapping[Metric, _Part] = {
    **dict.fromkeys(ROW_METRICS, _Part.MEMBER),
    Metric.SPEND_365D: _Part.PAID,
    Metric.PURCHASES_6M: _Part.PAID,
    Metric.FULFILMENT_RATE: _Part.SETTLED,
    Metric.VIOLATIONS_90D: _Part.VIOLATIONS,
    Metric.REFERRALS_ACTIVE: _Part.REFERRALS,
}


def _paid_where(member: ColumnElement[bool]) -> tuple[ColumnElement[bool], ...]:
    """Paid orders of `member` (a predicate on `Order.member_id`) in the spend window."""
    return (
        member,
        Order.status.in_(PAID_STATUSES),
        Order.paid_at >= _year_ago,
        Order.paid_at <= _until,
        Order.created_at <= _until,
    )


def _paid_columns() -> tuple[ColumnElement[int], ColumnElement[int]]:
    return (
        func.coalesce(func.sum(Order.total), 0).label("spend"),
        func.count(case((Order.paid_at >= _half_year_ago, 1))).label("purchases"),
    )


def _paid() -> FromClause:
    """Spend and purchases: the member's paid orders with `paid_at` in the last year.

    One aggregate row (no GROUP BY), read through the (member_id, paid_at) range.
    """
    return (
        select(*_paid_columns()).where(*_paid_where(Order.member_id == _member_id)).subquery("paid")
    )


def _settled_where(member: ColumnElement[bool]) -> tuple[ColumnElement[bool], ...]:
    """Orders of `member` placed in the last year that reached an end."""
    return (
        member,
        Order.created_at >= _year_ago,
        Order.created_at <= _until,
        Order.status.in_(SETTLED_STATUSES),
    )


def _settled_columns() -> tuple[ColumnElement[int], ColumnElement[int]]:
    return (
        func.count().label("settled"),
        func.count(case((Order.status.in_(PAID_STATUSES), 1))).label("fulfilled"),
    )


def _settled() -> FromClause:
    """Fulfilment: of the orders placed in the last year that reached an end, the paid ones."""
    return (
        select(*_settled_columns())
        .where(*_settled_where(Order.member_id == _member_id))
        .subquery("settled")
    )


def _violations_where(member: ColumnElement[bool]) -> tuple[ColumnElement[bool], ...]:
    return (
        member,
        Violation.serious.is_(True),
        Violation.created_at >= _violations_since,
        Violation.created_at <= _until,
    )


def _violations() -> ColumnElement[int]:
    return (
        select(func.count(Violation.id))
        .where(*_violations_where(Violation.member_id == _member_id))
        .scalar_subquery()
        .label("violations")
    )


_referred = aliased(Member, name="referred")


def _referrals_where(referrer: ColumnElement[bool]) -> tuple[ColumnElement[bool], ...]:
    """Referred members (`_referred`, by `referrer` on their `referrer_id`) with an order
    paid in the last year (index on referrer_id)."""
    return (
        referrer,
        exists().where(
            Order.member_id == _referred.id,
            Order.status.in_(PAID_STATUSES),
            Order.paid_at >= _year_ago,
            Order.paid_at <= _until,
        ),
    )


def _referrals() -> ColumnElement[int]:
    """Referred members with an order paid in the last year (index on referrer_id)."""
    return (
        select(func.count(_referred.id))
        .where(*_referrals_where(_referred.referrer_id == _member_id))
        .scalar_subquery()
        .label("referrals")
    )


def fulfilment_rate(settled: int, fulfilled: int) -> int:
    """The percent of settled orders that were fulfilled (100 with none settled)."""
    return fulfilled * 100 // settled if settled else FULFILMENT_WITHOUT_ORDERS


def statement_for(metrics: Collection[Metric]) -> Select[Any]:
    """The statement that measures `metrics`: one row, binding `member_id` and the windows."""
    return _statement(frozenset(_PART_OF[metric] for metric in metrics))


@functools.cache
def _statement(parts: frozenset[_Part]) -> Select[Any]:
    """The statement reading `parts`, built once per set of parts.

    Built once with bound parameters: assembling a statement this size (and its cache
    key) on every purchase costs more than running it. Every window ends at `until`, so
    a quarterly review measures the quarter, not the moment the job happened to run.
    """
    columns: list[ColumnElement[Any] | InstrumentedAttribute[int]] = []
    sources: list[FromClause] = []
    if _Part.MEMBER in parts:
        columns += [Member.total_spent, Member.joint_campaigns, Member.growth_points]
    if _Part.PAID in parts:
        paid = _paid()
        sources.append(paid)
        columns += [paid.c.spend, paid.c.purchases]
    if _Part.SETTLED in parts:
        settled = _settled()
        sources.append(settled)
        columns += [settled.c.settled, settled.c.fulfilled]
    if _Part.VIOLATIONS in parts:
        columns.append(_violations())
    if _Part.REFERRALS in parts:
        columns.append(_referrals())
    query = select(*columns)
    if _Part.MEMBER in parts:
        query = query.select_from(Member).where(Member.id == _member_id)
    elif sources:
        query = query.select_from(sources.pop(0))
    for source in sources:
        query = query.join(source, true())
    return query


#: Every metric: what the level card, a settlement and the quarterly review read.
METRICS = statement_for(tuple(Metric))


def windows(member_id: int, now: datetime) -> dict[str, Any]:
    """The values `statement_for`'s statements bind: the member and windows ending at `now`."""
    return {
        "member_id": member_id,
        "until": now,
        "year_ago": now - YEAR,
        "half_year_ago": now - HALF_YEAR,
        "violations_since": now - VIOLATION_WINDOW,
    }


async def measure(
    session: AsyncSession, member_id: int, metrics: Collection[Metric], now: datetime
) -> dict[Metric, int]:
    """Only `metrics` of the member at `now` (windows end there; lifetime spend is today's)."""
    parts = frozenset(_PART_OF[metric] for metric in metrics)
    query = _statement(parts)
    row = (await session.execute(query, windows(member_id, now))).mappings().one_or_none()
    return _measured(row, member_id, parts, metrics)


def measure_on(
    conn: Connection, member_id: int, metrics: Collection[Metric], now: datetime
) -> dict[Metric, int]:
    """`measure` over a `Connection`: the purchase measures inside its own transaction."""
    parts = frozenset(_PART_OF[metric] for metric in metrics)
    row = conn.execute(_statement(parts), windows(member_id, now)).mappings().one_or_none()
    return _measured(row, member_id, parts, metrics)


def _measured(
    row: RowMapping | None, member_id: int, parts: frozenset[_Part], metrics: Collection[Metric]
) -> dict[Metric, int]:
    """The metrics asked for, from the row `_statement(parts)` read."""
    if row is None:
        raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
    measured: dict[Metric, int] = {}
    if _Part.MEMBER in parts:
        measured[Metric.TOTAL_SPENT] = int(row["total_spent"])
        measured[Metric.JOINT_CAMPAIGNS] = int(row["joint_campaigns"])
        measured[Metric.GROWTH_POINTS] = int(row["growth_points"])
    if _Part.PAID in parts:
        measured[Metric.SPEND_365D] = int(row["spend"])
        measured[Metric.PURCHASES_6M] = int(row["purchases"])
    if _Part.SETTLED in parts:
        settled, fulfilled = int(row["settled"]), int(row["fulfilled"])
        measured[Metric.FULFILMENT_RATE] = fulfilment_rate(settled, fulfilled)
    if _Part.VIOLATIONS in parts:
        measured[Metric.VIOLATIONS_90D] = int(row["violations"])
    if _Part.REFERRALS in parts:
        measured[Metric.REFERRALS_ACTIVE] = int(row["referrals"])
    return {metric: measured[metric] for metric in metrics}


async def load_metrics(session: AsyncSession, member_id: int, now: datetime) -> Metrics:
    """Every tier metric of the member at `now`."""
    return Metrics.of(await measure(session, member_id, tuple(Metric), now))


_lo = bindparam("lo", type_=Integer())
_hi = bindparam("hi", type_=Integer())


@functools.cache
def range_statements() -> tuple[Select[*tuple[Any, ...]], ...]:
    """The four parts over the members with ids from `lo` to `hi`, one row per member
    that has any (members without one get the part's zero), built once."""
    paid = (
        select(Order.member_id, *_paid_columns())
        .where(*_paid_where(Order.member_id.between(_lo, _hi)))
        .group_by(Order.member_id)
    )
    settled = (
        select(Order.member_id, *_settled_columns())
        .where(*_settled_where(Order.member_id.between(_lo, _hi)))
        .group_by(Order.member_id)
    )
    violations = (
        select(Violation.member_id, func.count(Violation.id))
        .where(*_violations_where(Violation.member_id.between(_lo, _hi)))
        .group_by(Violation.member_id)
    )
    referrals = (
        select(_referred.referrer_id, func.count(_referred.id))
        .where(*_referrals_where(_referred.referrer_id.between(_lo, _hi)))
        .group_by(_referred.referrer_id)
    )
    return paid, settled, violations, referrals


@dataclass(frozen=True, slots=True)
class RowMetrics:
    """The metrics a member row carries, as the caller read it with the row."""

    total_spent: int
    joint_campaigns: int
    growth_points: int


def measure_range(
    conn: Connection, rows: Mapping[int, RowMetrics], lo: int, hi: int, now: datetime
) -> dict[int, Metrics]:
    """Every metric at `now` of each member in `rows`, whose ids lie from `lo` to `hi`.

    Four GROUP BY statements over the id range, whatever its size, where `load_metrics`
    takes one statement per member: the quarterly review measures a million members in
    a few hundred statements. Each reads the same index ranges as the per-member parts,
    and the conditions are the same functions, so both give the same numbers.
    """
    params = {**windows(0, now), "lo": lo, "hi": hi}
    paid_stmt, settled_stmt, violations_stmt, referrals_stmt = range_statements()
    paid = {m: (int(s), int(p)) for m, s, p in conn.execute(paid_stmt, params)}
    settled = {m: fulfilment_rate(int(s), int(f)) for m, s, f in conn.execute(settled_stmt, params)}
    violations = {int(m): int(n) for m, n in conn.execute(violations_stmt, params)}
    referrals = {int(m): int(n) for m, n in conn.execute(referrals_stmt, params)}
    measured: dict[int, Metrics] = {}
    for member_id, row in rows.items():
        spend, purchases = paid.get(member_id, (0, 0))
        measured[member_id] = Metrics(
            total_spent=row.total_spent,
            spend_365d=spend,
            purchases_6m=purchases,
            violations_90d=violations.get(member_id, 0),
            fulfilment_rate=settled.get(member_id, FULFILMENT_WITHOUT_ORDERS),
            referrals_active=referrals.get(member_id, 0),
            joint_campaigns=row.joint_campaigns,
            growth_points=row.growth_points,
        )
    return measured

"""Risk control (风控, seed 003): per-member limits on orders and refused purchases.

A member may place `max_orders` orders and have `max_failures` purchases refused in
any `window_seconds` (a sliding window; all three in `tiers.toml`). Past either limit a
purchase is refused with RATE_LIMITED and `retry_after`, the seconds until the oldest
event counted leaves the window.

The window is counted in the database, inside the purchase transaction and after the
member row is locked (PostgreSQL) or the write lock taken (SQLite), so concurrent
attempts by one member on any number of workers are counted exactly: at most the limit
pass. Redis could not give that, because the count has to commit or roll back with the
order it lets through.

Each refused purchase is one `failure` row keyed by its idempotency key, so a double
tap or a redelivered update counts once. Running into a limit writes one `trip` row
keyed by the oldest event counted; every refusal in one stretch shares that key, so
staff are told once per trip (`RiskControl.claim_trips`), not once per refused tap.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import BindParameter, Integer, Select, bindparam, select, update
from sqlalchemy.engine import Connection

from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import RiskRules
from core.models import Member, Order, RiskEvent
from core.prepared import Prepared
from core.sql import constant, ignoring_conflict
from core.uow import Database

#: The two limits, as named in trip rows and in RATE_LIMITED's `limit` parameter.
ORDERS = "orders"
FAILURES = "failures"
#: Trips handed to staff per look; the rest wait for the next one.
CLAIM_BATCH = 50


@dataclass(frozen=True, slots=True)
class Trip:
    """A member who ran into a limit, for the staff notice."""

    id: int
    member_id: int
    telegram_id: int | None
    username: str | None
    display_name: str
    #: ORDERS or FAILURES.
    limit: str
    #: What the limit allows in one window.
    allowed: int
    window_seconds: int
    created_at: datetime
    #: When the member may buy again.
    retry_at: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the window says about one purchase attempt."""

    #: The idempotency key already paid for an order: hand that order back, refuse nothing.
    paid: bool
    #: RATE_LIMITED with `retry_after`, or None to go ahead.
    refusal: ShopError | None


class Window(NamedTuple):
    """The events that, while they stay in the window, keep the member at a limit.

    Each is the member's N-th latest order or refusal in the window (N the limit), None
    while the member is under that limit.
    """

    order_id: int | None
    order_at: datetime | None
    failure_id: int | None
    failure_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> Window:
        """The window from a row that carries `window_columns` (SQLAlchemy's, or a
        `Prepared` statement's)."""
        return cls(
            row.window_order_id, row.window_order_at, row.window_failure_id, row.window_failure_at
        )


@functools.cache
def window_columns(orders_offset: int, failures_offset: int) -> tuple[Any, ...]:
    """`Window`'s four values as scalar subqueries labelled `window_<field>`.

    They bind `member` and `since` and correlate with nothing, so they can ride in
    another SELECT (the purchase's own, on SQLite). Built once per limit pair.
    """
    member = bindparam("member", type_=Integer)
    since: BindParameter[datetime] = bindparam("since")

    def nth(id_column: Any, at_column: Any, offset: int, *where: Any) -> Select[Any]:
        return (
            select(id_column, at_column)
            .where(*where, at_column > since)
            .order_by(at_column.desc(), id_column.desc())
            .limit(1)
            .offset(offset)
            .correlate(None)
        )

    order = nth(Order.id, Order.created_at, orders_offset, Order.member_id == member)
    failure = nth(
        RiskEvent.id,
        RiskEvent.created_at,
        failures_offset,
        RiskEvent.member_id == member,
        RiskEvent.kind == constant("failure"),
    )
    return (
        order.with_only_columns(Order.id).scalar_subquery().label("window_order_id"),
        order.with_only_columns(Order.created_at).scalar_subquery().label("window_order_at"),
        failure.with_only_columns(RiskEvent.id).scalar_subquery().label("window_failure_id"),
        failure.with_only_columns(RiskEvent.created_at)
        .scalar_subquery()
        .label("window_failure_at"),
    )


def window_offsets(rules: RiskRules) -> tuple[int, int]:
    return rules.max_orders - 1, rules.max_failures - 1


def window_params(rules: RiskRules, now: datetime) -> dict[str, Any]:
    """What `window_columns` binds besides `member`."""
    return {"since": now - timedelta(seconds=rules.window_seconds)}


@functools.cache
def _window_query(orders_offset: int, failures_offset: int) -> Select[Any]:
    """`window_columns`, then the order already paid under the idempotency key `key`."""
    return select(
        *window_columns(orders_offset, failures_offset),
        select(Order.id)
        .where(Order.member_id == bindparam("member"), Order.idempotency_key == bindparam("key"))
        .scalar_subquery()
        .label("paid_order_id"),
    )


@functools.cache
def _window_check(orders_offset: int, failures_offset: int) -> Prepared:
    """`_window_query` as every purchase on PostgreSQL runs it."""
    return Prepared(_window_query(orders_offset, failures_offset))


def check_on(
    conn: Connection, rules: RiskRules, member_id: int, key: str, now: datetime
) -> Verdict:
    """Whether the attempt under `key` may go ahead, as a statement of its own.

    For PostgreSQL, after the member row is locked: a statement that began before the
    lock was granted reads from an older snapshot, while this one sees every order the
    purchase that held the lock committed, including one under this same key (a double
    tap), which must be handed back rather than counted or refused.
    """
    (row,) = _window_check(*window_offsets(rules)).all(
        conn, {"member": member_id, "key": key, **window_params(rules, now)}
    )
    if row.paid_order_id is not None:
        return Verdict(paid=True, refusal=None)
    return Verdict(paid=False, refusal=refusal_on(conn, rules, member_id, now, Window.of(row)))


def refusal_on(
    conn: Connection, rules: RiskRules, member_id: int, now: datetime, window: Window
) -> ShopError | None:
    """RATE_LIMITED for a member at a limit, its trip recorded; None to go ahead.

    `window` is read where the member's purchases are serialised (see the module
    docstring).
    """
    hits = [
        (limit, event_id, at)
        for limit, event_id, at in (
            (ORDERS, window.order_id, window.order_at),
            (FAILURES, window.failure_id, window.failure_at),
        )
        if event_id is not None and at is not None
    ]
    if not hits:
        return None
    # The limit that holds the member longest decides when they may try again.
    limit, event_id, oldest = max(hits, key=lambda hit: hit[2])
    retry_at = oldest + timedelta(seconds=rules.window_seconds)
    ignoring_conflict(RiskEvent).all(
        conn,
        {
            "member_id": member_id,
            "kind": "trip",
            "key": f"{limit}:{event_id}",
            "reason": limit,
            "created_at": now,
            "retry_at": retry_at,
        },
    )
    wait = max(1, math.ceil((retry_at - now).total_seconds()))
    return ShopError(ErrorCode.RATE_LIMITED, retry_after=wait, limit=limit)


#: Refusals that are not the member's failed attempt: a limit itself, or no such member.
NOT_COUNTED = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.MEMBER_NOT_FOUND})


def counts(refusal: ShopError) -> bool:
    """Whether a refused purchase counts against the member's failure limit."""
    return refusal.code not in NOT_COUNTED


def record_failure_on(
    conn: Connection, member_id: int, key: str, code: ErrorCode, now: datetime
) -> None:
    """Count a refused purchase once per idempotency key."""
    ignoring_conflict(RiskEvent).all(
        conn,
        {
            "member_id": member_id,
            "kind": "failure",
            "key": key,
            "reason": code.value,
            "created_at": now,
        },
    )


class RiskControl:
    """The trips staff have not been told about yet, each handed out once."""

    def __init__(self, db: Database, rules: RiskRules, clock: Clock) -> None:
        self._db = db
        self._rules = rules
        self._clock = clock

    async def claim_trips(self) -> list[Trip]:
        """Trips not yet notified, marked notified as they are handed out.

        A cheap read first, so the usual empty look takes no write lock; the claim is a
        guarded UPDATE, so two workers never both get one trip.
        """
        async with self._db.read() as session:
            waiting = list(
                await session.scalars(
                    select(RiskEvent.id)
                    .where(RiskEvent.kind == constant("trip"), RiskEvent.notified_at.is_(None))
                    .order_by(RiskEvent.id)
                    .limit(CLAIM_BATCH)
                )
            )
        if not waiting:
            return []
        async with self._db.transaction() as session:
            claimed = (
                await session.execute(
                    update(RiskEvent)
                    .where(RiskEvent.id.in_(waiting), RiskEvent.notified_at.is_(None))
                    .values(notified_at=self._clock.now())
                    .returning(
                        RiskEvent.id,
                        RiskEvent.member_id,
                        RiskEvent.reason,
                        RiskEvent.created_at,
                        RiskEvent.retry_at,
                    )
                )
            ).all()
            if not claimed:
                return []
            members = {
                row.id: row
                for row in await session.execute(
                    select(
                        Member.id, Member.telegram_id, Member.username, Member.display_name
                    ).where(Member.id.in_({row.member_id for row in claimed}))
                )
            }
        return [
            Trip(
                id=trip_id,
                member_id=member_id,
                telegram_id=members[member_id].telegram_id,
                username=members[member_id].username,
                display_name=members[member_id].display_name,
                limit=limit,
                allowed=self._rules.max_orders if limit == ORDERS else self._rules.max_failures,
                window_seconds=self._rules.window_seconds,
                created_at=created_at,
                # Trips always carry one (`check_on`); only failures leave it empty.
                retry_at=retry_at or created_at,
            )
            for trip_id, member_id, limit, created_at, retry_at in sorted(claimed)
        ]

"""A synthetic member population for the quarterly review: a million members in minutes.

Members on every tier and every tier source, with review counts and downgrade
protection ending before, at and after the quarter under review, orders in and out of
every metric window and in every status, serious and minor violations, referrals
(some referrers with many) and check-in activity whose growth points the member rows
carry. Spend is drawn around each tier's maintenance threshold, so a review keeps,
warns, protects and drops members in useful numbers. The same seed gives the same
population on either database.

Rows are written in chunks of `CHUNK` members: on PostgreSQL by COPY, on SQLite by
executemany in one transaction per chunk. Ids of members are given explicitly (a
referrer is an earlier member), so the PostgreSQL sequence is moved past them at the
end; `ANALYZE` then gives the planners real statistics, after a `VACUUM` on PostgreSQL
(as autovacuum would have done long before any review).

Run: `python -m bench.review_population --members 1000000 --database-url sqlite+aiosqlite:///...`
(`bench/review.py` calls it on a fresh database of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import itertools
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import insert, text
from sqlalchemy.engine import Connection

from core.clock import add_months
from core.config import DEFAULT_TIERS_FILE
from core.db import table_of
from core.ladder import SPEND_METRICS, Ladder, load_ladder
from core.migrate import migrate_afresh
from core.models import ActivityEvent, Category, Member, Order, OrderStatus, Product, Violation
from core.tiers.review import quarter_end
from core.uow import Database

#: The quarter a generated population is made for, and the shop's default zone.
QUARTER = "2026Q3"
DEFAULT_ZONE = "Asia/Shanghai"

#: Members written per transaction (and per COPY on PostgreSQL).
CHUNK = 20_000

#: Share of members on each tier, in percent.
TIER_SHARES: Sequence[tuple[str, int]] = (
    ("member", 35),
    ("silver", 30),
    ("gold", 17),
    ("platinum", 9),
    ("diamond", 6),
    ("black_diamond", 3),
)
#: Share of members holding their tier for each reason, in percent.
SOURCE_SHARES: Sequence[tuple[str, int]] = (
    ("rules", 90),
    ("admin", 5),
    ("trial", 3),
    ("invite", 2),
)
ORDER_STATUSES: Sequence[tuple[OrderStatus, int]] = (
    (OrderStatus.DELIVERED, 78),
    (OrderStatus.PAID, 8),
    (OrderStatus.FAILED, 6),
    (OrderStatus.REFUNDED, 5),
    (OrderStatus.PLACED, 3),
)
#: Order dates reach this far before the quarter's end, across every metric window.
HISTORY = timedelta(days=540)

MEMBER_COLUMNS = (
    "id",
    "telegram_id",
    "display_name",
    "locale",
    "referral_code",
    "referrer_id",
    "balance",
    "total_spent",
    "growth_points",
    "joint_campaigns",
    "tier_key",
    "tier_source",
    "trial_base_tier",
    "trial_until",
    "protected_until",
    "quarters_below",
    "unreachable",
    "is_staff",
    "created_at",
)
ORDER_COLUMNS = (
    "member_id",
    "product_id",
    "idempotency_key",
    "quantity",
    "tier_key",
    "unit_base_price",
    "unit_price",
    "discount",
    "points_used",
    "points_value",
    "total",
    "status",
    "created_at",
    "paid_at",
    "delivered_at",
    "refunded_at",
)
VIOLATION_COLUMNS = ("member_id", "serious", "reason", "actor", "created_at")
T = TypeVar("T")

ACTIVITY_COLUMNS = ("member_id", "kind", "ref", "growth", "occurred_at")


@dataclass
class Counts:
    """How many rows of each kind a population has."""

    members: int = 0
    orders: int = 0
    violations: int = 0
    activity: int = 0


@dataclass
class _Chunk:
    members: list[tuple[Any, ...]] = field(default_factory=list)
    orders: list[tuple[Any, ...]] = field(default_factory=list)
    violations: list[tuple[Any, ...]] = field(default_factory=list)
    activity: list[tuple[Any, ...]] = field(default_factory=list)


class _Draw:
    """Weighted draws from `shares` with one `random()` each (`choices` costs ten times more)."""

    def __init__(self, shares: Sequence[tuple[T, int]]) -> None:
        self._values = [value for value, _ in shares]
        self._bounds = list(itertools.accumulate(weight for _, weight in shares))
        self._total = self._bounds[-1]

    def __call__(self, rng: random.Random) -> Any:
        return self._values[bisect.bisect_right(self._bounds, rng.random() * self._total)]


def _one(rng: random.Random, options: Sequence[T]) -> T:
    """`rng.choice` without its rejection sampling, which costs a third of the generator."""
    return options[int(rng.random() * len(options))]


def _spend_threshold(ladder: Ladder, tier_key: str) -> int:
    """The spend the tier's maintenance rule asks for (the entry tier: the next one's)."""
    tier = ladder.tier(tier_key)
    rule = tier.maintenance if tier_key != ladder.entry.key else ladder.tiers[1].upgrade
    amounts = [c.min for a in rule for c in a if c.metric in SPEND_METRICS and c.min]
    return max(amounts, default=50_000)


def rows(
    ladder: Ladder, members: int, *, seed: int, ended: datetime, product_id: int
) -> Iterator[_Chunk]:
    """The population's rows, `CHUNK` members at a time (ids 1 to `members`).

    `ended` is the end of the quarter the review will judge: protection ends are drawn
    around it and orders before it, with some after it (which the review must ignore).
    """
    rng = random.Random(seed)
    keys = {tier.key for tier in ladder.tiers}
    pick_tier = _Draw([(key, weight) for key, weight in TIER_SHARES if key in keys])
    pick_source = _Draw(SOURCE_SHARES)
    pick_status = _Draw(ORDER_STATUSES)
    below_of = {key: ladder.below(key) for key in keys}
    threshold_of = {key: _spend_threshold(ladder, key) for key in keys}
    protection_ends = [add_months(ended, months) for months in (-3, 0, 0, 3)]
    popular: list[int] = []
    chunk = _Chunk()
    for member_id in range(1, members + 1):
        tier_key = pick_tier(rng)
        source = pick_source(rng) if tier_key != ladder.entry.key else "rules"
        below = below_of[tier_key]
        trial = source == "trial" and below is not None
        protected: datetime | None = None
        quarters_below = _one(rng, (0, 0, 0, 1, 1, 2))
        if quarters_below and rng.random() < 0.5:
            # Ended before the quarter, exactly at its end, or still running after it.
            protected = _one(rng, protection_ends)
        if rng.random() < 0.02:
            popular.append(member_id)
        referrer = None
        if member_id > 1 and rng.random() < 0.3:
            referrer = _one(rng, popular) if popular and rng.random() < 0.5 else None
            referrer = referrer or 1 + int(rng.random() * (member_id - 1))
        threshold = threshold_of[tier_key]
        spend = int(threshold * rng.uniform(0.2, 1.6))
        spent = 0
        for number in range(_one(rng, (0, 1, 2, 3, 3, 4, 5, 8))):
            status = pick_status(rng)
            total = max(100, int(spend / 3 * rng.uniform(0.3, 1.7)))
            created = ended - HISTORY * rng.random() + timedelta(days=_one(rng, (0, 0, 0, 0, 20)))
            paid = created + timedelta(minutes=1) if status is not OrderStatus.FAILED else None
            if status is OrderStatus.PLACED:
                paid = None
            delivered = paid if status in (OrderStatus.DELIVERED, OrderStatus.REFUNDED) else None
            refunded = paid + timedelta(days=1) if paid and status is OrderStatus.REFUNDED else None
            if status in (OrderStatus.PAID, OrderStatus.DELIVERED):
                spent += total
            chunk.orders.append(
                (member_id, product_id, f"gen-{number}", 1, tier_key, total, total, 0, 0, 0,
                 total, status.value, created, paid, delivered, refunded)
            )  # fmt: skip
        growth = 0
        for number in range(_one(rng, (0, 0, 1, 2, 3))):
            at = ended - HISTORY * rng.random()
            chunk.activity.append((member_id, "checkin", f"gen:{member_id}:{number}", 5, at))
            growth += 5
        growth += _one(rng, (0, 0, 0, 50, 200, 2000))
        for _ in range(_one(rng, (0,) * 30 + (1,))):
            at = ended - timedelta(days=rng.uniform(0, 200))
            chunk.violations.append((member_id, rng.random() < 0.7, "generated", "bench", at))
        chunk.members.append(
            (member_id, 1_000_000_000 + member_id, "", _one(rng, ("zh_CN", "en", None)),
             f"P{member_id:012d}", referrer, 0, spent + _one(rng, (0, 0, 100_000)),
             growth, _one(rng, (0, 0, 0, 1)), tier_key, source,
             below.key if trial and below else None,
             ended + timedelta(days=_one(rng, (-10, 10))) if trial else None,
             protected, quarters_below, False, False, ended - HISTORY)
        )  # fmt: skip
        if len(chunk.members) == CHUNK:
            yield chunk
            chunk = _Chunk()
    if chunk.members:
        yield chunk


_TABLES: Sequence[tuple[str, type[Any], Sequence[str]]] = (
    ("members", Member, MEMBER_COLUMNS),
    ("orders", Order, ORDER_COLUMNS),
    ("violations", Violation, VIOLATION_COLUMNS),
    ("activity", ActivityEvent, ACTIVITY_COLUMNS),
)


def _sqlite_value(value: object) -> object:
    """A value as SQLAlchemy stores it in SQLite (`UTCDateTime`: naive UTC text)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _write_sqlite(conn: Connection, chunk: _Chunk) -> None:
    """Plain executemany through the driver: SQLAlchemy's per-row work would triple the time."""
    for name, model, columns in _TABLES:
        values = getattr(chunk, name)
        if values:
            statement = (
                f"INSERT INTO {table_of(model).name} ({', '.join(columns)})"
                f" VALUES ({', '.join('?' * len(columns))})"
            )
            conn.exec_driver_sql(statement, [tuple(map(_sqlite_value, row)) for row in values])


async def _write_postgres(db: Database, chunk: _Chunk) -> None:
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        async with driver.transaction():
            for name, model, columns in _TABLES:
                values = getattr(chunk, name)
                if values:
                    await driver.copy_records_to_table(
                        table_of(model).name, records=values, columns=list(columns)
                    )


def _catalog(conn: Connection, at: datetime) -> int:
    category = conn.execute(
        insert(table_of(Category)).returning(table_of(Category).c.id),
        {"slug": "generated", "name_zh": "生成", "name_en": "Generated", "sort": 0},
    ).scalar_one()
    return int(
        conn.execute(
            insert(table_of(Product)).returning(table_of(Product).c.id),
            {
                "sku": "GENERATED",
                "category_id": category,
                "name_zh": "生成",
                "name_en": "Generated",
                "description_zh": "",
                "description_en": "",
                "base_price": 100,
                "pool": "basic",
                "low_stock_threshold": 0,
                "active": True,
                "sort": 0,
                "created_at": at,
            },
        ).scalar_one()
    )


async def populate(
    db: Database, ladder: Ladder, members: int, *, seed: int, ended: datetime
) -> Counts:
    """Write the population into `db` (a migrated database without members)."""
    product_id = await db.run(lambda conn: _catalog(conn, ended - HISTORY))
    counts = Counts()
    for chunk in rows(
        ladder, members, seed=seed, ended=ended.astimezone(UTC), product_id=product_id
    ):
        if db.is_postgres:
            await _write_postgres(db, chunk)
        else:
            await db.run(functools.partial(_write_sqlite, chunk=chunk))
        counts.members += len(chunk.members)
        counts.orders += len(chunk.orders)
        counts.violations += len(chunk.violations)
        counts.activity += len(chunk.activity)
    async with db.engine.begin() as conn:
        if db.is_postgres:
            await conn.execute(
                text("SELECT setval(pg_get_serial_sequence('members', 'id'), :last)"),
                {"last": max(members, 1)},
            )
    # A shop's tables have long been vacuumed when a quarterly review runs: without it
    # the review would be the first to set every freshly written row's hint bits, racing
    # the autovacuum that a bulk load starts.
    statement = "VACUUM ANALYZE" if db.is_postgres else "ANALYZE"
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(statement))
    return counts


async def _main(url: str, members: int, seed: int, quarter: str) -> None:
    await migrate_afresh(url)
    db = Database.from_url(url)
    ended = quarter_end(quarter, ZoneInfo(DEFAULT_ZONE))
    started = time.perf_counter()
    try:
        counts = await populate(
            db, load_ladder(DEFAULT_TIERS_FILE), members, seed=seed, ended=ended
        )
    finally:
        await db.dispose()
    print(f"{counts} in {time.perf_counter() - started:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quarter", default=QUARTER, help="the quarter the review will judge")
    args = parser.parse_args()
    asyncio.run(_main(args.database_url, args.members, args.seed, args.quarter))


if __name__ == "__main__":
    main()

"""The tier metrics statements read members, orders and violations through indexes.

They run after purchases and check-ins and once per member in the quarterly review; a
full scan of `members` there (the referrals subquery, before `referrer_id` had an index)
makes each member's review cost grow with the member count, and orders read without
their window (before `(member_id, paid_at)` had an index) make it grow with a member's
history. Every statement the check may run is planned: the full one and the one of each
metric on its own. The plan is read after `ANALYZE` with enough referred members that a
scan would be a real choice; on PostgreSQL sequential scans are also switched off for
the query, so a scan in the plan means no index fits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, event, insert, text
from sqlalchemy.engine import Connection

from core.clock import ManualClock
from core.ladder import Metric
from core.models import Category, Member, Order, Product
from core.tiers.metrics import METRICS, statement_for, windows
from core.tiers.rules import ROW_METRICS
from core.uow import Database
from tests.query_plans import postgres_full_reads

MEMBERS = 400
ORDERS_EACH = 5


async def _seed(db: Database, clock: ManualClock) -> None:
    """Members each referred by one of the first ten, like a shop grown by invitations,
    each with a few paid orders (so walking orders first is no cheap way round)."""
    now = clock.now()
    rows: list[dict[str, Any]] = [
        {
            "telegram_id": 700_000 + n,
            "display_name": f"guest {n}",
            "referral_code": f"P{n:07d}",
            "referrer_id": None if n <= 10 else (n % 10) + 1,
            "created_at": now,
        }
        for n in range(1, MEMBERS + 1)
    ]
    orders: list[dict[str, Any]] = [
        {
            "member_id": member,
            "product_id": 1,
            "idempotency_key": f"plan-{member}-{i}",
            "quantity": 1,
            "tier_key": "member",
            "unit_base_price": 1000,
            "unit_price": 1000,
            "discount": 0,
            "total": 1000,
            "status": "delivered",
            "created_at": now,
            "paid_at": now,
        }
        for member in range(1, MEMBERS + 1)
        for i in range(ORDERS_EACH)
    ]
    async with db.engine.begin() as conn:
        await conn.execute(insert(Category), [{"slug": "plan", "name_zh": "分类", "name_en": "C"}])
        await conn.execute(
            insert(Product),
            [
                {
                    "sku": "PLAN-1",
                    "category_id": 1,
                    "name_zh": "商品",
                    "name_en": "Product",
                    "base_price": 1000,
                    "pool": "basic",
                    "created_at": now,
                }
            ],
        )
        await conn.execute(insert(Member), rows)
        await conn.execute(insert(Order), orders)
        await conn.execute(text("ANALYZE"))


def _plan(conn: Connection, values: dict[str, Any], query: Select[Any]) -> list[str]:
    """Run `query` with EXPLAIN in front, so the real statement and parameters are planned."""
    explain = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "

    def prefix(*args: Any) -> tuple[str, Any]:
        _conn, _cursor, statement, parameters = args[:4]
        return explain + statement, parameters

    event.listen(conn, "before_cursor_execute", prefix, retval=True)
    try:
        rows = conn.execute(query, values).fetchall()
    finally:
        event.remove(conn, "before_cursor_execute", prefix)
    return [str(row[-1]) for row in rows]


#: The full statement, then each metric the check measures on its own.
STATEMENTS = [("all", METRICS)] + [
    (metric.value, statement_for([metric])) for metric in Metric if metric not in ROW_METRICS
]


async def test_metrics_statements_read_through_indexes(db: Database, clock: ManualClock) -> None:
    await _seed(db, clock)
    for name, query in STATEMENTS:
        async with db.engine.begin() as conn:
            if db.is_postgres:
                await conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = await conn.run_sync(_plan, windows(3, clock.now()), query)
        scans = (
            postgres_full_reads(plan, ("members", "orders"))
            if db.is_postgres
            else _sqlite_full_reads(plan)
        )
        assert scans == [], f"{name}:\n" + "\n".join(plan)


def _sqlite_full_reads(plan: list[str]) -> list[str]:
    """A scan of `members` or `orders`, an automatic index (built by scanning the table on
    every run), or orders read without a time range (a member's whole history)."""
    return [
        line
        for line in plan
        if line.startswith(("SCAN members", "SCAN orders"))
        or "AUTOMATIC" in line
        or (line.startswith("SEARCH orders") and "_at>? AND" not in line)
    ]

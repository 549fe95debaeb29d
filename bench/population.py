"""A shop grown large, written straight into the database in bulk.

The benchmarks and the query-plan test need the tables at the size a busy 卡盟 reaches
(a hundred thousand members, ten thousand products, a million codes, most of them sold,
each sale with its order, ledger row and activity), which the shop's own paths would take
hours to build one purchase at a time. Rows go in with executemany in large chunks, in
one transaction per table; sold codes share one encrypted secret (nobody decrypts them
again) while the codes still on the shelf are encrypted one by one, so buying them works.

Members get the Telegram ids `FIRST_TELEGRAM_ID + n`; those who bought have a balance
they cannot spend in a run, their ledger adding up to it; every tenth member was
referred by one of the first hundred.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, insert, text

from core.clock import Clock
from core.models import ActivityEvent, Category, Code, Member, Order, Product, WalletEntry
from core.sql import table_of
from core.uow import Database
from core.vault import CodeVault

FIRST_TELEGRAM_ID = 50_000_000
BALANCE = 100_000_000
#: What every grown sale cost, in 分.
PRICE = 1000
#: Rows per executemany: large enough to amortise the round trip, small enough for asyncpg.
CHUNK = 20_000
#: Products per category: enough to fill a category page (5) in a shop of any size.
PER_CATEGORY = 10


@dataclass(frozen=True)
class Size:
    """How large the shop is grown."""

    members: int
    products: int
    codes: int
    #: The share of codes already sold, each in an order of its own.
    sold: float = 0.9

    def __str__(self) -> str:
        return f"{self.members:,} members / {self.products:,} products / {self.codes:,} codes"


@dataclass(frozen=True)
class Population:
    """What a workload taps: category and product ids, and members' Telegram ids."""

    categories: list[int]
    products: list[int]
    telegram_ids: list[int]
    #: Members with money to spend (the ones who bought before).
    buyers: list[int]


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _fill(db: Database, table: Table, rows: Iterator[dict[str, Any]]) -> None:
    async with db.engine.begin() as conn:
        for chunk in _chunks(rows):
            await conn.execute(insert(table), chunk)


async def populate(
    db: Database, vault: CodeVault, clock: Clock, size: Size, *, seed: int = 1
) -> Population:
    """Grow an empty, migrated shop to `size`, then `ANALYZE` it as a live one would be."""
    rng = random.Random(seed)
    now = clock.now()
    categories = max(1, min(100, size.products // PER_CATEGORY))
    year = timedelta(days=365)
    await _fill(
        db,
        table_of(Category),
        (
            {"id": n, "slug": f"cat-{n}", "name_zh": f"分类 {n}", "name_en": f"Category {n}"}
            for n in range(1, categories + 1)
        ),
    )
    await _fill(
        db,
        table_of(Product),
        (
            {
                "id": n,
                "sku": f"SKU-{n:06d}",
                "category_id": (n - 1) % categories + 1,
                "name_zh": f"商品 {n}",
                "name_en": f"Product {n}",
                "base_price": 100 * rng.randint(1, 500),
                "pool": "basic",
                "sort": n,
                "created_at": now - year,
            }
            for n in range(1, size.products + 1)
        ),
    )
    sold = int(size.codes * size.sold)
    buyers = [rng.randint(1, size.members) for _ in range(sold)]
    spenders = set(buyers)
    # Sold codes were any product's; what is left is spread evenly, so every product
    # has some to sell.
    products = [rng.randint(1, size.products) for _ in range(sold)]
    products += [n % size.products + 1 for n in range(size.codes - sold)]
    paid = [now - timedelta(seconds=rng.randint(60, int(year.total_seconds()))) for _ in buyers]
    await _fill(
        db,
        table_of(Member),
        (
            {
                "id": n,
                "telegram_id": FIRST_TELEGRAM_ID + n,
                "display_name": f"Member {n}",
                "locale": "zh_CN" if n % 2 else "en",
                "referral_code": f"G{n:09d}",
                "referrer_id": (n % 100) + 1 if n > 100 and n % 10 == 0 else None,
                "balance": BALANCE if n in spenders else 0,
                "created_at": now - year,
            }
            for n in range(1, size.members + 1)
        ),
    )
    await _fill(db, table_of(Order), _orders(buyers, products, paid))
    shared_secret = vault.encrypt("SOLD")
    await _fill(
        db,
        table_of(Code),
        (
            {
                "id": n,
                "product_id": products[n - 1],
                "secret": shared_secret if n <= sold else vault.encrypt(f"CODE-{n:09d}"),
                "digest": vault.digest(f"CODE-{n:09d}"),
                "order_id": n if n <= sold else None,
                "added_at": now - year,
                "sold_at": paid[n - 1] if n <= sold else None,
            }
            for n in range(1, size.codes + 1)
        ),
    )
    await _fill(db, table_of(WalletEntry), _ledger(buyers, paid, now - year))
    await _fill(
        db,
        table_of(ActivityEvent),
        (
            {
                "member_id": member,
                "kind": "purchase",
                "ref": f"order:{n}",
                "occurred_at": at,
            }
            for n, (member, at) in enumerate(zip(buyers, paid, strict=True), start=1)
        ),
    )
    await _settle(db, buyers)
    return Population(
        categories=list(range(1, categories + 1)),
        products=list(range(1, size.products + 1)),
        telegram_ids=[FIRST_TELEGRAM_ID + n for n in range(1, size.members + 1)],
        buyers=[FIRST_TELEGRAM_ID + n for n in sorted(spenders)],
    )


def _orders(
    buyers: Sequence[int], products: Sequence[int], paid: Sequence[Any]
) -> Iterator[dict[str, Any]]:
    for n, (member, at) in enumerate(zip(buyers, paid, strict=False), start=1):
        yield {
            "id": n,
            "member_id": member,
            "product_id": products[n - 1],
            "idempotency_key": f"grown-{n}",
            "quantity": 1,
            "tier_key": "member",
            "unit_base_price": PRICE,
            "unit_price": PRICE,
            "discount": 0,
            "total": PRICE,
            "status": "delivered",
            "created_at": at,
            "paid_at": at,
            "delivered_at": at,
        }


def _ledger(buyers: Sequence[int], paid: Sequence[Any], opened: Any) -> Iterator[dict[str, Any]]:
    """Each member's ledger as a real one reads: a top-up that covered everything they
    bought and left `BALANCE`, then their purchases in the order they were paid."""
    bought: dict[int, list[tuple[Any, int]]] = {}
    for order, (member, at) in enumerate(zip(buyers, paid, strict=True), start=1):
        bought.setdefault(member, []).append((at, order))
    for member in sorted(bought):
        purchases = sorted(bought[member])
        balance = BALANCE + PRICE * len(purchases)
        yield {
            "member_id": member,
            "kind": "topup",
            "amount": balance,
            "balance_after": balance,
            "order_id": None,
            "reason": "grown",
            "created_at": opened,
        }
        for at, order in purchases:
            balance -= PRICE
            yield {
                "member_id": member,
                "kind": "purchase",
                "amount": -PRICE,
                "balance_after": balance,
                "order_id": order,
                "reason": "",
                "created_at": at,
            }


async def _settle(db: Database, buyers: Sequence[int]) -> None:
    """Totals the rows imply, sequences past the ids written, and fresh statistics."""
    spent: dict[int, int] = {}
    for member in buyers:
        spent[member] = spent.get(member, 0) + PRICE
    async with db.engine.begin() as conn:
        for chunk in _chunks({"m": m, "s": s} for m, s in spent.items()):
            await conn.execute(text("UPDATE members SET total_spent = :s WHERE id = :m"), chunk)
        if db.is_postgres:
            for table in ("categories", "products", "members", "orders", "codes"):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                        f" (SELECT max(id) FROM {table}))"
                    )
                )
    async with db.engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()

"""Purchases per second through `Orders.place`, against a baseline measured in the same run.

The baseline is the same purchase (insert the order, debit with a guard, claim one code,
write the ledger row) in plain `sqlite3` on the same schema, the ceiling perf-facts.md
names. Run: `make bench` (or `python -m bench.purchase --n 2000`); set
BENCH_DATABASE_URL=postgresql+asyncpg://... to also measure PostgreSQL.

Each database gets two rows per concurrency: `Orders.place` as the shop wires it, and
the same purchase without the after-purchase tier hook (`core.tiers.moves.Promotions`:
it measures only what could still move the buyer, often nothing), which is the purchase
transaction alone plus decrypting the codes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from core.clock import Clock
from core.config import load_settings
from core.migrate import migrate_afresh
from core.orders import Orders
from core.shop import Shop, build_shop
from tests.factories import make_member, make_product, tiers_file_with

#: One member buys every code here, far past risk control's per-minute limits: the limits
#: are raised so the window is still read on every purchase but never trips, and the
#: window is one second, so it holds a second of purchases to walk rather than a minute's
#: (a real member's holds at most `max_orders`).
BENCH_LIMIT = 1_000_000


def baseline_sqlite3(path: Path, product_id: int, member_id: int, n: int) -> float:
    """The purchase as four plain statements in one immediate transaction; returns per second."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    started = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        order_id = conn.execute(
            "INSERT INTO orders (member_id, product_id, idempotency_key, quantity, tier_key,"
            " unit_base_price, unit_price, discount, points_used, points_value, total, status,"
            " created_at) VALUES (?, ?, ?, 1, 'member', 100, 95, 5, 0, 0, 95, 'paid',"
            " datetime('now')) RETURNING id",
            (member_id, product_id, f"base-{i}"),
        ).fetchone()[0]
        balance = conn.execute(
            "UPDATE members SET balance = balance - 95 WHERE id = ? AND balance >= 95"
            " RETURNING balance",
            (member_id,),
        ).fetchone()[0]
        conn.execute(
            "UPDATE codes SET order_id = ? WHERE id = (SELECT id FROM codes WHERE product_id = ?"
            " AND order_id IS NULL ORDER BY id LIMIT 1)",
            (order_id, product_id),
        )
        conn.execute(
            "INSERT INTO wallet_entries (member_id, kind, amount, balance_after, reason, actor,"
            " created_at) VALUES (?, 'purchase', -95, ?, '', 'bench', datetime('now'))",
            (member_id, balance),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


async def _stock(shop: Shop, n: int) -> tuple[int, int]:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=100, codes=n)
    member = await make_member(shop.db, shop.clock, balance=100 * n)
    return product, member


async def shop_purchases(shop: Shop, n: int, concurrency: int, *, hook: bool = True) -> float:
    product, member = await _stock(shop, n)
    keys = iter(range(n))
    orders = shop.orders if hook else Orders(shop.db, shop.ladder, shop.vault, shop.clock)

    async def buyer() -> None:
        for i in keys:
            await orders.place(member, product, 1, idempotency_key=f"bench-{i}")

    started = time.perf_counter()
    await asyncio.gather(*(buyer() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


async def _open(url: str, data_dir: Path) -> Shop:
    settings = load_settings(
        database_url=url,
        code_encryption_keys=Fernet.generate_key().decode(),
        data_dir=data_dir,
        tiers_file=tiers_file_with(
            data_dir, max_orders=BENCH_LIMIT, max_failures=BENCH_LIMIT, window_seconds=1
        ),
        _env_file=None,
    )
    await migrate_afresh(url)
    return build_shop(settings, clock=Clock())


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        shop = await _open(f"sqlite+aiosqlite:///{path}", Path(tmp))
        product, member = await _stock(shop, n)
        base = baseline_sqlite3(path, product, member, n)
        print(f"baseline   plain sqlite3, one connection      {base:8.0f} purchases/s  1.00x")
        await _report("sqlite", shop, n, base)
        await shop.close()
        pg_url = os.environ.get("BENCH_DATABASE_URL")
        if pg_url:
            pg = await _open(pg_url, Path(tmp))
            await _report("postgresql", pg, n, base)
            await pg.close()


async def _report(name: str, shop: Shop, n: int, base: float) -> None:
    for hook, label in ((True, "Orders.place"), (False, "place, no tier hook")):
        for concurrency in (1, 20):
            rate = await shop_purchases(shop, n, concurrency, hook=hook)
            print(
                f"{name:10} {label:19} {concurrency:2d} at once "
                f"{rate:8.0f} purchases/s  {rate / base:.3f}x"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="purchases per measurement")
    asyncio.run(main(parser.parse_args().n))

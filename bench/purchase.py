"""Purchases per second through `Orders.place`, against the plain driver doing the same work.

What is measured: `shop.orders.place` as the shop wires it (risk control, the tier check,
decrypting the code), 1 and 20 buyers at once. Each purchase is one code for a silver
member, ten purchases per member, spread so that buyers at once are different members:
ten a member is risk control's default limit per minute, so every purchase reads the
member's risk window as in production and none trips it, and a silver member's tier
check is decided from the member row alone (the common case; gold is far off).

The baseline does the same work in the plain driver: the very statements `Orders.place`
runs, compiled from the same SQLAlchemy constructs (`_Plain`), so the SQL text is
identical, one transaction per purchase, the price worked out from the row read, and
the same Fernet decrypt of the code. On SQLite that is `sqlite3` on one connection (WAL,
synchronous=NORMAL, BEGIN IMMEDIATE, as the shop's engine); on PostgreSQL `asyncpg` with
a pool, 1 and 20 at once, each compared with `Orders.place` at the same concurrency.

Rounds alternate (baseline, 1 at once, 20 at once, again...) so the machine's noise falls
on all of them alike. Each measure's median rate is printed with the median of its
per-round ratios: a ratio taken within one round compares runs a second apart, which
the 2-core machines' drifting speed (the baseline alone ranges 1.5× between runs)
spoils far less than a ratio of medians taken minutes apart. Every round checks that it
sold exactly one code per purchase and charged exactly that.

Run: `make bench` (or `python -m bench.purchase --n 1000 --rounds 5`); with
BENCH_DATABASE_URL=postgresql+asyncpg://... PostgreSQL too (that database is WIPED).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.url import make_url
from sqlalchemy.sql import ClauseElement

from core import risk
from core.clock import Clock
from core.config import load_settings
from core.migrate import migrate_afresh
from core.models import ActivityEvent, Code, Order, WalletEntry
from core.orders import _purchase_query
from core.shop import Shop, build_shop
from core.sql import _insert_ignoring_conflict
from core.stock import _claim_statement
from core.wallet import _LEDGER, _MOVE
from tests.factories import make_member, make_product

#: Purchases per member: risk control's default `max_orders` a minute.
PER_MEMBER = 10
#: The product's base price in 分; a silver member pays 90 % of it.
PRICE = 100
TIER = "silver"
#: Risk control's default window in seconds (tiers.toml `window_seconds`).
WINDOW = 60
#: Buyers at once in the concurrent rounds.
CROWD = 20


# --- the same statements, plain -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plain:
    """One statement as the plain driver runs it: the SQL text SQLAlchemy sends, the
    names of its positional parameters, and the values fixed at build time (literals,
    an IN list's items)."""

    sql: str
    names: tuple[str, ...]
    fixed: Mapping[str, Any]

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect, example: Mapping[str, Any]) -> _Plain:
        compiled = statement.compile(dialect=dialect, column_keys=list(example))
        state = compiled.construct_expanded_state(dict(example))
        assert state.positiontup is not None
        return cls(state.statement, tuple(state.positiontup), state.parameters)

    def args(self, values: Mapping[str, Any], convert: Callable[[Any], Any]) -> list[Any]:
        return [convert(values[n] if n in values else self.fixed[n]) for n in self.names]


def _sqlite_value(value: Any) -> Any:
    """What SQLAlchemy's SQLite types hand the driver: a UTC datetime as naive text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class SamePurchase:
    """`Orders.place`'s statements for one database, with the values one purchase binds."""

    facts: _Plain
    #: PostgreSQL reads the risk window in a statement of its own, after the row lock.
    window: _Plain | None
    order: _Plain
    move: _Plain
    ledger: _Plain
    claim: _Plain
    activity: _Plain
    convert: Callable[[Any], Any]

    @classmethod
    def build(cls, shop: Shop, dialect: Dialect) -> SamePurchase:
        lock = dialect.name == "postgresql"
        rules = shop.ladder.risk
        tiers = tuple(tier.key for tier in shop.ladder.tiers)
        query = _purchase_query(
            with_points=False, lock=lock, tiers=tiers, window=risk.window_offsets(rules)
        )
        v = _values(1, 1, "k", datetime.now(UTC), order_id=1, balance=0, total=90)
        facts = v["facts"] if lock else v["facts"] | v["window"]
        return cls(
            facts=_Plain.of(query.statement(dialect.name), dialect, facts),
            window=_Plain.of(risk._window_query(*risk.window_offsets(rules)), dialect, v["window"])
            if lock
            else None,
            order=_Plain.of(_insert_ignoring_conflict(dialect.name, Order), dialect, v["order"]),
            move=_Plain.of(_MOVE.statement(dialect.name), dialect, v["move"]),
            ledger=_Plain.of(_LEDGER.statement(dialect.name), dialect, v["ledger"]),
            claim=_Plain.of(_claim_statement(dialect.name), dialect, v["claim"]),
            activity=_Plain.of(
                _insert_ignoring_conflict(dialect.name, ActivityEvent), dialect, v["activity"]
            ),
            convert=_same if lock else _sqlite_value,
        )


def _values(
    member: int, product: int, key: str, now: datetime, *, order_id: int, balance: int, total: int
) -> dict[str, dict[str, Any]]:
    """What each statement binds for one purchase, as `Orders._purchase_on` binds it."""
    ref = f"order:{order_id}"
    return {
        "facts": {"member": member, "product": product, "key": key},
        "window": {"member": member, "key": key, "since": now - timedelta(seconds=WINDOW)},
        "order": {
            "member_id": member, "product_id": product, "idempotency_key": key, "quantity": 1,
            "tier_key": TIER, "unit_base_price": PRICE, "unit_price": total,
            "discount": PRICE - total, "points_used": 0, "points_value": 0, "total": total,
            "status": "paid", "created_at": now, "paid_at": now,
        },
        "move": {"member": member, "amount": -total, "spend_delta": total},
        "ledger": {
            "member_id": member, "kind": "purchase", "amount": -total, "balance_after": balance,
            "order_id": order_id, "payment_id": None, "reason": "", "actor": "system",
            "created_at": now,
        },
        "claim": {"product": product, "quantity": 1, "order": order_id, "at": now,
                  "member": member},
        "activity": {"member_id": member, "kind": "purchase", "ref": ref, "growth": 0,
                     "occurred_at": now},
    }  # fmt: skip


def _total(row: Mapping[str, Any]) -> int:
    """The silver price from the facts row: its tier price, else 90 % of the base."""
    tier_price = row[f"tier_price_{TIER}"]
    rate = row["base_price"] * 90 // 100
    return min(tier_price, rate) if tier_price is not None else rate


def baseline_sqlite3(
    path: Path, same: SamePurchase, shop: Shop, product: int, plan: Sequence[tuple[int, str]]
) -> float:
    """The purchases of `plan` in plain sqlite3, one connection; returns per second."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    clock, decrypt, c = shop.clock, shop.vault.decrypt, same.convert
    started = time.perf_counter()
    for member, key in plan:
        now = clock.now()
        v = _values(member, product, key, now, order_id=0, balance=0, total=0)
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(same.facts.sql, same.facts.args(v["facts"] | v["window"], c)).fetchone()
        assert row["paid_order_id"] is None
        assert row["window_order_id"] is None
        total = _total(row)
        v = _values(member, product, key, now, order_id=0, balance=0, total=total)
        (order_id,) = conn.execute(same.order.sql, same.order.args(v["order"], c)).fetchone()
        v = _values(member, product, key, now, order_id=order_id, balance=0, total=total)
        (balance,) = conn.execute(same.move.sql, same.move.args(v["move"], c)).fetchone()
        v["ledger"]["balance_after"] = balance
        conn.execute(same.ledger.sql, same.ledger.args(v["ledger"], c))
        secrets = [s for (s,) in conn.execute(same.claim.sql, same.claim.args(v["claim"], c))]
        assert len(secrets) == 1
        conn.execute(same.activity.sql, same.activity.args(v["activity"], c)).fetchone()
        conn.execute("COMMIT")
        [decrypt(secret) for secret in secrets]
    elapsed = time.perf_counter() - started
    conn.close()
    return len(plan) / elapsed


async def baseline_asyncpg(
    pool: asyncpg.Pool,
    same: SamePurchase,
    shop: Shop,
    product: int,
    plan: Sequence[tuple[int, str]],
    concurrency: int,
) -> float:
    """The purchases of `plan` in plain asyncpg, `concurrency` at once; returns per second."""
    assert same.window is not None
    window = same.window
    clock, decrypt, c = shop.clock, shop.vault.decrypt, same.convert
    work = iter(plan)

    async def buyer() -> None:
        for member, key in work:
            now = clock.now()
            v = _values(member, product, key, now, order_id=0, balance=0, total=0)
            async with pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(same.facts.sql, *same.facts.args(v["facts"], c))
                assert row["paid_order_id"] is None
                seen = await conn.fetchrow(window.sql, *window.args(v["window"], c))
                assert seen["window_order_id"] is None
                total = _total(row)
                v = _values(member, product, key, now, order_id=0, balance=0, total=total)
                order_id = await conn.fetchval(same.order.sql, *same.order.args(v["order"], c))
                v = _values(member, product, key, now, order_id=order_id, balance=0, total=total)
                balance = await conn.fetchval(same.move.sql, *same.move.args(v["move"], c))
                v["ledger"]["balance_after"] = balance
                await conn.execute(same.ledger.sql, *same.ledger.args(v["ledger"], c))
                secrets = [
                    r[0] for r in await conn.fetch(same.claim.sql, *same.claim.args(v["claim"], c))
                ]
                assert len(secrets) == 1
                await conn.fetchval(same.activity.sql, *same.activity.args(v["activity"], c))
            [decrypt(secret) for secret in secrets]

    started = time.perf_counter()
    await asyncio.gather(*(buyer() for _ in range(concurrency)))
    return len(plan) / (time.perf_counter() - started)


# --- the shop -------------------------------------------------------------------------------


async def _stock(shop: Shop, n: int) -> tuple[int, list[tuple[int, str]]]:
    """A product with `n` codes and the plan to buy them: (member, key) per purchase, ten
    per fresh silver member, consecutive purchases by different members."""
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=PRICE, codes=n)
    members = [
        await make_member(shop.db, shop.clock, balance=PRICE * PER_MEMBER, tier=TIER)
        for _ in range(-(-n // PER_MEMBER))
    ]
    return product, [(members[i % len(members)], f"bench-{product}-{i}") for i in range(n)]


async def shop_purchases(
    shop: Shop, product: int, plan: Sequence[tuple[int, str]], concurrency: int
) -> float:
    work: Iterator[tuple[int, str]] = iter(plan)

    async def buyer() -> None:
        for member, key in work:
            await shop.orders.place(member, product, 1, idempotency_key=key)

    started = time.perf_counter()
    await asyncio.gather(*(buyer() for _ in range(concurrency)))
    return len(plan) / (time.perf_counter() - started)


async def _check_sold(shop: Shop, product: int, n: int) -> None:
    """Each purchase sold one code of the product and charged it once."""
    async with shop.db.read() as session:
        sold = await session.scalar(
            select(func.count())
            .select_from(Code)
            .where(Code.product_id == product, Code.order_id.is_not(None))
        )
        orders = await session.scalar(
            select(func.count()).select_from(Order).where(Order.product_id == product)
        )
        charged = await session.scalar(
            select(func.count())
            .select_from(WalletEntry)
            .join(Order, Order.id == WalletEntry.order_id)
            .where(Order.product_id == product)
        )
    assert sold == orders == charged == n, (sold, orders, charged, n)


async def _open(url: str, data_dir: Path) -> Shop:
    settings = load_settings(
        database_url=url,
        code_encryption_keys=Fernet.generate_key().decode(),
        data_dir=data_dir,
        _env_file=None,
    )
    await migrate_afresh(url)
    return build_shop(settings, clock=Clock())


# --- rounds ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measure:
    label: str
    run: Callable[[int, list[tuple[int, str]]], Any]


async def _rounds(
    shop: Shop, n: int, rounds: int, measures: list[Measure]
) -> dict[str, list[float]]:
    """Each measure `rounds` times, alternating; the rates of each, round by round."""
    rates: dict[str, list[float]] = {m.label: [] for m in measures}
    for _ in range(rounds):
        for measure in measures:
            product, plan = await _stock(shop, n)
            rate = await measure.run(product, plan)
            await _check_sold(shop, product, n)
            rates[measure.label].append(rate)
    return rates


def _line(db: str, label: str, rates: list[float], bases: list[float] | None = None) -> None:
    """The median rate, and the median of its ratios to the baseline of the same round."""
    ratio = statistics.median(r / b for r, b in zip(rates, bases, strict=True)) if bases else 1.0
    print(f"{db:10} {label:44} {statistics.median(rates):8.0f} purchases/s {ratio:6.2f}x")


async def sqlite_bench(n: int, rounds: int) -> dict[str, list[float]]:
    """The SQLite rounds, printed; the rates of each measure, round by round."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        shop = await _open(f"sqlite+aiosqlite:///{path}", Path(tmp))
        same = SamePurchase.build(shop, shop.db.engine.dialect)

        async def plain(product: int, plan: list[tuple[int, str]]) -> float:
            return baseline_sqlite3(path, same, shop, product, plan)

        def place(k: int) -> Measure:
            async def run(product: int, plan: list[tuple[int, str]]) -> float:
                return await shop_purchases(shop, product, plan, k)

            return Measure(f"Orders.place, {k:2d} at once", run)

        base = "plain sqlite3, same statements + decrypt"
        rates = await _rounds(shop, n, rounds, [Measure(base, plain), place(1), place(CROWD)])
        await shop.close()
    _line("sqlite", base, rates[base])
    for k in (1, CROWD):
        label = f"Orders.place, {k:2d} at once"
        _line("sqlite", label, rates[label], rates[base])
    return rates


async def postgres_bench(url: str, n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shop = await _open(url, Path(tmp))
        same = SamePurchase.build(shop, shop.db.engine.dialect)
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        pool = await asyncpg.create_pool(dsn, min_size=CROWD, max_size=CROWD)
        measures: list[Measure] = []
        for k in (1, CROWD):

            async def plain(product: int, plan: list[tuple[int, str]], k: int = k) -> float:
                return await baseline_asyncpg(pool, same, shop, product, plan, k)

            async def run(product: int, plan: list[tuple[int, str]], k: int = k) -> float:
                return await shop_purchases(shop, product, plan, k)

            measures += [
                Measure(f"plain asyncpg, same statements, {k:2d} at once", plain),
                Measure(f"Orders.place, {k:2d} at once", run),
            ]
        rates = await _rounds(shop, n, rounds, measures)
        await pool.close()
        await shop.close()
    for k in (1, CROWD):
        base = f"plain asyncpg, same statements, {k:2d} at once"
        label = f"Orders.place, {k:2d} at once"
        _line("postgresql", base, rates[base])
        _line("postgresql", label, rates[label], rates[base])


async def main(n: int, rounds: int, pg_url: str | None) -> None:
    await sqlite_bench(n, rounds)
    if pg_url:
        await postgres_bench(pg_url, n, rounds)


if __name__ == "__main__":
    import os

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="purchases per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds, os.environ.get("BENCH_DATABASE_URL")))

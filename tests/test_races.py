"""Real concurrent tasks against a real database (a SQLite file in WAL mode, PostgreSQL).

Each race launches its callers at once with `asyncio.gather` through the shop's own
services, then reads the outcome back from the database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.config import Settings
from core.errors import ErrorCode, ShopError
from core.models import Code, Order, PointSpend, WalletEntry
from core.orders import Purchase
from core.shop import Shop
from tests.factories import give_points, make_member, make_product, tiers_file_with


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """These races are about money and stock; risk control's limits (tests/test_risk.py)
    are raised out of their way."""
    roomy = tiers_file_with(tmp_path, max_orders=1000, max_failures=1000)
    return settings.model_copy(update={"tiers_file": roomy})


async def _settle(tasks: list) -> tuple[list, list[ShopError]]:  # type: ignore[type-arg]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ShopError)]
    unexpected = [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, ShopError)
    ]
    assert unexpected == [], unexpected
    return done, refused


async def test_200_buyers_for_the_last_5_codes(shop: Shop) -> None:
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=5)
    buyers = [await make_member(shop.db, shop.clock, balance=1000) for _ in range(200)]

    done, refused = await _settle(
        [shop.orders.place(b, product, 1, idempotency_key=f"buy-{b}") for b in buyers]
    )

    assert len(done) == 5
    assert {e.code for e in refused} == {ErrorCode.OUT_OF_STOCK}
    sold = [code for purchase in done for code in purchase.codes]
    assert sorted(sold) == sorted(codes)  # every code once, none twice
    async with shop.db.read() as session:
        per_order = (
            await session.execute(
                select(Code.order_id, func.count())
                .where(Code.order_id.is_not(None))
                .group_by(Code.order_id)
            )
        ).all()
        assert len(per_order) == 5
        assert all(n == 1 for _, n in per_order)
        assert await session.scalar(select(func.count()).select_from(Order)) == 5
        charged = await session.scalar(
            select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "purchase")
        )
        assert charged == 5
    winners = {p.order.member_id for p in done}
    for buyer in buyers:
        assert await shop.wallet.balance(buyer) == (50 if buyer in winners else 1000)


async def test_50_debits_against_a_balance_of_10(shop: Shop) -> None:
    # 95折 of 1000 is 950: the wallet holds exactly ten purchases.
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=60)
    member = await make_member(shop.db, shop.clock, balance=9500)

    done, refused = await _settle(
        [shop.orders.place(member, product, 1, idempotency_key=f"d{i}") for i in range(50)]
    )

    assert len(done) == 10
    assert len(refused) == 40
    assert {e.code for e in refused} == {ErrorCode.INSUFFICIENT_BALANCE}
    assert await shop.wallet.balance(member) == 0
    async with shop.db.read() as session:
        ledger_sum = await session.scalar(
            select(func.sum(WalletEntry.amount)).where(WalletEntry.member_id == member)
        )
        assert ledger_sum == 0
        assert (
            await session.scalar(
                select(func.count()).select_from(Code).where(Code.order_id.is_not(None))
            )
            == 10
        )


async def test_50_wallet_adjustments_never_overdraw(shop: Shop) -> None:
    member = await make_member(shop.db, shop.clock, balance=1000)

    done, refused = await _settle(
        [shop.operations.admin.adjust("test", member, -100, reason="race") for _ in range(50)]
    )

    assert len(done) == 10
    assert len(refused) == 40
    assert await shop.wallet.balance(member) == 0
    history = await shop.wallet.history(member, limit=100)
    assert sum(e.amount for e in history) == 0
    assert sorted(e.balance_after for e in history if e.kind == "adjustment") == list(
        range(0, 1000, 100)
    )


async def test_one_idempotency_key_placed_20_times_at_once(shop: Shop) -> None:
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=10)
    member = await make_member(shop.db, shop.clock, balance=10_000, tier="silver")

    done, refused = await _settle(
        [shop.orders.place(member, product, 2, idempotency_key="double-tap") for _ in range(20)]
    )

    assert refused == []
    purchases: list[Purchase] = done
    assert len({p.order.id for p in purchases}) == 1
    assert sum(p.created for p in purchases) == 1
    assert all(p.codes == codes[:2] for p in purchases)
    assert await shop.wallet.balance(member) == 10_000 - 1800
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1


async def test_30_purchases_at_once_by_one_member_all_go_through(shop: Shop) -> None:
    # The shop's own wiring, tier hook included: purchases, fast track and promotion all
    # lock the one member row, in one order, so none of them may deadlock or be lost.
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=30)
    member = await make_member(shop.db, shop.clock, balance=30 * 1000)

    done, refused = await _settle(
        [shop.orders.place(member, product, 1, idempotency_key=f"hot-{i}") for i in range(30)]
    )

    assert refused == []
    assert len(done) == 30
    assert sorted(c for p in done for c in p.codes) == sorted(codes)
    # Promotions along the way lower the price, so totals differ; the chain must not.
    spent = sum(p.order.total for p in done)
    assert await shop.wallet.balance(member) == 30 * 1000 - spent
    assert len({p.balance_after for p in done}) == 30
    assert min(p.balance_after for p in done) == 30 * 1000 - spent
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 30
        assert (
            await session.scalar(
                select(func.sum(WalletEntry.amount)).where(WalletEntry.kind == "purchase")
            )
            == -spent
        )


async def test_one_key_at_once_with_points_redeems_once(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=5)
    member = await make_member(shop.db, shop.clock, balance=10_000)
    await give_points(
        shop.db, shop.ladder, member, 300, at=shop.clock.now(), source="reward", key="gift"
    )

    done, refused = await _settle(
        [
            shop.orders.place(member, product, 1, idempotency_key="pts", use_points=True)
            for _ in range(10)
        ]
    )

    assert refused == []
    assert sum(p.created for p in done) == 1
    assert await shop.wallet.balance(member) == 10_000 - 650
    async with shop.db.read() as session:
        spent = await session.scalar(
            select(func.sum(PointSpend.amount)).where(PointSpend.reason == "redeem")
        )
        assert spent == 300

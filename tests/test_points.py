"""The points ledger on both databases: spending order, concurrency, reversal, expiry."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from core import points
from core.clock import ManualClock, add_months
from core.config import DEFAULT_TIERS_FILE
from core.errors import ErrorCode, ShopError
from core.ladder import load_ladder
from core.models import (
    Category,
    Member,
    OrderStatus,
    PointLot,
    PointShortfall,
    PointSpend,
    Product,
)
from core.uow import Database, run_on
from tests.conftest import SHOP_ZONE, START
from tests.factories import give_points, make_order

LADDER = load_ladder(DEFAULT_TIERS_FILE)
_ids = itertools.count(1)


async def make_member(db: Database, *, locale: str | None = None) -> int:
    n = next(_ids)
    async with db.transaction() as session:
        member = Member(
            telegram_id=700_000 + n,
            display_name=f"points {n}",
            referral_code=f"P{n:07d}",
            locale=locale,
            tier_key="member",
            created_at=START,
        )
        session.add(member)
        await session.flush()
        return member.id


async def make_orders(db: Database, member_id: int, count: int = 1) -> list[int]:
    """`count` paid orders of the member for one product."""
    n = next(_ids)
    async with db.transaction() as session:
        category = Category(slug=f"pts-{n}", name_zh="点卡", name_en="Cards")
        session.add(category)
        await session.flush()
        product = Product(
            sku=f"PTS-{n}",
            category_id=category.id,
            name_zh="卡",
            name_en="Card",
            base_price=1000,
            created_at=START,
        )
        session.add(product)
        await session.flush()
        return [
            await make_order(
                session,
                member_id,
                product.id,
                at=START,
                total=950,
                discount=50,
                status=OrderStatus.PAID,
            )
            for _ in range(count)
        ]


async def award(db: Database, member_id: int, key: str, amount: int, earned: datetime) -> None:
    assert await give_points(db, LADDER, member_id, amount, at=earned, source="test", key=key)


async def remaining(db: Database, member_id: int) -> dict[str, int]:
    async with db.read() as session:
        rows = await session.execute(
            select(PointLot.source_key, PointLot.remaining).where(PointLot.member_id == member_id)
        )
        return dict(rows.all())


async def spends(db: Database, member_id: int) -> list[tuple[str, str, int, int | None]]:
    """(lot key, reason, amount, order id) in the order they were written."""
    async with db.read() as session:
        rows = await session.execute(
            select(PointLot.source_key, PointSpend.reason, PointSpend.amount, PointSpend.order_id)
            .join(PointLot, PointLot.id == PointSpend.lot_id)
            .where(PointSpend.member_id == member_id)
            .order_by(PointSpend.id)
        )
        return [(key, reason, amount, order) for key, reason, amount, order in rows]


async def available_now(db: Database, member_id: int, at: datetime = START) -> int:
    async with db.read() as session:
        return await points.available(session, member_id, at)


async def four_lots(db: Database, member_id: int) -> None:
    """One expired lot and three live ones, awarded out of expiry order."""
    await award(db, member_id, "late", 100, START - timedelta(days=30))  # expires 2027-10
    await award(db, member_id, "middle", 40, datetime(2026, 3, 1, tzinfo=UTC))
    await award(db, member_id, "soon", 30, datetime(2026, 1, 10, tzinfo=UTC))
    await award(db, member_id, "expired", 50, datetime(2025, 10, 1, tzinfo=UTC))


async def test_award_is_once_per_key(db: Database) -> None:
    member = await make_member(db)
    await award(db, member, "k", 10, START)
    again = await give_points(db, LADDER, member, 10, at=START, source="test", key="k")
    assert again is False
    assert await remaining(db, member) == {"k": 10}


async def test_available_ignores_expired_lots(db: Database) -> None:
    member = await make_member(db)
    await four_lots(db, member)
    assert await available_now(db, member) == 170
    # The "soon" lot (earned 2026-01-10) is gone from 2027-01-10.
    assert await available_now(db, member, datetime(2027, 1, 10, 0, 0, 1, tzinfo=UTC)) == 140


async def test_redeem_spends_soonest_expiring_first(db: Database) -> None:
    member = await make_member(db)
    await four_lots(db, member)
    [order] = await make_orders(db, member)
    async with db.transaction() as session:
        await run_on(session, points.redeem_on, member, 60, order_id=order, at=START)

    assert await remaining(db, member) == {"late": 100, "middle": 10, "soon": 0, "expired": 50}
    assert await spends(db, member) == [
        ("soon", "redeem", 30, order),
        ("middle", "redeem", 30, order),
    ]
    assert await available_now(db, member) == 110


async def test_redeem_refuses_more_than_spendable(db: Database) -> None:
    member = await make_member(db)
    await four_lots(db, member)
    [order] = await make_orders(db, member)
    with pytest.raises(ShopError) as refused:
        async with db.transaction() as session:
            await run_on(session, points.redeem_on, member, 171, order_id=order, at=START)
    assert refused.value.code is ErrorCode.INSUFFICIENT_POINTS
    assert refused.value.params["available"] == 170
    assert await spends(db, member) == []
    assert await available_now(db, member) == 170


async def test_concurrent_redemptions_never_overdraw(db: Database) -> None:
    member = await make_member(db)
    await award(db, member, "a", 40, START - timedelta(days=3))
    await award(db, member, "b", 35, START - timedelta(days=2))
    await award(db, member, "c", 25, START - timedelta(days=1))
    orders = await make_orders(db, member, 20)

    async def spend(order_id: int) -> None:
        async with db.transaction() as session:
            await run_on(session, points.redeem_on, member, 10, order_id=order_id, at=START)

    results = await asyncio.gather(*(spend(o) for o in orders), return_exceptions=True)

    failures = [r for r in results if r is not None]
    assert len(failures) == 10
    assert all(
        isinstance(f, ShopError) and f.code is ErrorCode.INSUFFICIENT_POINTS for f in failures
    )
    assert await remaining(db, member) == {"a": 0, "b": 0, "c": 0}
    async with db.read() as session:
        per_order = (
            await session.execute(
                select(PointSpend.order_id, func.sum(PointSpend.amount)).group_by(
                    PointSpend.order_id
                )
            )
        ).all()
    assert len(per_order) == 10
    assert all(total == 10 for _, total in per_order)


async def test_restore_gives_back_to_the_same_lots_once(db: Database) -> None:
    member = await make_member(db)
    await four_lots(db, member)
    [order, other] = await make_orders(db, member, 2)
    async with db.transaction() as session:
        await run_on(session, points.redeem_on, member, 60, order_id=order, at=START)
        await run_on(session, points.redeem_on, member, 5, order_id=other, at=START)

    async with db.transaction() as session:
        assert await points.restore_redeemed(session, order, START) == 60
    async with db.transaction() as session:
        assert await points.restore_redeemed(session, order, START) == 0

    assert await remaining(db, member) == {"late": 100, "middle": 35, "soon": 30, "expired": 50}
    assert await available_now(db, member) == 165
    restores = [s for s in await spends(db, member) if s[1] == "restore"]
    assert sorted(restores) == [("middle", "restore", 30, order), ("soon", "restore", 30, order)]


async def test_restore_skips_lots_expired_since(db: Database) -> None:
    member = await make_member(db)
    await four_lots(db, member)
    [order] = await make_orders(db, member)
    async with db.transaction() as session:
        await run_on(session, points.redeem_on, member, 60, order_id=order, at=START)

    later = datetime(2027, 1, 15, tzinfo=UTC)  # "soon" expired on 2027-01-10
    async with db.transaction() as session:
        assert await points.restore_redeemed(session, order, later) == 30
    async with db.transaction() as session:
        assert await points.restore_redeemed(session, order, later) == 0
    assert await remaining(db, member) == {"late": 100, "middle": 40, "soon": 0, "expired": 50}


async def test_reverse_takes_remaining_then_other_lots_and_records_shortfall(
    db: Database,
) -> None:
    member = await make_member(db)
    await award(db, member, "old", 30, START - timedelta(days=60))
    await award(db, member, "order:1", 100, START)
    [order] = await make_orders(db, member)
    async with db.transaction() as session:
        await run_on(session, points.redeem_on, member, 110, order_id=order, at=START)
    await award(db, member, "later", 50, START + timedelta(days=1))
    at = START + timedelta(days=2)

    async with db.transaction() as session:
        assert await points.reverse(session, member, "order:1", at=at) == 70
    async with db.transaction() as session:
        assert await points.reverse(session, member, "order:1", at=at) == 0

    assert await remaining(db, member) == {"old": 0, "order:1": 0, "later": 0}
    assert [s for s in await spends(db, member) if s[1] == "reverse"] == [
        ("order:1", "reverse", 20, None),
        ("later", "reverse", 50, None),
    ]
    async with db.read() as session:
        shortfalls = (
            await session.execute(select(PointShortfall.source_key, PointShortfall.amount))
        ).all()
    assert [tuple(row) for row in shortfalls] == [("order:1", 30)]
    assert await available_now(db, member, at) == 0


async def test_reverse_of_an_unspent_lot_takes_it_whole(db: Database) -> None:
    member = await make_member(db)
    await award(db, member, "keep", 40, START - timedelta(days=1))
    await award(db, member, "order:2", 25, START)
    async with db.transaction() as session:
        assert await points.reverse(session, member, "order:2", at=START) == 25
        assert await points.reverse(session, member, "order:2", at=START) == 0
        assert await points.reverse(session, member, "order:404", at=START) == 0
    assert await remaining(db, member) == {"keep": 40, "order:2": 0}
    async with db.read() as session:
        amount = await session.scalar(
            select(PointShortfall.amount).where(PointShortfall.source_key == "order:2")
        )
    assert amount == 0


async def test_concurrent_reversals_take_once(db: Database) -> None:
    member = await make_member(db)
    await award(db, member, "keep", 40, START - timedelta(days=1))
    await award(db, member, "order:3", 25, START)

    async def take() -> int:
        async with db.transaction() as session:
            return await points.reverse(session, member, "order:3", at=START)

    taken = await asyncio.gather(*(take() for _ in range(8)))
    assert sorted(taken) == [0] * 7 + [25]
    assert await available_now(db, member) == 40


async def test_expire_zeroes_past_lots_once(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    await four_lots(db, member)
    [order] = await make_orders(db, member)
    async with db.transaction() as session:
        await run_on(session, points.redeem_on, member, 10, order_id=order, at=START)
    service = points.Points(db, LADDER, clock)

    assert await service.expire() == 50
    assert await service.expire() == 0
    assert await remaining(db, member) == {"late": 100, "middle": 40, "soon": 20, "expired": 0}

    clock.set(datetime(2027, 1, 10, 0, 0, tzinfo=UTC))  # "soon" expires exactly now
    assert await service.expire() == 20
    assert await service.expire() == 0
    expired = [s for s in await spends(db, member) if s[1] == "expire"]
    assert expired == [("expired", "expire", 50, None), ("soon", "expire", 20, None)]
    assert await available_now(db, member, clock.now()) == 140


async def test_expiry_warnings_once_per_lot(db: Database, clock: ManualClock) -> None:
    alice = await make_member(db, locale="zh_CN")
    bob = await make_member(db, locale="en")
    now = clock.now()

    def in_days(days: int) -> datetime:
        """When a lot must be earned to expire `days` from now."""
        return add_months(now + timedelta(days=days), -LADDER.points.expiry_months)

    await award(db, alice, "a-10", 15, in_days(10))
    await award(db, alice, "a-20", 25, in_days(20))
    await award(db, alice, "a-40", 35, in_days(40))
    await award(db, alice, "a-gone", 99, in_days(-1))
    await award(db, bob, "b-29", 5, in_days(29))
    await award(db, bob, "b-spent", 7, in_days(5))
    [order] = await make_orders(db, bob)
    async with db.transaction() as session:
        await run_on(session, points.redeem_on, bob, 7, order_id=order, at=now)
    service = points.Points(db, LADDER, clock)

    warnings = await service.expiry_warnings()
    assert [(w.member_id, w.locale, w.amount, w.expires_at) for w in warnings] == [
        (alice, "zh_CN", 40, now + timedelta(days=10)),
        (bob, "en", 5, now + timedelta(days=29)),
    ]
    assert warnings[0].telegram_id is not None
    assert await service.expiry_warnings() == []

    clock.advance(timedelta(days=15))
    again = await service.expiry_warnings()
    assert [(w.member_id, w.amount) for w in again] == [(alice, 35)]
    assert await service.expiry_warnings() == []


async def test_balance_and_history(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    await four_lots(db, member)
    [order] = await make_orders(db, member)
    async with db.transaction() as session:
        await run_on(
            session, points.redeem_on, member, 10, order_id=order, at=START + timedelta(hours=1)
        )
    service = points.Points(db, LADDER, clock)

    balance = await service.balance(member)
    assert balance == points.PointsBalance(available=160, expiring=0, expiring_at=None)

    clock.set(datetime(2026, 12, 20, tzinfo=UTC))  # "soon" (2027-01-10) is now in the window
    balance = await service.balance(member)
    assert balance.available == 160
    assert balance.expiring == 20
    assert balance.expiring_at == datetime(2027, 1, 10, tzinfo=UTC)

    history = await service.history(member, limit=3)
    assert [(e.kind, e.amount, e.order_id) for e in history] == [
        ("redeem", -10, order),
        ("earn", 100, None),
        ("earn", 40, None),
    ]
    assert all(e.at.tzinfo is not None for e in history)
    assert history[1].at.astimezone(SHOP_ZONE).date() == (START - timedelta(days=30)).date()

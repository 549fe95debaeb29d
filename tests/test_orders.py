"""Buying codes: prices, refusals that change nothing, idempotency, refunds."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from core.clock import ManualClock
from core.errors import ErrorCode, ShopError
from core.models import (
    ActivityEvent,
    Code,
    Member,
    Order,
    PointLot,
    Product,
    RiskEvent,
    TierPrice,
    WalletEntry,
)
from core.shop import Shop
from core.wallet import post_entry_on
from tests.factories import give_points, make_member, make_product


async def _count(shop: Shop, query) -> int:  # type: ignore[no-untyped-def]
    async with shop.db.read() as session:
        return int(await session.scalar(query) or 0)


async def _available(shop: Shop, product_id: int) -> int:
    return await _count(
        shop,
        select(func.count())
        .select_from(Code)
        .where(Code.product_id == product_id, Code.order_id.is_(None)),
    )


async def _balance(shop: Shop, member_id: int) -> int:
    return await shop.wallet.balance(member_id)


async def test_quote_applies_the_tier_rate_rounding_half_up(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1050)
    member = await make_member(shop.db, shop.clock, balance=10_000)
    gold = await make_member(shop.db, shop.clock, balance=10_000, tier="gold")

    q = await shop.catalog.quote(member, product, 1)
    # 1050 × 95% = 997.5 → 998 (half up)
    assert (q.unit_price, q.discount, q.total, q.price_source) == (998, 52, 998, "tier_rate")
    q = await shop.catalog.quote(gold, product, 3)
    # 1050 × 85% = 892.5 → 893, three of them
    assert (q.unit_price, q.subtotal, q.discount, q.balance_after) == (893, 2679, 471, 7321)


async def test_tier_price_beats_the_rate_but_never_exceeds_base(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000)
    gold = await make_member(shop.db, shop.clock, tier="gold")
    async with shop.db.transaction() as session:
        session.add(TierPrice(product_id=product, tier_key="gold", price=700))
        session.add(TierPrice(product_id=product, tier_key="member", price=5000))
    member = await make_member(shop.db, shop.clock)

    assert (await shop.catalog.quote(gold, product, 1)).unit_price == 700
    # A tier price above the tier's own rate (95折 = 950) is not charged.
    assert (await shop.catalog.quote(member, product, 1)).unit_price == 950


async def test_a_purchase_delivers_exactly_the_claimed_codes(shop: Shop) -> None:
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=5)
    member = await make_member(shop.db, shop.clock, balance=5000, tier="silver")

    purchase = await shop.orders.place(member, product, 2, idempotency_key="k1")

    assert purchase.created
    assert purchase.codes == codes[:2]
    assert purchase.order.total == 1800  # silver pays 90%
    assert purchase.balance_after == 3200 == await _balance(shop, member)
    assert await _available(shop, product) == 3
    async with shop.db.read() as session:
        ledger = (
            await session.scalars(select(WalletEntry).where(WalletEntry.member_id == member))
        ).all()
        assert [(e.kind, e.amount, e.balance_after) for e in ledger] == [
            ("topup", 5000, 5000),
            ("purchase", -1800, 3200),
        ]
        lot = await session.scalar(
            select(PointLot).where(PointLot.source_key == f"order:{purchase.order.id}")
        )
        assert lot is not None
        assert lot.amount == 18
        assert await session.scalar(select(Member.total_spent).where(Member.id == member)) == 1800
        assert (
            await session.scalar(
                select(func.count())
                .select_from(ActivityEvent)
                .where(ActivityEvent.kind == "purchase")
            )
            == 1
        )
    again, shown = await shop.orders.reveal(member, purchase.order.id)
    assert shown == codes[:2]
    assert again.id == purchase.order.id


@pytest.mark.parametrize(
    ("balance", "quantity", "stock", "code"),
    [
        (500, 1, 5, ErrorCode.INSUFFICIENT_BALANCE),
        (50_000, 3, 2, ErrorCode.OUT_OF_STOCK),
        (50_000, 11, 20, ErrorCode.QUANTITY_OUT_OF_RANGE),
        (50_000, 0, 5, ErrorCode.QUANTITY_OUT_OF_RANGE),
        (50_000, -3, 5, ErrorCode.QUANTITY_OUT_OF_RANGE),
    ],
)
async def test_a_refused_purchase_changes_nothing(
    shop: Shop, balance: int, quantity: int, stock: int, code: ErrorCode
) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=stock)
    member = await make_member(shop.db, shop.clock, balance=balance, tier="silver")

    with pytest.raises(ShopError) as refused:
        await shop.orders.place(member, product, quantity, idempotency_key="k")

    assert refused.value.code is code
    assert await _balance(shop, member) == balance
    assert await _available(shop, product) == stock
    assert await _count(shop, select(func.count()).select_from(Order)) == 0
    assert await _count(shop, select(func.count()).select_from(PointLot)) == 0


async def test_a_locked_pool_names_the_tier_that_opens_it(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, pool="exclusive")
    member = await make_member(shop.db, shop.clock, balance=10_000, tier="gold")

    with pytest.raises(ShopError) as refused:
        await shop.orders.place(member, product, 1, idempotency_key="k")
    assert refused.value.code is ErrorCode.NOT_ALLOWED_FOR_TIER
    assert refused.value.params["required"] == "platinum"


async def test_a_changed_price_is_quoted_again_not_charged(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000)
    member = await make_member(shop.db, shop.clock, balance=10_000)
    shown = await shop.catalog.quote(member, product, 1)
    async with shop.db.transaction() as session:
        session.add(TierPrice(product_id=product, tier_key="member", price=800))

    with pytest.raises(ShopError) as refused:
        await shop.orders.place(member, product, 1, idempotency_key="k", expected_total=shown.total)
    assert refused.value.code is ErrorCode.PRICE_CHANGED
    assert refused.value.params["quote"].total == 800
    assert await _balance(shop, member) == 10_000


async def test_the_same_key_returns_the_first_order_and_charges_once(shop: Shop) -> None:
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000)
    member = await make_member(shop.db, shop.clock, balance=10_000)

    first = await shop.orders.place(member, product, 1, idempotency_key="tap-1")
    second = await shop.orders.place(member, product, 1, idempotency_key="tap-1")

    assert not second.created
    assert second.order.id == first.order.id
    assert second.codes == first.codes == codes[:1]
    assert await _balance(shop, member) == 10_000 - 950


async def test_points_pay_part_of_an_order(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000)
    member = await make_member(shop.db, shop.clock, balance=10_000)
    await give_points(
        shop.db, shop.ladder, member, 300, at=shop.clock.now(), source="reward", key="gift"
    )

    q = await shop.catalog.quote(member, product, 1, use_points=True)
    assert (q.points_used, q.points_value, q.total) == (300, 300, 650)
    purchase = await shop.orders.place(member, product, 1, idempotency_key="p", use_points=True)
    assert purchase.order.points_used == 300
    assert await _balance(shop, member) == 10_000 - 650


async def test_a_refund_returns_money_and_takes_back_spend_and_points(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=10_000)
    member = await make_member(shop.db, shop.clock, balance=20_000)
    purchase = await shop.orders.place(member, product, 1, idempotency_key="r")

    refunded = await shop.orders.refund(purchase.order.id, actor="admin:1", reason="invalid code")

    assert refunded.status == "refunded"
    assert await _balance(shop, member) == 20_000
    async with shop.db.read() as session:
        assert await session.scalar(select(Member.total_spent).where(Member.id == member)) == 0
        lot = await session.scalar(
            select(PointLot).where(PointLot.source_key == f"order:{purchase.order.id}")
        )
        assert lot is not None
        assert lot.remaining == 0
    with pytest.raises(ShopError) as twice:
        await shop.orders.refund(purchase.order.id, actor="admin:1", reason="again")
    assert twice.value.code is ErrorCode.ORDER_NOT_REFUNDABLE
    assert await _balance(shop, member) == 20_000


async def test_someone_elses_order_reads_as_not_found(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock)
    owner = await make_member(shop.db, shop.clock, balance=10_000)
    other = await make_member(shop.db, shop.clock)
    purchase = await shop.orders.place(owner, product, 1, idempotency_key="x")

    with pytest.raises(ShopError) as refused:
        await shop.orders.reveal(other, purchase.order.id)
    assert refused.value.code is ErrorCode.ORDER_NOT_FOUND


async def test_a_replayed_key_returns_the_order_even_after_the_product_closed(shop: Shop) -> None:
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000)
    member = await make_member(shop.db, shop.clock, balance=10_000)
    first = await shop.orders.place(member, product, 1, idempotency_key="late-retry")
    async with shop.db.transaction() as session:
        await session.execute(update(Product).where(Product.id == product).values(active=False))

    again = await shop.orders.place(member, product, 1, idempotency_key="late-retry")

    assert not again.created
    assert again.order == first.order
    assert again.codes == codes[:1]
    assert again.balance_after == 10_000 - 950
    assert await _count(shop, select(func.count()).select_from(Order)) == 1


async def test_the_returned_order_is_what_the_database_holds(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=3)
    member = await make_member(shop.db, shop.clock, balance=10_000, tier="gold")

    purchase = await shop.orders.place(member, product, 2, idempotency_key="view")

    assert purchase.order == await shop.orders.get(member, purchase.order.id)
    assert purchase.order.product_names["en"]


async def test_an_unknown_member_or_product_is_refused_by_name(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock)
    member = await make_member(shop.db, shop.clock, balance=10_000)

    with pytest.raises(ShopError) as no_member:
        await shop.orders.place(999_999, product, 1, idempotency_key="k")
    with pytest.raises(ShopError) as no_product:
        await shop.orders.place(member, 999_999, 1, idempotency_key="k")

    assert no_member.value.code is ErrorCode.MEMBER_NOT_FOUND
    assert no_product.value.code is ErrorCode.PRODUCT_NOT_FOUND
    assert await _count(shop, select(func.count()).select_from(Order)) == 0


async def test_points_redeemed_at_purchase_come_back_on_refund(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000)
    member = await make_member(shop.db, shop.clock, balance=10_000)
    await give_points(
        shop.db, shop.ladder, member, 300, at=shop.clock.now(), source="reward", key="gift"
    )
    purchase = await shop.orders.place(member, product, 1, idempotency_key="p", use_points=True)
    assert (await shop.points.balance(member)).available == 6  # earned on ¥6.50 paid

    await shop.orders.refund(purchase.order.id, actor="admin:1", reason="test")

    assert (await shop.points.balance(member)).available == 300
    assert await _balance(shop, member) == 10_000


async def test_run_rolls_back_everything_when_the_work_raises(shop: Shop) -> None:
    member = await make_member(shop.db, shop.clock, balance=1000)

    def debit_then_fail(conn: Connection) -> None:
        post_entry_on(conn, member, -400, kind="adjustment", at=shop.clock.now(), reason="x")
        raise ShopError(ErrorCode.INVALID_INPUT, field="test")

    with pytest.raises(ShopError):
        await shop.db.run(debit_then_fail)

    assert await _balance(shop, member) == 1000
    assert len(await shop.wallet.history(member)) == 1


async def test_a_total_above_max_total_is_refused_before_anything_is_charged(shop: Shop) -> None:
    """Silver pays 90%: ¥9.00 each, ¥18.00 for two; a ceiling of ¥17.99 refuses it."""
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=5)
    member = await make_member(shop.db, shop.clock, balance=10_000, tier="silver")

    with pytest.raises(ShopError) as refused:
        await shop.orders.place(member, product, 2, idempotency_key="api:m1", max_total=1799)

    assert refused.value.code is ErrorCode.PRICE_ABOVE_LIMIT
    assert refused.value.params["total"] == 1800
    assert refused.value.params["max_total"] == 1799
    assert refused.value.params["quote"].total == 1800
    assert await _balance(shop, member) == 10_000
    assert await _available(shop, product) == 5
    assert await _count(shop, select(func.count()).select_from(Order)) == 0
    failures = select(RiskEvent.reason).where(RiskEvent.member_id == member)
    assert await _count(shop, select(func.count()).select_from(failures.subquery())) == 1
    async with shop.db.read() as session:
        assert await session.scalar(failures) == "price_above_limit"

    # The same key with a ceiling the price fits under buys, at exactly that total.
    purchase = await shop.orders.place(member, product, 2, idempotency_key="api:m1", max_total=1800)
    assert purchase.created
    assert purchase.order.total == 1800
    assert await _balance(shop, member) == 10_000 - 1800


async def test_a_key_replayed_for_another_purchase_is_a_conflict(shop: Shop) -> None:
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=5)
    other, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=5)
    member = await make_member(shop.db, shop.clock, balance=10_000, tier="silver")
    first = await shop.orders.place(member, product, 1, idempotency_key="api:c1")

    for product_id, quantity in ((product, 2), (other, 1)):
        with pytest.raises(ShopError) as refused:
            await shop.orders.place(member, product_id, quantity, idempotency_key="api:c1")
        assert refused.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
        assert refused.value.params == {"key": "api:c1"}

    again = await shop.orders.place(member, product, 1, idempotency_key="api:c1")
    assert (again.created, again.order, again.codes) == (False, first.order, codes[:1])
    assert await _balance(shop, member) == 10_000 - 900
    assert await _count(shop, select(func.count()).select_from(Order)) == 1


async def test_twenty_places_with_one_key_at_once_make_one_order(shop: Shop) -> None:
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=10)
    member = await make_member(shop.db, shop.clock, balance=10_000, tier="silver")

    results = await asyncio.gather(
        *(shop.orders.place(member, product, 2, idempotency_key="api:race") for _ in range(20))
    )

    assert sum(r.created for r in results) == 1
    assert {r.order.id for r in results} == {results[0].order.id}
    assert all(r.codes == codes[:2] for r in results)
    assert await _balance(shop, member) == 10_000 - 1800
    assert await _available(shop, product) == 8
    assert await _count(shop, select(func.count()).select_from(Order)) == 1


async def test_a_racing_replay_with_other_terms_is_a_conflict_never_a_second_order(
    shop: Shop,
) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=10)
    member = await make_member(shop.db, shop.clock, balance=10_000, tier="silver")

    results = await asyncio.gather(
        *(
            shop.orders.place(member, product, 1 + n % 2, idempotency_key="api:mixed")
            for n in range(20)
        ),
        return_exceptions=True,
    )

    placed = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, ShopError)]
    assert len(placed) + len(conflicts) == 20
    assert {e.code for e in conflicts} == {ErrorCode.IDEMPOTENCY_CONFLICT}
    quantity = placed[0].order.quantity
    assert len(placed) == 10
    assert {(p.order.id, p.order.quantity) for p in placed} == {(placed[0].order.id, quantity)}
    assert await _balance(shop, member) == 10_000 - 900 * quantity
    assert await _count(shop, select(func.count()).select_from(Order)) == 1


async def test_orders_since_a_moment_come_oldest_first(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=100, codes=10)
    member = await make_member(shop.db, clock, balance=10_000)
    other = await make_member(shop.db, clock, balance=10_000)
    placed = []
    for n in range(4):
        placed.append((await shop.orders.place(member, product, 1, idempotency_key=f"s{n}")).order)
        await shop.orders.place(other, product, 1, idempotency_key=f"o{n}")
        clock.advance(timedelta(minutes=1))

    assert await shop.orders.since(member, placed[0].created_at) == placed
    assert await shop.orders.since(member, placed[2].created_at) == placed[2:]
    assert await shop.orders.since(member, placed[1].created_at, limit=2) == placed[1:3]
    assert await shop.orders.since(member, clock.now()) == []

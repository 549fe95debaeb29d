"""Buying codes: prices, refusals that change nothing, idempotency, refunds."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from core.errors import ErrorCode, ShopError
from core.models import (
    ActivityEvent,
    Code,
    Member,
    Order,
    PointLot,
    Product,
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

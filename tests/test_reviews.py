"""Order reviews on both databases: once per order, own paid orders only, rating bounds."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from sqlalchemy import func, select

from core.clock import ManualClock
from core.config import DEFAULT_TIERS_FILE
from core.errors import ErrorCode, ShopError
from core.ladder import load_ladder
from core.models import ActivityEvent, Category, Member, OrderStatus, PointLot, Product, Review
from core.reviews import Reviews
from core.uow import Database
from tests.conftest import START
from tests.factories import make_order

LADDER = load_ladder(DEFAULT_TIERS_FILE)
_ids = itertools.count(1)


async def make_member(db: Database) -> int:
    n = next(_ids)
    async with db.transaction() as session:
        member = Member(
            telegram_id=900_000 + n,
            display_name=f"reviewer {n}",
            referral_code=f"R{n:07d}",
            tier_key="member",
            created_at=START,
        )
        session.add(member)
        await session.flush()
        return member.id


async def order_for(
    db: Database, member_id: int, status: OrderStatus = OrderStatus.DELIVERED
) -> int:
    n = next(_ids)
    async with db.transaction() as session:
        category = Category(slug=f"rev-{n}", name_zh="话费", name_en="Top-ups")
        session.add(category)
        await session.flush()
        product = Product(
            sku=f"REV-{n}",
            category_id=category.id,
            name_zh="话费",
            name_en="Top-up",
            base_price=500,
            created_at=START,
        )
        session.add(product)
        await session.flush()
        return await make_order(
            session, member_id, product.id, at=START, total=475, discount=25, status=status
        )


async def counts(db: Database) -> tuple[int, int, int]:
    """(reviews, point lots, activity events) in the database."""
    async with db.read() as session:
        reviews = await session.scalar(select(func.count()).select_from(Review))
        lots = await session.scalar(select(func.count()).select_from(PointLot))
        events = await session.scalar(select(func.count()).select_from(ActivityEvent))
    return reviews or 0, lots or 0, events or 0


async def test_review_awards_points_and_growth_once(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    order = await order_for(db, member)
    called: list[int] = []

    async def on_activity(member_id: int) -> None:
        called.append(member_id)

    reviews = Reviews(db, LADDER, clock, on_activity=on_activity)
    view = await reviews.review(member, order, 5, "  fast delivery  ")
    with pytest.raises(ShopError) as again:
        await reviews.review(member, order, 4)

    assert again.value.code is ErrorCode.ALREADY_REVIEWED
    assert (view.order_id, view.member_id, view.rating, view.text) == (
        order,
        member,
        5,
        "fast delivery",
    )
    assert view.points == LADDER.points.review_points
    async with db.read() as session:
        stored = (await session.execute(select(Review.id, Review.rating, Review.text))).all()
        lot = (await session.execute(select(PointLot.source_key, PointLot.amount))).all()
        event = (
            await session.execute(
                select(ActivityEvent.kind, ActivityEvent.ref, ActivityEvent.growth)
            )
        ).all()
        growth = await session.scalar(select(Member.growth_points).where(Member.id == member))
    assert [tuple(r) for r in stored] == [(view.id, 5, "fast delivery")]
    assert [tuple(r) for r in lot] == [(f"review:{view.id}", LADDER.points.review_points)]
    assert [tuple(r) for r in event] == [("review", f"review:{view.id}", LADDER.growth.review)]
    assert growth == LADDER.growth.review
    assert called == [member]


@pytest.mark.parametrize("rating", [0, 6, -1])
async def test_rating_out_of_range_is_refused(
    db: Database, clock: ManualClock, rating: int
) -> None:
    member = await make_member(db)
    order = await order_for(db, member)
    with pytest.raises(ShopError) as refused:
        await Reviews(db, LADDER, clock).review(member, order, rating)
    assert refused.value.code is ErrorCode.INVALID_RATING
    assert await counts(db) == (0, 0, 0)


async def test_rating_bounds_are_accepted(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    low, high = await order_for(db, member), await order_for(db, member, "paid")
    reviews = Reviews(db, LADDER, clock)
    assert (await reviews.review(member, low, 1)).rating == 1
    assert (await reviews.review(member, high, 5)).rating == 5
    assert await counts(db) == (2, 2, 2)


@pytest.mark.parametrize("status", [OrderStatus.PLACED, OrderStatus.FAILED, OrderStatus.REFUNDED])
async def test_unpaid_or_refunded_orders_cannot_be_reviewed(
    db: Database, clock: ManualClock, status: OrderStatus
) -> None:
    member = await make_member(db)
    order = await order_for(db, member, status)
    with pytest.raises(ShopError) as refused:
        await Reviews(db, LADDER, clock).review(member, order, 5)
    assert refused.value.code is ErrorCode.ORDER_NOT_FOUND
    assert await counts(db) == (0, 0, 0)


async def test_someone_elses_order_looks_missing(db: Database, clock: ManualClock) -> None:
    owner, stranger = await make_member(db), await make_member(db)
    order = await order_for(db, owner)
    reviews = Reviews(db, LADDER, clock)

    with pytest.raises(ShopError) as theirs:
        await reviews.review(stranger, order, 1, "never bought this")
    with pytest.raises(ShopError) as missing:
        await reviews.review(stranger, order + 1000, 1)

    assert theirs.value.code is ErrorCode.ORDER_NOT_FOUND
    assert theirs.value.params == missing.value.params | {"order": order}
    assert await counts(db) == (0, 0, 0)
    assert (await reviews.review(owner, order, 4)).member_id == owner


async def test_concurrent_reviews_of_one_order_count_once(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    order = await order_for(db, member)
    reviews = Reviews(db, LADDER, clock)

    results = await asyncio.gather(
        *(reviews.review(member, order, 5) for _ in range(10)), return_exceptions=True
    )

    refused = [r for r in results if isinstance(r, ShopError)]
    assert len(refused) == 9
    assert all(r.code is ErrorCode.ALREADY_REVIEWED for r in refused)
    assert await counts(db) == (1, 1, 1)


async def test_of_order_shows_the_buyers_review_to_the_buyer_only(
    db: Database, clock: ManualClock
) -> None:
    owner, stranger = await make_member(db), await make_member(db)
    order = await order_for(db, owner)
    reviews = Reviews(db, LADDER, clock)
    assert await reviews.of_order(owner, order) is None

    written = await reviews.review(owner, order, 4, "quick")

    assert await reviews.of_order(owner, order) == written
    assert await reviews.of_order(stranger, order) is None

"""The demo shop: what it seeds, and that seeding twice adds nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from core.catalog import Catalog
from core.demo import CATEGORIES, MEMBERS, PRODUCTS, is_empty, seed_demo
from core.models import Base, Category, Code, Member, Product, TierPrice, WalletEntry
from core.money import apply_rate
from core.pricing import PricingInput, unit_price
from core.shop import Shop
from core.uow import Database


async def _row_counts(db: Database) -> dict[str, int]:
    counts = {}
    async with db.read() as session:
        for table in Base.metadata.sorted_tables:
            counts[table.name] = await session.scalar(select(func.count()).select_from(table)) or 0
    return counts


async def test_seed_demo_twice_adds_nothing_the_second_time(shop: Shop, db: Database) -> None:
    assert await is_empty(db)

    first = await seed_demo(db, shop.vault, shop.clock, shop.ladder)
    after_first = await _row_counts(db)
    second = await seed_demo(db, shop.vault, shop.clock, shop.ladder)
    after_second = await _row_counts(db)

    total_codes = sum(p.codes for p in PRODUCTS)
    assert 200 <= total_codes <= 500
    assert (first.categories_created, first.products_created, first.members_created) == (
        len(CATEGORIES),
        len(PRODUCTS),
        len(MEMBERS),
    )
    assert (first.codes_added, first.codes_existing) == (total_codes, 0)
    assert (second.categories_created, second.products_created, second.members_created) == (0, 0, 0)
    assert (second.categories_existing, second.products_existing, second.members_existing) == (
        len(CATEGORIES),
        len(PRODUCTS),
        len(MEMBERS),
    )
    assert (second.codes_added, second.codes_existing) == (0, total_codes)
    assert after_first == after_second
    assert after_first["categories"] == len(CATEGORIES)
    assert after_first["products"] == len(PRODUCTS)
    assert after_first["codes"] == total_codes
    assert after_first["members"] == len(MEMBERS)
    assert not await is_empty(db)


async def test_demo_shop_content(shop: Shop, db: Database) -> None:
    await seed_demo(db, shop.vault, shop.clock, shop.ladder)
    catalog = Catalog(db, shop.clock, ladder=shop.ladder)

    top = await catalog.categories()
    assert [c.name("zh_CN") for c in top] == ["游戏点卡", "话费充值", "软件授权"]
    games = await catalog.categories(top[0].id)
    assert [c.name("en") for c in games] == ["Tencent", "NetEase", "Steam"]

    listing = await catalog.products(None, page=1, page_size=50)
    assert listing.total == len(PRODUCTS)
    assert {p.pool for p in listing.items} == {"basic", "selected", "exclusive"}
    for product in listing.items:
        assert product.names["zh_CN"] != product.names["en"]
        assert product.descriptions["zh_CN"]
        assert product.descriptions["en"]
        assert product.stock == next(p.codes for p in PRODUCTS if p.sku == product.sku)

    async with db.read() as session:
        tier_prices = (await session.execute(select(TierPrice.tier_key, TierPrice.price))).all()
        secrets = list(await session.scalars(select(Code.secret).limit(20)))
        members = list(await session.scalars(select(Member).order_by(Member.telegram_id)))
        ledger = dict(
            (
                await session.execute(
                    select(WalletEntry.member_id, func.sum(WalletEntry.amount)).group_by(
                        WalletEntry.member_id
                    )
                )
            ).all()
        )
        kinds = set(await session.scalars(select(WalletEntry.kind)))
        product_count = await session.scalar(select(func.count()).select_from(Product))
        category_count = await session.scalar(select(func.count()).select_from(Category))
    assert tier_prices == [("gold", 15800)]
    assert (product_count, category_count) == (len(PRODUCTS), len(CATEGORIES))
    assert all(shop.vault.decrypt(secret).count("-") >= 2 for secret in secrets)

    assert [m.telegram_id for m in members] == [10001, 10002, 10003, 10004]
    assert [m.tier_key for m in members] == ["member", "silver", "gold", "diamond"]
    assert kinds == {"topup"}
    assert all(m.balance > 0 and ledger[m.id] == m.balance for m in members)

    low = await catalog.low_stock()
    assert [p.sku for p in low] == ["WINSRV-2022-STD"]


def test_every_demo_tier_price_is_a_real_saving_for_its_tier(shop: Shop) -> None:
    """A tier price only makes sense below what that tier pays anyway, and climbing the
    ladder never makes a demo product dearer."""
    for product in PRODUCTS:
        prices = dict(product.tier_prices)
        for key, price in prices.items():
            assert price < apply_rate(product.base_price, shop.ladder.tier(key).rate), product.sku
        paid = [
            unit_price(shop.ladder, _facts(product.base_price, key, prices))[0]
            for key in (tier.key for tier in shop.ladder.tiers)
        ]
        assert paid == sorted(paid, reverse=True), product.sku


def _facts(base: int, tier_key: str, prices: dict[str, int]) -> PricingInput:
    return PricingInput(
        product_id=1, sku="DEMO", active=True, pool="basic", base_price=base,
        max_per_order=None, tier_key=tier_key, tier_prices=prices, member_price=None,
        balance=0, available_points=0,
    )  # fmt: skip

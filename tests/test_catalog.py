"""The catalog: the category tree, product validation, paging, stock and tier prices."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select

from core.catalog import Catalog, Page, ProductView
from core.clock import ManualClock
from core.errors import ErrorCode, ShopError
from core.models import Category, Member, MemberPrice, Product, TierPrice
from core.shop import Shop
from core.stock import StockService, claim_codes_on
from core.uow import Database, run_on
from tests.factories import make_order


@pytest.fixture
def catalog(shop: Shop) -> Catalog:
    return Catalog(shop.db, shop.clock, ladder=shop.ladder)


@pytest.fixture
def stock(shop: Shop) -> StockService:
    return StockService(shop.db, shop.vault, shop.clock)


async def _tree(catalog: Catalog) -> None:
    await catalog.upsert_category("games", "游戏点卡", "Game cards", sort=1)
    await catalog.upsert_category("steam", "Steam", "Steam", parent_slug="games", sort=2)
    await catalog.upsert_category("tencent", "腾讯", "Tencent", parent_slug="games", sort=1)
    await catalog.upsert_category("phone", "话费充值", "Phone top-ups", sort=2)


async def _product(catalog: Catalog, sku: str, **fields: Any) -> ProductView:
    values: dict[str, Any] = {"name_zh": f"商品 {sku}", "name_en": f"Product {sku}"}
    values |= fields
    return await catalog.create_product(
        sku,
        values.pop("category_slug", "games"),
        values.pop("name_zh"),
        values.pop("name_en"),
        values.pop("base_price", 1000),
        **values,
    )


async def _sell(db: Database, clock: ManualClock, product_id: int, quantity: int) -> None:
    """Attach `quantity` codes to a fresh paid order, as the purchase path does."""
    async with db.transaction() as session:
        member = Member(
            telegram_id=None,
            referral_code=f"S{product_id}Q{quantity}",
            created_at=clock.now(),
        )
        session.add(member)
        await session.flush()
        order_id = await make_order(
            session,
            member.id,
            product_id,
            at=clock.now(),
            total=1000 * quantity,
            quantity=quantity,
            status="placed",
        )
        claimed = await run_on(
            session, claim_codes_on, product_id, quantity, order_id, clock.now(), member.id
        )
        assert len(claimed) == quantity


@contextmanager
def _selects(db: Database) -> Iterator[list[str]]:
    """Collect the SELECT statements the engine runs inside the block."""
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", before)


# --- categories ---------------------------------------------------------------------------


async def test_category_tree_two_levels_in_display_order(catalog: Catalog) -> None:
    await _tree(catalog)

    top = await catalog.categories()
    assert [(c.slug, c.children) for c in top] == [("games", 2), ("phone", 0)]
    games = top[0]
    assert games.parent_id is None
    assert games.name("zh_CN") == "游戏点卡"
    assert games.name("fr") == "Game cards"

    children = await catalog.categories(games.id)
    assert [c.slug for c in children] == ["tencent", "steam"]
    assert {c.parent_id for c in children} == {games.id}
    assert (await catalog.category(children[0].id)).name("en") == "Tencent"


async def test_upsert_category_updates_in_place(catalog: Catalog, db: Database) -> None:
    await _tree(catalog)
    before = await catalog.categories()

    again = await catalog.upsert_category("phone", "手机话费", "Mobile top-ups", sort=0)

    assert again.id == before[1].id
    assert [c.slug for c in await catalog.categories()] == ["phone", "games"]
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Category)) == 4
        row = await session.scalar(select(Category).where(Category.slug == "phone"))
    assert row is not None
    assert (row.name_zh, row.name_en) == ("手机话费", "Mobile top-ups")


async def test_category_tree_refuses_a_third_level(catalog: Catalog, db: Database) -> None:
    await _tree(catalog)

    with pytest.raises(ShopError) as grandchild:
        await catalog.upsert_category("qq", "QQ", "QQ", parent_slug="tencent")
    # A parent that already has children cannot itself become a child.
    with pytest.raises(ShopError) as nested_parent:
        await catalog.upsert_category("games", "游戏点卡", "Game cards", parent_slug="phone")
    with pytest.raises(ShopError) as missing:
        await catalog.upsert_category("qq", "QQ", "QQ", parent_slug="nope")

    for caught in (grandchild, nested_parent, missing):
        assert caught.value.code is ErrorCode.INVALID_INPUT
        assert caught.value.params["field"] == "parent_slug"
    async with db.read() as session:
        rows = (await session.execute(select(Category.slug, Category.parent_id))).all()
    assert "qq" not in {slug for slug, _ in rows}
    assert dict(rows)["games"] is None


async def test_unknown_category_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(ShopError) as caught:
        await catalog.category(404)
    assert caught.value.code is ErrorCode.CATEGORY_NOT_FOUND


# --- products -----------------------------------------------------------------------------


INVALID_FIELDS = [
    ("sku", "a"),
    ("sku", "bad sku!"),
    ("sku", "x" * 65),
    ("base_price", 0),
    ("base_price", -100),
    ("base_price", 9.9),
    ("pool", "vip"),
    ("max_per_order", 0),
    ("name_zh", ""),
    ("name_en", "   "),
    ("name_en", "n" * 129),
    ("low_stock_threshold", -1),
    ("category_slug", "nowhere"),
]


@pytest.mark.parametrize(("field", "value"), INVALID_FIELDS)
async def test_create_product_names_the_invalid_field(
    catalog: Catalog, db: Database, field: str, value: object
) -> None:
    await _tree(catalog)
    fields: dict[str, Any] = {field: value}
    sku = str(fields.pop("sku", "GOOD-1"))

    with pytest.raises(ShopError) as caught:
        await _product(catalog, sku, **fields)

    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert caught.value.params["field"] == field
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Product)) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [*[(f, v) for f, v in INVALID_FIELDS if f != "sku"], ("active", "yes"), ("colour", "red")],
)
async def test_update_product_names_the_invalid_field(
    catalog: Catalog, db: Database, field: str, value: object
) -> None:
    await _tree(catalog)
    await _product(catalog, "GOOD-1", base_price=1234)

    with pytest.raises(ShopError) as caught:
        await catalog.update_product("GOOD-1", **({"sort": 99} | {field: value}))

    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert caught.value.params["field"] == field
    async with db.read() as session:
        row = await session.scalar(select(Product))
    assert row is not None
    assert (row.name_en, row.base_price, row.sort) == ("Product GOOD-1", 1234, 0)


async def test_taken_sku_is_refused(catalog: Catalog, db: Database) -> None:
    await _tree(catalog)
    await _product(catalog, "QB-10")

    with pytest.raises(ShopError) as caught:
        await _product(catalog, "QB-10", name_en="Other")

    assert caught.value.params == {"field": "sku", "reason": "taken"}
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Product)) == 1


async def test_product_round_trip_and_updates(catalog: Catalog) -> None:
    await _tree(catalog)
    created = await _product(
        catalog,
        "STEAM_50",
        category_slug="steam",
        name_zh="Steam 钱包 ¥50",
        name_en="Steam Wallet ¥50",
        description_zh="国区",
        base_price=4900,
        pool="selected",
        max_per_order=5,
        low_stock_threshold=3,
    )
    assert created.name("zh_CN") == "Steam 钱包 ¥50"
    assert created.name("de") == "Steam Wallet ¥50"
    assert created.description("zh_CN") == "国区"
    assert (created.pool, created.max_per_order, created.stock) == ("selected", 5, 0)

    updated = await catalog.update_product(
        "STEAM_50", base_price=4800, category_slug="games", max_per_order=None, name_en=" Steam "
    )
    assert (updated.base_price, updated.max_per_order, updated.name("en")) == (4800, None, "Steam")
    games = (await catalog.categories())[0]
    assert updated.category_id == games.id

    hidden = await catalog.set_active("STEAM_50", False)
    assert hidden.active is False
    assert (await catalog.product(created.id)).active is False
    assert (await catalog.product_by_sku("STEAM_50")).base_price == 4800


async def test_unknown_products_are_not_found(catalog: Catalog) -> None:
    for call in (
        catalog.product(999),
        catalog.product_by_sku("NOPE"),
        catalog.update_product("NOPE", base_price=100),
        catalog.set_tier_price("NOPE", "gold", 100),
    ):
        with pytest.raises(ShopError) as caught:
            await call
        assert caught.value.code is ErrorCode.PRODUCT_NOT_FOUND


async def test_tier_and_member_prices(catalog: Catalog, shop: Shop, db: Database) -> None:
    await _tree(catalog)
    await _product(catalog, "WIN11", base_price=19900)
    member = await shop.members.register(5001)

    assert (await catalog.set_tier_price("WIN11", "gold", 18800)).tier_prices == {"gold": 18800}
    assert (await catalog.set_tier_price("WIN11", "gold", 18500)).tier_prices == {"gold": 18500}
    await catalog.set_tier_price("WIN11", "silver", 19500)
    assert (await catalog.set_tier_price("WIN11", "silver", None)).tier_prices == {"gold": 18500}
    with pytest.raises(ShopError) as unknown_tier:
        await catalog.set_tier_price("WIN11", "bronze", 100)
    assert unknown_tier.value.code is ErrorCode.UNKNOWN_TIER
    with pytest.raises(ShopError) as bad_price:
        await catalog.set_tier_price("WIN11", "gold", 0)
    assert bad_price.value.params["field"] == "price"

    await catalog.set_member_price(member.id, "WIN11", 15000)
    await catalog.set_member_price(member.id, "WIN11", 14000)
    async with db.read() as session:
        tier_rows = (await session.execute(select(TierPrice.tier_key, TierPrice.price))).all()
        member_rows = (await session.execute(select(MemberPrice.price))).scalars().all()
    assert tier_rows == [("gold", 18500)]
    assert member_rows == [14000]

    await catalog.set_member_price(member.id, "WIN11", None)
    with pytest.raises(ShopError) as no_member:
        await catalog.set_member_price(member.id + 100, "WIN11", 100)
    assert no_member.value.code is ErrorCode.MEMBER_NOT_FOUND
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(MemberPrice)) == 0


async def test_a_higher_tier_never_pays_more_than_a_lower_one(
    catalog: Catalog, shop: Shop, stock: StockService
) -> None:
    """The demo's STEAM-200 once charged 黄金 ¥188.00 while 白银 paid ¥175.50 at 9折;
    the browse quote and the purchase both take the best the tier is entitled to."""
    await _tree(catalog)
    product = await _product(catalog, "STEAM-200", category_slug="steam", base_price=19500,
                             pool="selected")  # fmt: skip
    await catalog.set_tier_price("STEAM-200", "gold", 18800)
    await catalog.set_tier_price("STEAM-200", "silver", 16000)
    await stock.import_codes("STEAM-200", ["S-1", "S-2", "S-3"])
    paid = {}
    for tier in ("silver", "gold", "platinum"):
        member = await shop.members.register(6100 + len(paid))
        await shop.tiers.set_tier(member.id, tier, actor="test", reason="scenario")
        await shop.operations.admin.top_up("test", member.id, 50_000, reason="paid in")
        shown = await shop.catalog.quote(member.id, product.id, 1)
        bought = await shop.orders.place(
            member.id, product.id, 1, idempotency_key="k", expected_total=shown.total
        )
        assert bought.order.unit_price == shown.unit_price
        paid[tier] = (shown.unit_price, shown.price_source)
    assert paid == {
        "silver": (16000, "tier_price"),
        "gold": (16000, "tier_price"),  # silver's price beats gold's ¥188 and 85折 ¥165.75
        "platinum": (15600, "tier_rate"),  # 8折
    }


# --- paging and stock -----------------------------------------------------------------------


async def test_products_page_with_total_and_has_next(
    catalog: Catalog, stock: StockService, db: Database
) -> None:
    await _tree(catalog)
    for number in range(7):
        await _product(catalog, f"P-{number}", sort=10 - number)
    await _product(catalog, "OTHER", category_slug="phone")
    await catalog.set_active("P-3", False)
    await stock.import_codes("P-6", ["CODE-A", "CODE-B"])
    games = (await catalog.categories())[0]

    with _selects(db) as statements:
        first = await catalog.products(games.id, page=1, page_size=4)
    assert len(statements) <= 2
    assert [p.sku for p in first.items] == ["P-6", "P-5", "P-4", "P-2"]
    assert (first.total, first.has_next, first.pages) == (6, True, 2)
    assert first.items[0].stock == 2
    assert first.items[1].stock == 0

    second = await catalog.products(games.id, page=2, page_size=4)
    assert [p.sku for p in second.items] == ["P-1", "P-0"]
    assert (second.total, second.has_next) == (6, False)

    past_end = await catalog.products(games.id, page=5, page_size=4)
    assert (past_end.items, past_end.total, past_end.has_next) == ((), 6, False)

    everything = await catalog.products(None, page=1, page_size=50, include_inactive=True)
    assert everything.total == 8
    assert "P-3" in {p.sku for p in everything.items}

    with pytest.raises(ShopError) as caught:
        await catalog.products(games.id, page=0, page_size=4)
    assert caught.value.params["field"] == "page"


async def test_stock_counts_skip_sold_codes(
    catalog: Catalog, stock: StockService, db: Database, clock: ManualClock
) -> None:
    await _tree(catalog)
    first = await _product(catalog, "A-1")
    second = await _product(catalog, "B-2")
    empty = await _product(catalog, "C-3")
    await stock.import_codes("A-1", [f"A-CODE-{n}" for n in range(6)])
    await stock.import_codes("B-2", ["B-CODE-1"])
    await _sell(db, clock, first.id, 4)

    with _selects(db) as statements:
        counts = await catalog.stock_counts([first.id, second.id, empty.id])
    assert counts == {first.id: 2, second.id: 1, empty.id: 0}
    assert len(statements) == 1
    assert await catalog.stock_counts([]) == {}
    assert (await catalog.product(first.id)).stock == 2
    assert await stock.available(first.id) == 2


async def test_low_stock_lists_active_products_below_threshold(
    catalog: Catalog, stock: StockService, db: Database, clock: ManualClock
) -> None:
    await _tree(catalog)
    plenty = await _product(catalog, "PLENTY", low_stock_threshold=2)
    sold_down = await _product(catalog, "SOLD", low_stock_threshold=3)
    await _product(catalog, "EMPTY", low_stock_threshold=1)
    await _product(catalog, "HIDDEN", low_stock_threshold=5, active=False)
    await _product(catalog, "NO-ALERT", low_stock_threshold=0)
    await stock.import_codes("PLENTY", ["P1", "P2"])
    await stock.import_codes("SOLD", ["S1", "S2", "S3", "S4"])
    await _sell(db, clock, sold_down.id, 2)

    low = await catalog.low_stock()

    assert [(p.sku, p.stock) for p in low] == [("EMPTY", 0), ("SOLD", 2)]
    assert plenty.id not in {p.id for p in low}


@pytest.mark.parametrize(
    ("asked", "shown", "items"),
    [(1, 1, (1, 2, 3)), (2, 2, (4, 5, 6)), (3, 3, (7,)), (9, 3, (7,)), (0, 1, (1, 2, 3))],
)
def test_a_page_past_either_end_is_the_nearest_one(
    asked: int, shown: int, items: tuple[int, ...]
) -> None:
    """A button drawn before the list shrank asks for a page that is gone."""
    page = Page.of(list(range(1, 8)), asked, 3)
    assert (page.page, page.items, page.pages, page.has_next) == (shown, items, 3, shown < 3)


def test_an_empty_list_is_one_empty_page() -> None:
    page = Page.of([], 4, 3)
    assert (page.page, page.items, page.pages, page.has_next) == (1, (), 1, False)

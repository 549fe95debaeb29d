"""Buyers' screens from the catalog kept in memory: a fixed number of statements, never stale.

A category page costs one statement whatever its size. The definitions come from
memory, and the member, the stock and the catalog's revision come from that one
statement. A change to the catalog shows on the very next screen whoever makes it:
this shop, a second shop on the same database (another process or worker, with a
copy of its own), or a statement typed into a database shell.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, update

from bot.adapters.terminal import TerminalChat, open_session
from bot.app import build_runtime
from bot.handlers.browse import PAGE_SIZE
from core.clock import ManualClock
from core.config import Settings
from core.errors import ErrorCode, ShopError
from core.models import Product, TierPrice
from core.shop import Shop, build_shop
from core.uow import Database
from tests.factories import make_member

PAGE = 5
BUYER = 770_001


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    """Every statement the engine sends inside the block (BEGIN and the rest)."""
    sent: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", before)


def _selects(sent: list[str]) -> list[str]:
    return [s for s in sent if s.lstrip().upper().startswith("SELECT")]


async def _category(shop: Shop, slug: str, products: int, *, codes: int = 2) -> int:
    """A leaf category with `products` products, each with `codes` codes; its id."""
    view = await shop.catalog.upsert_category(slug, f"分类 {slug}", f"Category {slug}")
    for number in range(products):
        sku = f"{slug}-{number}"
        await shop.catalog.create_product(sku, slug, f"商品 {sku}", f"Product {sku}", 1000)
        await shop.stock.import_codes(sku, [f"{sku}-code-{n}" for n in range(codes)])
    return view.id


@pytest.fixture
async def elsewhere(settings: Settings, clock: ManualClock) -> AsyncIterator[Shop]:
    """A second shop on the same database with its own engine and copy of the catalog,
    as another process (a `cardshop` command, another worker) has."""
    other = build_shop(settings, clock=clock)
    yield other
    await other.close()


async def test_a_category_page_costs_the_same_statements_whatever_its_size(shop: Shop) -> None:
    small = await _category(shop, "small", 3)
    big = await _category(shop, "big", 30, codes=1)
    member = await make_member(shop.db, shop.clock)
    await shop.catalog.browse(member, small, page_size=3)  # loads the catalog once

    with _statements(shop.db) as three:
        few = await shop.catalog.browse(member, small, page_size=3)
    with _statements(shop.db) as thirty:
        many = await shop.catalog.browse(member, big, page_size=30)

    assert (len(few.offers.items), len(many.offers.items)) == (3, 30)
    assert {offer.product.stock for offer in many.offers.items} == {1}
    assert len(three) == len(thirty)
    assert len(_selects(thirty)) == 1


async def test_every_buyer_screen_is_one_select(shop: Shop) -> None:
    """The top level, a category with children, a page, a product card, a confirmation."""
    parent = await shop.catalog.upsert_category("games", "游戏", "Games")
    leaf = await _category(shop, "steam", 4)
    await shop.catalog.upsert_category("steam", "Steam", "Steam", parent_slug="games")
    member = await make_member(shop.db, shop.clock, balance=10_000)
    top = await shop.catalog.browse(member, None, page_size=PAGE)
    product = (await shop.catalog.browse(member, leaf, page_size=PAGE)).offers.items[0].product

    screens = {
        "top": shop.catalog.browse(member, None, page_size=PAGE),
        "children": shop.catalog.browse(member, parent.id, page_size=PAGE),
        "page": shop.catalog.browse(member, leaf, page_size=PAGE),
        "card": shop.catalog.offer(member, product.id),
        "confirmation": shop.catalog.offer(member, product.id, 1, use_points=True),
    }
    for name, screen in screens.items():
        with _statements(shop.db) as sent:
            await screen
        assert len(_selects(sent)) == 1, name
    assert [category.slug for category in top.children] == ["games"]
    children = await shop.catalog.browse(member, parent.id, page_size=PAGE)
    assert ([c.slug for c in children.children], children.offers.items) == (["steam"], ())


@pytest.mark.parametrize("where", ["here", "elsewhere"])
async def test_a_change_to_the_catalog_shows_on_the_next_screen(
    shop: Shop, elsewhere: Shop, where: str
) -> None:
    admin = shop.catalog if where == "here" else elsewhere.catalog
    games = await _category(shop, "games", 2)
    member = await make_member(shop.db, shop.clock)

    async def shown() -> dict[str, int]:
        page = await shop.catalog.browse(member, games, page_size=PAGE)
        return {o.product.sku: o.quote.unit_price for o in page.offers.items if o.quote}

    assert await shown() == {"games-0": 950, "games-1": 950}  # member tier: 95折
    await admin.update_product("games-0", base_price=2000)
    assert await shown() == {"games-0": 1900, "games-1": 950}
    await admin.set_tier_price("games-1", "member", 500)
    assert await shown() == {"games-0": 1900, "games-1": 500}
    await admin.create_product("games-2", "games", "新品", "New", 3000)
    await elsewhere.stock.import_codes("games-2", ["NEW-1"])
    assert await shown() == {"games-0": 1900, "games-1": 500, "games-2": 2850}
    await admin.set_active("games-0", False)
    assert await shown() == {"games-1": 500, "games-2": 2850}
    withdrawn = await shop.catalog.offer(member, (await admin.product_by_sku("games-0")).id)
    assert withdrawn.refusal is not None
    assert withdrawn.refusal.code is ErrorCode.PRODUCT_INACTIVE
    await admin.upsert_category("games", "游戏点卡", "Game cards")
    renamed = await shop.catalog.browse(member, games, page_size=PAGE)
    assert renamed.category is not None
    assert renamed.category.name("en") == "Game cards"


async def test_a_change_typed_into_a_database_shell_shows_on_the_next_screen(shop: Shop) -> None:
    """The triggers, not the services, count the changes: no writer can forget to."""
    games = await _category(shop, "games", 1)
    member = await make_member(shop.db, shop.clock)
    product = (await shop.catalog.browse(member, games, page_size=PAGE)).offers.items[0].product
    async with shop.db.transaction() as session:
        await session.execute(update(Product).values(base_price=4000))
        session.add(TierPrice(product_id=product.id, tier_key="silver", price=100))
    assert (await shop.catalog.quote(member, product.id, 1)).unit_price == 3800
    await shop.tiers.set_tier(member, "silver", actor="test", reason="scenario")
    assert (await shop.catalog.quote(member, product.id, 1)).unit_price == 100


async def test_stock_member_and_member_prices_are_read_fresh(shop: Shop, elsewhere: Shop) -> None:
    games = await _category(shop, "games", 1, codes=2)
    member = await make_member(shop.db, shop.clock, balance=10_000)
    product = (await shop.catalog.browse(member, games, page_size=PAGE)).offers.items[0].product
    assert product.stock == 2

    await elsewhere.orders.place(member, product.id, 1, idempotency_key="first")
    after = await shop.catalog.offer(member, product.id)
    assert after.quote is not None
    assert (after.product.stock, after.quote.balance) == (1, 10_000 - 950)
    await elsewhere.catalog.set_member_price(member, product.sku, 300)
    assert (await shop.catalog.quote(member, product.id, 1)).price_source == "member_price"
    await elsewhere.orders.place(member, product.id, 1, idempotency_key="last")
    sold_out = (await shop.catalog.browse(member, games, page_size=PAGE)).offers.items[0]
    assert sold_out.sold_out
    assert sold_out.refusal is not None
    assert sold_out.refusal.code is ErrorCode.OUT_OF_STOCK


async def test_the_confirmed_price_is_the_price_charged(shop: Shop, elsewhere: Shop) -> None:
    games = await _category(shop, "games", 1, codes=5)
    member = await make_member(shop.db, shop.clock, balance=10_000)
    product = (await shop.catalog.browse(member, games, page_size=PAGE)).offers.items[0].product

    shown = await shop.catalog.quote(member, product.id, 1)
    bought = await shop.orders.place(
        member, product.id, 1, idempotency_key="first", expected_total=shown.total
    )
    assert (bought.order.total, bought.order.unit_price) == (shown.total, shown.unit_price)

    stale = await shop.catalog.quote(member, product.id, 1)
    await elsewhere.catalog.update_product(product.sku, base_price=1200)
    with pytest.raises(ShopError) as moved:
        await shop.orders.place(
            member, product.id, 1, idempotency_key="second", expected_total=stale.total
        )
    assert moved.value.code is ErrorCode.PRICE_CHANGED
    again = await shop.catalog.quote(member, product.id, 1)
    charged = moved.value.params["quote"]
    assert (again.unit_price, again.total) == (charged.unit_price, charged.total) == (1140, 1140)
    paid = await shop.orders.place(
        member, product.id, 1, idempotency_key="second", expected_total=again.total
    )
    assert paid.order.total == again.total


async def test_unknown_ids_are_not_found_even_when_just_created_elsewhere(
    shop: Shop, elsewhere: Shop
) -> None:
    member = await make_member(shop.db, shop.clock)
    await shop.catalog.browse(member, None, page_size=PAGE)  # the copy is loaded, empty
    fresh = await _category(elsewhere, "fresh", 1)
    page = await shop.catalog.browse(member, fresh, page_size=PAGE)
    assert [offer.product.sku for offer in page.offers.items] == ["fresh-0"]
    refusals = {
        ErrorCode.CATEGORY_NOT_FOUND: shop.catalog.browse(member, fresh + 100, page_size=PAGE),
        ErrorCode.PRODUCT_NOT_FOUND: shop.catalog.offer(member, 10_000),
        ErrorCode.MEMBER_NOT_FOUND: shop.catalog.offer(
            member + 100, page.offers.items[0].product.id
        ),
    }
    for code, screen in refusals.items():
        with pytest.raises(ShopError) as caught:
            await screen
        assert caught.value.code is code


async def test_a_page_past_the_end_is_the_last_page(shop: Shop) -> None:
    games = await _category(shop, "games", 7, codes=0)
    member = await make_member(shop.db, shop.clock)
    page = await shop.catalog.browse(member, games, page=9, page_size=PAGE)
    assert (page.offers.page, page.offers.total, len(page.offers.items)) == (2, 7, 2)
    assert all(offer.sold_out for offer in page.offers.items)
    with pytest.raises(ShopError) as caught:
        await shop.catalog.browse(member, games, page=0, page_size=PAGE)
    assert caught.value.params["field"] == "page"


async def _tap(chat: TerminalChat, label: str) -> None:
    texts = [button.text for button in chat.transport.last_buttons]
    await chat.send(f"/{next(n for n, text in enumerate(texts, 1) if label in text)}")


async def test_the_bot_draws_a_short_and_a_full_page_with_the_same_statements(shop: Shop) -> None:
    """Through the handlers: the page asks the catalog once, not once per product."""
    await _category(shop, "few", 1)
    await _category(shop, "full", PAGE_SIZE + 3)
    chat = await open_session(build_runtime(shop), user_id=BUYER, lang="en", out=io.StringIO())
    sent: dict[str, list[str]] = {}
    for slug in ("few", "full", "few", "full"):  # the first round loads the catalog
        await chat.send("/shop")
        with _statements(shop.db) as sent[slug]:
            await _tap(chat, f"Category {slug}")
        shown = {button.text for button in chat.transport.last_buttons}
        assert f"Product {slug}-0 · ¥9.50" in shown
    assert len(sent["few"]) == len(sent["full"])

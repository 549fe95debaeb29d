"""Browsing, buying, my orders and my balance, end to end on both adapters and databases.

Every purchase is checked against the database: the codes the member was shown must be
exactly the codes now bound to their order (decrypted by the shop's vault), and the
wallet must have moved by exactly the quoted total, once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.handlers.browse import ShopCallback
from bot.i18n import Translator
from core.models import Code, Order, PointLot, WalletEntry
from core.shop import Shop
from tests.botapi import BotApiStub, StoredMessage
from tests.e2e.harness import Chat
from tests.factories import give_points

LOCALES = {"zh_CN": "zh-hans", "en": "en"}
STEAM_PRICE = 10_000
VIP_PRICE = 50_000
#: One code needs escaping, so a code that breaks HTML would fail the send.
STEAM_CODES = ["STEAM-AAAA-0001", "STEAM-BBBB-0002", "Q&A<9>-0003", "STEAM-DDDD-0004"]
TOP_UP = 100_000


@pytest.fixture(autouse=True)
def quick_typist(api: BotApiStub) -> None:
    """These members tap and type faster than Telegram's per-chat flood limit allows.

    The limit and the adapters' retries are the framework's scenarios; here a 429 would
    only make the conversation slow.
    """
    api.limits.per_chat_burst = 100


def money(locale: str, fen: int) -> str:
    return Translator(locale, currency="CNY", zone=UTC).money(fen)


def text(locale: str, message: str) -> str:
    return Translator(locale, currency="CNY", zone=UTC)._(message)


async def seed(shop: Shop) -> dict[str, int]:
    """Two category levels, a basic product with codes and one only platinum may buy."""
    catalog = shop.catalog
    await catalog.upsert_category("games", "游戏点卡", "Game cards")
    await catalog.upsert_category("steam", "Steam 充值卡", "Steam cards", parent_slug="games")
    steam = await catalog.create_product(
        "STEAM-100", "steam", "Steam ¥100 卡", "Steam ¥100", STEAM_PRICE
    )
    vip = await catalog.create_product(
        "STEAM-VIP", "steam", "Steam 尊享卡", "Steam VIP", VIP_PRICE, pool="exclusive"
    )
    await shop.stock.import_codes("STEAM-100", STEAM_CODES)
    await shop.stock.import_codes("STEAM-VIP", ["VIP-0001", "VIP-0002"])
    return {"steam": steam.id, "vip": vip.id}


async def buyer(
    chat: Callable[..., Chat], shop: Shop, user_id: int, locale: str, *, tier: str = "silver"
) -> tuple[Chat, int]:
    """A member registered by /start, with money in the wallet and (by default) silver."""
    member_chat = chat(user_id, language_code=LOCALES[locale])
    await member_chat.say("/start")
    member = await shop.members.by_telegram(user_id)
    assert member is not None
    await shop.operations.admin.top_up("test", member.id, TOP_UP, reason="paid in")
    if tier != member.tier_key:
        await shop.tiers.set_tier(member.id, tier, actor="test", reason="scenario")
    return member_chat, member.id


def button(message: StoredMessage, starts: str) -> str:
    """The callback data of the button labelled `starts`, or else the one label starting so."""
    labelled = [b for b in message.buttons if "callback_data" in b]
    found = [b["callback_data"] for b in labelled if b["text"] == starts] or [
        b["callback_data"] for b in labelled if b["text"].startswith(starts)
    ]
    assert len(found) == 1, f"buttons starting {starts!r}: {[b['text'] for b in labelled]}"
    return str(found[0])


async def press(member: Chat, message: StoredMessage, starts: str) -> StoredMessage:
    """Tap the button starting with `starts`; the menu is edited in place, never re-sent."""
    [changed] = await member.press(message.message_id, button(message, starts))
    assert changed.message_id == message.message_id
    return changed


def codes_in(message: StoredMessage) -> list[str]:
    """The texts shown as <code> (tap to copy), read from the entities Telegram reports."""
    units = (message.text or "").encode("utf-16-le")
    return [
        units[2 * e["offset"] : 2 * (e["offset"] + e["length"])].decode("utf-16-le")
        for e in message.entities
        if e["type"] == "code"
    ]


async def order_codes(shop: Shop, order_id: int) -> list[str]:
    async with shop.db.read() as session:
        secrets = await session.scalars(
            select(Code.secret).where(Code.order_id == order_id).order_by(Code.id)
        )
        return [shop.vault.decrypt(secret) for secret in secrets]


async def count(shop: Shop, model: Any, *conditions: Any) -> int:
    async with shop.db.read() as session:
        return int(
            await session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0
        )


async def open_product(member: Chat, locale: str, name: str) -> StoredMessage:
    """/shop → Game cards → Steam cards → the product: one message edited all the way."""
    [menu] = await member.say("/shop")
    games = await press(member, menu, "游戏点卡" if locale == "zh_CN" else "Game cards")
    listing = await press(member, games, "Steam 充值卡" if locale == "zh_CN" else "Steam cards")
    return await press(member, listing, name)


async def confirmation(member: Chat, locale: str, quantity: str) -> StoredMessage:
    product = await open_product(member, locale, "Steam ¥100")
    return await press(member, product, quantity)


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_new_buyer_browses_buys_two_codes_and_gets_exactly_them(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    ids = await seed(shop)
    member, member_id = await buyer(chat, shop, 2001, locale)

    [menu] = await member.say("/shop")
    games = await press(member, menu, "游戏点卡" if locale == "zh_CN" else "Game cards")
    listing = await press(member, games, "Steam 充值卡" if locale == "zh_CN" else "Steam cards")
    # Silver pays 9折: the member's price, the base price struck through, the stock left.
    line = text(locale, "{price} · {stock} left").format(
        price=f"{money(locale, 9_000)} {money(locale, STEAM_PRICE)}", stock="4"
    )
    assert line in (listing.text or "")
    product = await press(member, listing, "Steam ¥100")
    quick = [b["text"] for b in product.buttons if b["callback_data"].startswith("buyq:")]
    assert quick == ["1", "2"]  # silver may buy 10, but four codes are in stock

    quote = await shop.catalog.quote(member_id, ids["steam"], 2)
    confirm = await press(member, product, "2")
    assert money(locale, quote.total) in (confirm.text or "")
    assert money(locale, quote.discount) in (confirm.text or "")

    paid = await press(member, confirm, text(locale, "✅ Pay {total}").split("{total}")[0])
    async with shop.db.read() as session:
        order = await session.scalar(select(Order).where(Order.member_id == member_id))
    assert order is not None
    assert order.quantity == 2
    assert order.total == quote.total
    taken = await order_codes(shop, order.id)
    assert len(taken) == 2
    assert set(taken) <= set(STEAM_CODES)
    assert codes_in(paid) == taken
    assert await shop.wallet.balance(member_id) == TOP_UP - quote.total
    assert order.status == "delivered"
    assert await shop.stock.available(ids["steam"]) == len(STEAM_CODES) - 2


async def test_double_tap_and_redelivery_on_pay_charge_once(
    chat: Callable[..., Chat], shop: Shop
) -> None:
    ids = await seed(shop)
    member, member_id = await buyer(chat, shop, 2002, "en")
    confirm = await confirmation(member, "en", "1")
    pay = button(confirm, "✅ Pay")

    update = member.api.inject_callback(member.user, confirm.message_id, pay)
    member.queries.append(update["callback_query"]["id"])
    await member.api.wait_for(
        lambda: update["callback_query"]["id"] in member.api.answered_callbacks
    )
    await member.press(confirm.message_id, pay)  # the second tap of a double tap
    await member.send_update(update, expect_reply=False)  # Telegram delivers it again

    quote = await shop.catalog.quote(member_id, ids["steam"], 1)
    assert await count(shop, Order, Order.member_id == member_id) == 1
    assert await count(shop, WalletEntry, WalletEntry.kind == "purchase") == 1
    assert await shop.wallet.balance(member_id) == TOP_UP - quote.total
    assert await shop.stock.available(ids["steam"]) == len(STEAM_CODES) - 1
    [order_id] = [o.id for o in await shop.orders.recent(member_id)]
    shown = member.api.message(member.chat_id, confirm.message_id)
    assert codes_in(shown) == await order_codes(shop, order_id)


async def test_forged_buttons_change_nothing(chat: Callable[..., Chat], shop: Shop) -> None:
    ids = await seed(shop)
    owner, owner_id = await buyer(chat, shop, 2003, "en")
    confirm = await confirmation(owner, "en", "1")
    await press(owner, confirm, "✅ Pay")
    [order] = await shop.orders.recent(owner_id)

    thief, thief_id = await buyer(chat, shop, 2004, "en")
    [menu] = await thief.say("/balance")
    forged = {
        f"order:{order.id}:1": "No such order.",
        "prod:99999:1": "This item does not exist.",
        f"buyq:{ids['steam']}:0:1": "Please choose a quantity from 1 to 10.",
        f"buyq:{ids['steam']}:9999:1": "Please choose a quantity from 1 to 10.",
        f"buyq:{ids['steam']}:-1:1": "This button is no longer valid.",
        "buypay:forged0": "This button is no longer valid.",
        "buypts:forged0:1": "This button is no longer valid.",
    }
    for data, answer in forged.items():
        changed = await thief.press(menu.message_id, data)
        assert changed == [], data
        reply = thief.answer()
        assert reply is not None, data
        assert reply.startswith(answer), (data, reply)
        assert thief.api.answered_callbacks[thief.queries[-1]].show_alert
    assert all(not codes_in(m) for m in thief.api.sent_to(thief.chat_id))
    assert await count(shop, Order, Order.member_id == thief_id) == 0
    assert await shop.wallet.balance(thief_id) == TOP_UP
    assert await shop.stock.available(ids["steam"]) == len(STEAM_CODES) - 1


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_text_where_a_quantity_is_expected(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    ids = await seed(shop)
    member, member_id = await buyer(chat, shop, 2005, locale)
    await open_product(member, locale, "Steam ¥100")
    hint = text(locale, "Please send the quantity as a whole number, for example 2.")
    for typed in ("abc", "-3", "2.5"):
        [reply] = await member.say(typed)
        assert reply.text == hint
    [refused] = await member.say("9999")
    allowed = text(locale, "Please choose a quantity from {min} to {max}.")
    assert refused.text == allowed.format(min="1", max="10")
    [confirm] = await member.say("3")  # still asked for a quantity: the state was kept
    quote = await shop.catalog.quote(member_id, ids["steam"], 3)
    assert money(locale, quote.total) in (confirm.text or "")
    assert await count(shop, Order) == 0


async def test_price_change_between_confirm_and_pay_shows_the_new_quote(
    chat: Callable[..., Chat], shop: Shop
) -> None:
    ids = await seed(shop)
    member, member_id = await buyer(chat, shop, 2006, "en")
    confirm = await confirmation(member, "en", "1")
    await shop.catalog.update_product("STEAM-100", base_price=12_000)

    again = await press(member, confirm, "✅ Pay")
    assert member.answer() == text(
        "en", "The price has just changed. Please check the new price and confirm again."
    )
    new = await shop.catalog.quote(member_id, ids["steam"], 1)
    assert money("en", new.total) in (again.text or "")
    assert await count(shop, Order) == 0
    assert await shop.wallet.balance(member_id) == TOP_UP

    paid = await press(member, again, "✅ Pay")
    [order] = await shop.orders.recent(member_id)
    assert order.total == new.total == 10_800
    assert codes_in(paid) == await order_codes(shop, order.id)
    assert await shop.wallet.balance(member_id) == TOP_UP - new.total


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_locked_product_names_the_tier_that_opens_it(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    await seed(shop)
    member, _ = await buyer(chat, shop, 2007, locale, tier="member")
    platinum = shop.ladder.tier("platinum").name(locale)
    [menu] = await member.say("/shop")
    games = await press(member, menu, "游戏点卡" if locale == "zh_CN" else "Game cards")
    listing = await press(member, games, "Steam 充值卡" if locale == "zh_CN" else "Steam cards")
    assert f"🔒 {money(locale, VIP_PRICE)}" in (listing.text or "")
    assert platinum in (listing.text or "")
    locked = await press(member, listing, "🔒")
    assert text(locale, "🔒 Available from {tier} up.").format(tier=platinum) in (locked.text or "")
    assert not [b for b in locked.buttons if b["callback_data"].startswith("buyq:")]

    back = await press(member, locked, text(locale, "« Back"))
    product = await press(member, back, "Steam ¥100")
    quick = [b["text"] for b in product.buttons if b["callback_data"].startswith("buyq:")]
    assert quick == ["1"]  # a plain member buys one code at a time


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_orders_reveal_codes_and_balance_shows_the_ledger(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    await seed(shop)
    member, member_id = await buyer(chat, shop, 2008, locale)
    confirm = await confirmation(member, locale, "2")
    await press(member, confirm, text(locale, "✅ Pay {total}").split("{total}")[0])
    [order] = await shop.orders.recent(member_id)

    [listing] = await member.say("/orders")
    assert f"#{order.id}" in (listing.text or "")
    assert order.product_name(locale) in (listing.text or "")
    detail = await press(member, listing, f"#{order.id}")
    assert codes_in(detail) == await order_codes(shop, order.id)

    soon = shop.clock.now() - timedelta(days=350)  # a lot expiring within the warning window
    await give_points(shop.db, shop.ladder, member_id, 40, at=soon, source="checkin", key="old")
    [wallet] = await member.say("/balance")
    shown = wallet.text or ""
    assert money(locale, TOP_UP - order.total) in shown
    assert f"{text(locale, 'Top-up')} +{money(locale, TOP_UP)}" in shown
    assert f"{text(locale, 'Purchase')} −{money(locale, order.total)}" in shown
    assert f"#{order.id}" in shown
    warning = Translator(locale, currency="CNY", zone=UTC).ngettext(
        "⚠️ {points} point expires on {date}. Use it at checkout before then!",
        "⚠️ {points} points expire on {date}. Use them at checkout before then!",
        40,
    )
    assert warning.split("{date}")[0].format(points="40") in shown


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_a_purchase_that_earns_a_tier_announces_it_with_the_codes(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    await seed(shop)
    await shop.catalog.create_product("GIFT-600", "steam", "礼品卡 ¥600", "Gift card ¥600", 60_000)
    await shop.stock.import_codes("GIFT-600", ["GIFT-0001"])
    member, member_id = await buyer(chat, shop, 2009, locale, tier="member")
    product = await open_product(member, locale, "礼品卡" if locale == "zh_CN" else "Gift card")
    confirm = await press(member, product, "1")
    paid = await press(member, confirm, text(locale, "✅ Pay {total}").split("{total}")[0])

    silver = (await shop.members.get(member_id)).tier_key
    assert silver == "silver"  # ¥570 spent passes silver's ¥500
    name = shop.ladder.tier(silver).name(locale)
    assert text(locale, "🎉 Congratulations! Your level is now {tier}.").format(tier=name) in (
        paid.text or ""
    )
    [order] = await shop.orders.recent(member_id)
    assert codes_in(paid) == await order_codes(shop, order.id) == ["GIFT-0001"]


async def test_points_toggle_takes_points_off_the_total(
    chat: Callable[..., Chat], shop: Shop
) -> None:
    ids = await seed(shop)
    member, member_id = await buyer(chat, shop, 2010, "en")
    await give_points(
        shop.db, shop.ladder, member_id, 500, at=shop.clock.now(), source="checkin", key="day-1"
    )
    confirm = await confirmation(member, "en", "1")
    stale = button(confirm, "✅ Pay")  # drawn before the toggle
    with_points = await press(member, confirm, "🎁 Use points")
    quote = await shop.catalog.quote(member_id, ids["steam"], 1, use_points=True)
    assert quote.points_used == 500
    assert f"To pay: {money('en', quote.total)}" in (with_points.text or "")
    assert await member.press(confirm.message_id, stale) == []
    assert member.answer() == text(
        "en", "This button is no longer valid. Send /start to open the menu again."
    )

    await press(member, with_points, "✅ Pay")
    [order] = await shop.orders.recent(member_id)
    assert (order.points_used, order.total) == (500, quote.total)
    assert await shop.wallet.balance(member_id) == TOP_UP - quote.total
    async with shop.db.read() as session:
        left = await session.scalar(
            select(PointLot.remaining).where(PointLot.source_key == "day-1")
        )
    assert left == 0


async def test_gold_exports_own_orders_and_silver_cannot(
    chat: Callable[..., Chat], shop: Shop
) -> None:
    await seed(shop)
    gold, gold_id = await buyer(chat, shop, 2011, "en", tier="gold")
    confirm = await confirmation(gold, "en", "1")
    await press(gold, confirm, "✅ Pay")
    [order] = await shop.orders.recent(gold_id)
    [listing] = await gold.say("/orders")
    await gold.press(listing.message_id, button(listing, "📄 Export"))
    [document] = [m for m in gold.api.sent_to(gold.chat_id) if m.file is not None]
    rows = document.file.content.decode("utf-8-sig").splitlines()
    assert rows[0].startswith("order_id,")
    assert [row.split(",")[0] for row in rows[1:]] == [str(order.id)]

    silver, _ = await buyer(chat, shop, 2012, "en")
    [menu] = await silver.say("/orders")
    assert not [b for b in menu.buttons if b["text"].startswith("📄")]
    assert await silver.press(menu.message_id, "orders_csv") == []
    assert silver.answer() == "This is available from Gold up."
    assert not [m for m in silver.api.sent_to(silver.chat_id) if m.file is not None]


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_confirmation_shows_the_unit_price_each_unit_is_rounded_to(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    """Silver's 9折 of ¥9.35 is ¥8.415, rounded per unit to ¥8.42: ten cost ¥84.20, not
    ¥84.15, and the confirmation says so with the unit price."""
    await seed(shop)
    await shop.catalog.create_product("CARD-935", "steam", "点卡 ¥9.35", "Card ¥9.35", 935)
    await shop.stock.import_codes("CARD-935", [f"CARD-935-{n:02d}" for n in range(10)])
    member, member_id = await buyer(chat, shop, 2014, locale)
    product = await open_product(member, locale, "点卡" if locale == "zh_CN" else "Card")
    confirm = await press(member, product, "10")
    shown = confirm.text or ""
    unit = text(locale, "Unit price {unit} × {quantity} = {subtotal}").format(
        unit="¥8.42", quantity=10, subtotal="¥84.20"
    )
    assert unit in shown
    assert "¥84.15" not in shown
    assert "CN¥" not in shown
    assert (
        text(locale, "<b>To pay: {amount}</b>")
        .format(amount="¥84.20")
        .replace("<b>", "")
        .replace("</b>", "")
        in shown
    )

    await press(member, confirm, text(locale, "✅ Pay {total}").split("{total}")[0])
    [order] = await shop.orders.recent(member_id)
    assert (order.quantity, order.total) == (10, 8_420)


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_short_balance_says_how_much_is_missing(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    ids = await seed(shop)
    member, member_id = await buyer(chat, shop, 2013, locale)
    await shop.operations.admin.adjust(
        "test", member_id, -(TOP_UP - 5_000), reason="spent elsewhere"
    )
    confirm = await confirmation(member, locale, "2")
    quote = await shop.catalog.quote(member_id, ids["steam"], 2)
    shown = confirm.text or ""
    # The balance, the total and the shortfall; no "balance → ¥0.00" as if it were charged.
    assert text(locale, "Balance: {balance}").format(balance=money(locale, 5_000)) in shown
    assert money(locale, quote.total) in shown
    assert "→" not in shown
    assert money(locale, 0) not in shown
    missing = money(locale, quote.total - 5_000)
    short = text(locale, "⚠️ Your balance is {missing} short. Please top up first: contact support.")
    assert short.format(missing=missing) in shown
    if locale == "zh_CN":
        assert f"还差 {missing}" in shown
    assert not [b for b in confirm.buttons if b["text"].startswith("✅ Pay")]
    assert [b["callback_data"] for b in confirm.buttons if b["text"].startswith("💬")] == [
        "menu:ticket"
    ]
    assert await count(shop, Order) == 0


async def test_a_long_list_of_categories_pages_ten_at_a_time(
    chat: Callable[..., Chat], shop: Shop
) -> None:
    """23 categories: three pages, paged both ways; a page past the end shows the last."""
    for n in range(1, 24):
        await shop.catalog.upsert_category(f"cat-{n:02d}", f"分类 {n:02d}", f"Category {n:02d}")
    member, _ = await buyer(chat, shop, 2011, "en")
    [menu] = await member.say("/shop")
    names = [b["text"] for b in menu.buttons]
    assert names[:10] == [f"Category {n:02d}" for n in range(1, 11)]
    assert "Category 11" not in names
    assert "Page 1 of 3" in (menu.text or "")
    second = await press(member, menu, "Next ›")
    assert "Page 2 of 3" in (second.text or "")
    assert "Category 11" in [b["text"] for b in second.buttons]
    third = await press(member, second, "Next ›")
    assert [b["text"] for b in third.buttons][:3] == [f"Category {n}" for n in (21, 22, 23)]
    assert "Next ›" not in [b["text"] for b in third.buttons]
    back = await press(member, third, "‹ Previous")
    assert "Page 2 of 3" in (back.text or "")
    [stale] = await member.press(back.message_id, ShopCallback(page=9).pack())
    assert "Page 3 of 3" in (stale.text or "")

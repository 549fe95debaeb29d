"""The /admin area end to end: every flow through the real bot and the Bot API stand-in,
on both adapters and databases.

What the admin sees is checked against what the shop stored: the product and its tier
price, the imported codes, the ledger row and the audit row of each action, the ticket's
status and the relay the member got, the PNG and CSV bytes the bot uploaded, and the
`denied` audit rows of a non-admin who tried.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.app import build_runtime, own_transport
from bot.names import actor_for
from bot.notifier import TransportNotifier
from core.config import Settings
from core.jobs import LowStock, PointsExpiring
from core.models import AuditEntry, Code, Member, Ticket, WalletEntry
from core.shop import Shop
from tests.botapi import BotApiStub, StoredMessage
from tests.e2e.harness import Chat
from tests.e2e.test_membership import LOCALES, incoming, member_id, t
from tests.e2e.test_support import buyer_with_an_order, open_ticket
from tests.factories import make_member

ADMIN = 9_001
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
en = t("en")


@pytest.fixture
def bot_settings(bot_settings: Settings) -> Settings:
    return bot_settings.model_copy(update={"admin_ids": [ADMIN]})


@pytest.fixture
def admin(chat: Callable[..., Chat]) -> Chat:
    return chat(ADMIN, language_code="en", first_name="Boss")


async def audit_rows(shop: Shop, action: str) -> list[AuditEntry]:
    async with shop.db.read() as session:
        return list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
        )


async def open_admin(admin: Chat, section: str) -> StoredMessage:
    [menu] = await admin.say("/admin")
    assert en._("🛠 Shop admin") in (menu.text or "")
    [opened] = await admin.tap(en._(section))
    return opened


async def send_file(
    api: BotApiStub, who: Chat, filename: str, content: bytes
) -> list[StoredMessage]:
    return await incoming(
        api, who.chat_id, lambda: api.inject_document(who.user, filename, content)
    )


# --- refusals ------------------------------------------------------------------------------


async def test_non_admin_is_refused_and_the_attempt_is_audited(
    chat: Callable[..., Chat], admin: Chat, shop: Shop
) -> None:
    stranger = chat(3_001, language_code="zh-hans")
    [refusal] = await stranger.say("/admin")
    zh = t("zh_CN")
    assert refusal.text == zh._("Sorry, this is only for the shop's admins.")

    await admin.say("/start")
    target = await member_id(shop, ADMIN)
    # A forged "top up" button for the admin's own account, and a forged menu button.
    await stranger.say("/start")
    message_id = stranger.last_keyboard().message_id
    await stranger.press(message_id, f"admm:{target}:topup")
    assert stranger.answer() == zh._("Sorry, this is only for the shop's admins.")
    await stranger.press(message_id, "adm:members")
    assert stranger.answer() == zh._("Sorry, this is only for the shop's admins.")
    # What the forged button would have led to does not work either.
    [hint] = await stranger.say("100")
    assert zh._("Sorry, this is only for the shop's admins.") not in (hint.text or "")

    denied = await audit_rows(shop, "denied")
    assert [(row.actor, row.target) for row in denied] == [
        (actor_for(3_001), "/admin"),
        (actor_for(3_001), f"admm:{target}:topup"),
        (actor_for(3_001), "adm:members"),
    ]
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(WalletEntry)) == 0
        assert (await session.scalar(select(Member.balance).where(Member.id == target))) == 0


# --- products and stock --------------------------------------------------------------------


async def test_admin_creates_a_product_step_by_step(admin: Chat, shop: Shop) -> None:
    await shop.catalog.upsert_category("cards", "点卡", "Game cards")
    await open_admin(admin, "📦 Products")
    [sku] = await admin.tap(en._("➕ New product"))
    assert "SKU" in (sku.text or "")

    [bad] = await admin.say("bad sku!")
    assert en._("A SKU is 2 to 64 letters, digits, - or _, without spaces.") in (bad.text or "")
    await admin.say("CARD-50")
    await admin.say("点卡 50元")
    [price] = await admin.say("Game card 50")
    assert en._("<b>Price</b> in yuan before any level discount, e.g. 12.50.").replace(
        "<b>", ""
    ).replace("</b>", "") in (price.text or "")
    for wrong in ("12.345", "abc", "0"):
        [refused] = await admin.say(wrong)
        assert en._("Please send a price in yuan above zero, such as 12.50.") in (
            refused.text or ""
        )
    await admin.say("48.50")
    await admin.tap(en._("standard items"))
    [unknown] = await admin.say("diamondx=40")
    assert "diamondx" in (unknown.text or "")
    await admin.say("gold=45 platinum=44.5")
    await admin.say("5")
    await admin.tap("Game cards")
    [confirm] = await admin.tap(en._("Yes, on sale"))
    assert en._("Create this product?") in (confirm.text or "")
    assert en.money(4_850) in (confirm.text or "")

    [card] = await admin.tap(en._("✅ Create"))
    product = await shop.catalog.product_by_sku("CARD-50")
    assert (product.names, product.base_price, product.pool, product.max_per_order) == (
        {"zh_CN": "点卡 50元", "en": "Game card 50"},
        4_850,
        "basic",
        5,
    )
    assert product.active
    assert product.tier_prices == {"gold": 4_500, "platinum": 4_450}
    assert "CARD-50" in (card.text or "")
    [created] = await audit_rows(shop, "create_product")
    assert (created.actor, created.target) == (actor_for(ADMIN), "product:CARD-50")
    [prices] = await audit_rows(shop, "set_tier_prices")
    assert prices.after == {"tier_prices": {"gold": 4_500, "platinum": 4_450}}


async def test_admin_imports_codes_from_a_document(
    api: BotApiStub, admin: Chat, shop: Shop
) -> None:
    await shop.catalog.upsert_category("cards", "点卡", "Game cards")
    # Never "low", so no low-stock alert from the scheduled jobs lands in the admin chat.
    await shop.catalog.create_product(
        "CARD-10", "cards", "点卡10", "Card 10", 1_000, low_stock_threshold=0
    )
    await shop.stock.import_codes("CARD-10", ["OLD-1"])
    stock = await open_admin(admin, "🗃 Stock")
    assert "CARD-10" in (stock.text or "")
    [prompt] = await admin.tap("✅ CARD-10")
    assert "CARD-10" in (prompt.text or "")

    [refused] = await send_file(api, admin, "codes.pdf", b"%PDF")
    assert en._("Please send a .txt or .csv file.") in (refused.text or "")
    codes = "\ufeffNEW-1\nNEW-2\nNEW-2\nOLD-1\nbad code\n\nNEW-3\n".encode()
    [report] = await send_file(api, admin, "codes.txt", codes)
    assert en._(
        "📥 <b>{sku}</b>: {added} added, {duplicates}, {rejected} rejected."
        "\n{stock} in stock now. Send more, or go back."
    ).format(sku="CARD-10", added=3, duplicates="2 duplicates", rejected=1, stock=4).replace(
        "<b>", ""
    ).replace("</b>", "") in (report.text or "")
    assert en._("Line {line}: repeats an earlier line").format(line=3) in (report.text or "")
    assert en._("Line {line}: already stocked under {sku}").format(line=4, sku="CARD-10") in (
        report.text or ""
    )
    [pasted] = await admin.say("NEW-4\nNEW-1")
    assert "1 added, 1 duplicate, 0 rejected" in (pasted.text or "")
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Code)) == 5
    rows = await audit_rows(shop, "import_codes")
    assert [(row.after or {}).get("added") for row in rows] == [3, 1]
    assert all("NEW" not in str(row.after) for row in rows)


# --- members -------------------------------------------------------------------------------


async def test_admin_tops_up_a_member_and_sets_their_tier(
    chat: Callable[..., Chat], admin: Chat, shop: Shop
) -> None:
    member = chat(3_101, language_code="zh-hans", first_name="小红", username="xiaohong")
    await member.say("/start")
    mid = await member_id(shop, 3_101)
    await open_admin(admin, "👥 Members")
    [missing] = await admin.say("@nobody")
    assert "@nobody" in (missing.text or "")
    [card] = await admin.say("@XiaoHong")
    assert "3101" in (card.text or "")
    assert "小红" in (card.text or "")

    await admin.tap(en._("💰 Top up"))
    [bad] = await admin.say("lots")
    assert en._("Please send an amount in yuan, such as 100 or 12.50.") in (bad.text or "")
    [reason] = await admin.say("100")
    assert en.money(10_000) in (reason.text or "")
    [done] = await admin.say("paid by Alipay #123")
    assert f"{en.money(0)} → {en.money(10_000)}" in (done.text or "")

    async with shop.db.read() as session:
        [entry] = list(await session.scalars(select(WalletEntry)))
    assert (entry.member_id, entry.kind, entry.amount, entry.reason, entry.actor) == (
        mid,
        "topup",
        10_000,
        "paid by Alipay #123",
        actor_for(ADMIN),
    )
    [audit] = await audit_rows(shop, "topup")
    assert (audit.target, audit.before, audit.after) == (
        f"member:{mid}",
        {"balance": 0},
        {"balance": 10_000, "amount": 10_000, "reason": "paid by Alipay #123"},
    )

    await admin.tap(en._("⭐ Set level"))
    [moved] = await admin.tap(shop.ladder.tier("gold").name("en"))
    assert en._("✅ Level is now {tier}.").format(tier=shop.ladder.tier("gold").name("en")) in (
        moved.text or ""
    )
    assert (await shop.members.get(mid)).tier_key == "gold"
    [tier_audit] = await audit_rows(shop, "set_tier")
    assert (tier_audit.before or {})["tier"] == "member"
    assert (tier_audit.after or {})["tier"] == "gold"


# --- tickets -------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
async def test_admin_answers_and_closes_a_ticket(
    api: BotApiStub, chat: Callable[..., Chat], admin: Chat, shop: Shop, locale: str
) -> None:
    member = chat(3_201, language_code=LOCALES[locale], first_name="小明")
    await open_ticket(member, locale, "充值没到账")
    [ticket] = await _tickets(shop)

    queue = await open_admin(admin, "🎫 Tickets")
    assert f"#{ticket.id}" in (queue.text or "")
    assert en.ngettext("⏳ {count} minute left", "⏳ {count} minutes left", 2)[:2] in (
        queue.text or ""
    )
    [card] = await admin.tap(f"#{ticket.id}")
    assert "充值没到账" in (card.text or "")
    await admin.tap(en._("✍️ Take and reply"))
    relayed = await incoming(api, member.chat_id, lambda: api.inject_message(admin.user, "已补发"))
    tr = t(locale)
    assert tr._("💬 <b>Ticket #{id}</b> · support replies:").format(id=ticket.id).replace(
        "<b>", ""
    ).replace("</b>", "") in (relayed[0].text or "")
    assert "已补发" in (relayed[0].text or "")
    # The member's copy goes out first, then the admin's confirmation: under load the
    # bot can be quiet between the two for longer than `incoming` waits.
    await api.wait_for(
        lambda: en._("✅ Sent to the member.") in (api.sent_to(ADMIN)[-1].text or ""),
        what="the admin told the answer was sent",
    )
    [answered] = await _tickets(shop)
    assert answered.first_response_at is not None
    assert answered.assigned_staff_id == ADMIN

    closed = await incoming(api, member.chat_id, lambda: _tap_nowait(admin, en._("🔒 Close")))
    assert tr._("🔒 <b>Ticket #{id}</b> has been closed. How did we do?").format(
        id=ticket.id
    ).replace("<b>", "").replace("</b>", "") in (closed[0].text or "")
    [final] = await _tickets(shop)
    assert final.status == "closed"


async def _tickets(shop: Shop) -> list[Ticket]:
    async with shop.db.read() as session:
        return list(await session.scalars(select(Ticket).order_by(Ticket.id)))


def _tap_nowait(who: Chat, label: str) -> None:
    message_id, data = who.button_data(label)
    update = who.api.inject_callback(who.user, message_id, data)
    who.queries.append(update["callback_query"]["id"])


# --- stats and exports ---------------------------------------------------------------------


async def test_admin_sees_stats_with_a_chart_and_exports_csv(
    api: BotApiStub, chat: Callable[..., Chat], admin: Chat, shop: Shop
) -> None:
    _, _, order_id = await buyer_with_an_order(chat, shop, 3_301, "zh_CN")
    await open_admin(admin, "📊 Stats")
    sent = await admin.tap(en.ngettext("{count} day", "{count} days", 7).format(count=7))
    [summary] = [m for m in sent if m.file is None]
    assert f"Revenue: {en.money(950)} from 1 order (1 code)" in (summary.text or "")
    [photo] = [m for m in sent if m.file is not None]
    assert photo.file is not None
    assert photo.file.kind == "photo"
    assert photo.file.content.startswith(PNG_MAGIC)

    await admin.say("/admin")
    await admin.tap(en._("📄 Export"))
    await admin.tap(en._("Orders"))
    files = await admin.tap(en.ngettext("{count} day", "{count} days", 30).format(count=30))
    [document] = [m for m in files if m.file is not None]
    assert document.file is not None
    assert document.file.filename.startswith("orders-")
    rows = list(csv.reader(io.StringIO(document.file.content.decode("utf-8-sig"))))
    assert rows[0][0] == "order_id"
    assert [row[0] for row in rows[1:]] == [str(order_id)]

    await admin.say("/admin")
    await admin.tap(en._("📄 Export"))
    await admin.tap(en._("Wallet ledger"))
    [wrong] = await admin.say("2026-13-01 2026-11-22")
    assert "2026-11-01 2026-11-22" in (wrong.text or "")
    today = shop.clock.now().astimezone(shop.settings.zone).date()
    ledger = await admin.say(f"2020-01-01 {today}")
    [sheet] = [m for m in ledger if m.file is not None]
    assert sheet.file is not None
    kinds = [row[4] for row in csv.reader(io.StringIO(sheet.file.content.decode("utf-8-sig")))]
    assert kinds == ["kind", "topup", "purchase"]
    exports = await audit_rows(shop, "export")
    assert [row.target for row in exports] == ["orders", "ledger"]


# --- notices from the scheduled jobs -------------------------------------------------------


async def test_job_notices_reach_admins_and_members_in_their_language(
    api: BotApiStub, bot_settings: Settings, admin: Chat, shop: Shop
) -> None:
    await admin.say("/start")
    await shop.catalog.upsert_category("cards", "点卡", "Game cards")
    product = await shop.catalog.create_product("CARD-5", "cards", "点卡5", "Card 5", 500)
    api.user(3_401, language_code="zh-hans")
    mid = await make_member(shop.db, shop.clock, telegram_id=3_401)
    await shop.members.set_locale(mid, "zh_CN")
    api.block(3_401)

    # The shop as the bot builds it: with the bot's settings (its admins, its API).
    bot_shop = replace(shop, settings=bot_settings)
    async with own_transport(build_runtime(bot_shop), bot_settings) as transport:
        notifier = TransportNotifier(bot_shop, transport)
        await notifier.notify(LowStock(product))
        expires = shop.clock.now() + timedelta(days=30)
        await notifier.notify(PointsExpiring(mid, 3_401, "zh_CN", 120, expires))

    alert = api.sent_to(ADMIN)[-1].text or ""
    assert (
        en.ngettext(
            "📉 Low stock: <b>{name}</b> ({sku}) has {stock} code left"
            " (restock below {threshold}).",
            "📉 Low stock: <b>{name}</b> ({sku}) has {stock} codes left"
            " (restock below {threshold}).",
            0,
        )
        .format(name="Card 5", sku="CARD-5", stock=0, threshold=product.low_stock_threshold)
        .replace("<b>", "")
        .replace("</b>", "")
        == alert
    )
    assert api.sent_to(3_401) == []
    member = await shop.members.get(mid)
    assert member.unreachable

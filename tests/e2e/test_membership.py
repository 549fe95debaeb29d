"""Check-in, the level page and the VIP manager, end to end on both adapters and databases.

Numbers on screen are checked against what the shop stored: the check-in row and its
points, the member's tier after real purchases, every relayed manager message with the
id of its copy and whether it arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import func, select

from bot.errors import bad_button
from bot.i18n import Translator
from core.config import Settings
from core.models import CheckIn, ManagerMessage, Member, PointLot
from core.shop import Shop
from tests.botapi import BotApiStub, StoredMessage
from tests.e2e.harness import Chat, settle

LOCALES = {"zh_CN": "zh-hans", "en": "en"}
STAFF_CHAT = -1009876543210
MANAGER_TG = 7_700_001
STAFF_TG = 7_700_002
PRODUCT_PRICE = 18_000


@pytest.fixture
def bot_settings(bot_settings: Settings, api: BotApiStub) -> Settings:
    api.group(STAFF_CHAT, "客服群")
    return bot_settings.model_copy(update={"staff_chat_id": STAFF_CHAT})


def t(locale: str) -> Translator:
    return Translator(locale, currency="CNY", zone=UTC)


async def member_id(shop: Shop, telegram_id: int) -> int:
    member = await shop.members.by_telegram(telegram_id)
    assert member is not None
    return member.id


async def incoming(
    api: BotApiStub, chat_id: int, action: Callable[[], object]
) -> list[StoredMessage]:
    """Run `action` (an injected update) and return what the bot then sent to `chat_id`."""
    before = len(api.sent_to(chat_id))
    action()
    await api.wait_for(lambda: len(api.sent_to(chat_id)) > before, what=f"a message to {chat_id}")
    await settle(api)
    return api.sent_to(chat_id)[before:]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll the database until `check` holds: the bot records a delivery after sending it."""
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def manager_messages(shop: Shop) -> list[ManagerMessage]:
    async with shop.db.read() as session:
        return list(await session.scalars(select(ManagerMessage).order_by(ManagerMessage.id)))


async def press_latest(api: BotApiStub, member_chat: Chat, label: str) -> list[StoredMessage]:
    """Press the newest button labelled `label` in the chat, wherever it sits."""
    for message in reversed(api.sent_to(member_chat.chat_id)):
        for button in message.buttons:
            if button.get("text") == label and "callback_data" in button:
                return await member_chat.press(message.message_id, button["callback_data"])
    raise AssertionError(f"no button {label!r} in chat {member_chat.chat_id}")


# --- check-in -----------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
async def test_check_in_twice_refuses_the_second_with_the_next_opening(
    chat, shop: Shop, locale: str
) -> None:
    member_chat = chat(3101, language_code=LOCALES[locale])
    [first] = await member_chat.say("/checkin")
    mid = await member_id(shop, 3101)
    async with shop.db.read() as session:
        rows = list(await session.scalars(select(CheckIn).where(CheckIn.member_id == mid)))
        lots = await session.scalar(
            select(func.coalesce(func.sum(PointLot.amount), 0)).where(PointLot.member_id == mid)
        )
    assert len(rows) == 1
    assert rows[0].streak == 1
    assert rows[0].points == 10
    assert lots == 10
    tr = t(locale)
    assert (
        tr.ngettext(
            "✅ <b>Checked in!</b> +{points} point", "✅ <b>Checked in!</b> +{points} points", 10
        )
        .format(points=10)
        .replace("<b>", "")
        .replace("</b>", "")
        in first.text
    )
    assert (
        tr.ngettext(
            "Come back tomorrow for +{points} point.",
            "Come back tomorrow for +{points} points.",
            15,
        ).format(points=15)
        in first.text
    )
    if locale == "zh_CN":
        assert "签到成功" in first.text

    [second] = await member_chat.say("/checkin")
    opens = datetime.combine(rows[0].day + timedelta(days=1), time(0, 0))
    assert (
        tr._("You have already checked in today. Come back after {time}.").format(
            time=opens.strftime("%Y-%m-%d %H:%M")
        )
        in second.text
    )
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(CheckIn.id))) == 1
        assert (
            await session.scalar(
                select(func.coalesce(func.sum(PointLot.amount), 0)).where(PointLot.member_id == mid)
            )
            == 10
        )


async def test_check_in_from_the_menu_edits_in_place(chat, shop: Shop) -> None:
    member_chat = chat(3102, language_code="zh-hans")
    [menu] = await member_chat.say("/start")
    [edited] = await member_chat.tap("📅 每日签到")
    assert edited.message_id == menu.message_id
    assert "签到成功" in edited.text
    assert "已连续签到 1 天" in edited.text


# --- level --------------------------------------------------------------------------------


async def buy(shop: Shop, mid: int, product_id: int, key: str) -> None:
    await shop.orders.place(mid, product_id, 1, idempotency_key=key)


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
async def test_level_shows_what_is_left_then_the_new_tier(chat, shop: Shop, locale: str) -> None:
    tr = t(locale)
    member_chat = chat(3201, language_code=LOCALES[locale])
    [page] = await member_chat.say("/level")
    mid = await member_id(shop, 3201)
    member_name = shop.ladder.tier("member").name(locale)
    silver_name = shop.ladder.tier("silver").name(locale)
    assert member_name in page.text
    assert silver_name in page.text
    assert "░░░░░░░░░░ 0%" in page.text
    assert tr._("spend {amount} more").format(amount=tr.money(50_000)) in page.text
    if locale == "zh_CN":
        assert "再消费 ¥500.00" in page.text
        assert "95折" in page.text
        assert "9折" in page.text
    else:
        assert "5% off" in page.text
        assert "10% off" in page.text

    await shop.catalog.upsert_category("cards", "点卡", "Cards")
    product = await shop.catalog.create_product(
        "CARD-180", "cards", "点卡 ¥180", "Card ¥180", PRODUCT_PRICE
    )
    await shop.stock.import_codes("CARD-180", [f"CARD-{i:04d}" for i in range(5)])
    await shop.operations.admin.top_up("test", mid, 100_000, reason="paid in")
    await buy(shop, mid, product.id, "first")
    paid = 17_100  # 95折 of ¥180
    [page] = await member_chat.say("/level")
    assert tr._("spend {amount} more").format(amount=tr.money(50_000 - paid)) in page.text
    assert "▓▓▓░░░░░░░ 34%" in page.text
    if locale == "zh_CN":
        assert "再消费 ¥329.00" in page.text

    await buy(shop, mid, product.id, "second")
    await buy(shop, mid, product.id, "third")
    async with shop.db.read() as session:
        assert await session.scalar(select(Member.tier_key).where(Member.id == mid)) == "silver"
    [page] = await member_chat.say("/level")
    gold_name = shop.ladder.tier("gold").name(locale)
    assert (
        tr._("⭐ <b>Your level: {tier}</b>")
        .format(tier=silver_name)
        .replace("<b>", "")
        .replace("</b>", "")
        in page.text
    )
    assert (
        tr._("<b>Next level: {tier}</b>")
        .format(tier=gold_name)
        .replace("<b>", "")
        .replace("</b>", "")
        in page.text
    )
    assert tr._("Export your orders (CSV)") in page.text  # what gold adds


async def test_level_warns_about_a_trial(chat, shop: Shop) -> None:
    member_chat = chat(3202, language_code="en")
    await member_chat.say("/start")
    mid = await member_id(shop, 3202)
    await shop.tiers.grant_trial(mid, actor="test", days=30)
    [page] = await member_chat.say("/level")
    assert "You are trying Silver until" in page.text


# --- the VIP manager ----------------------------------------------------------------------


async def vip(
    chat, shop: Shop, telegram_id: int, locale: str, tier: str = "diamond"
) -> tuple[Chat, int]:
    member_chat = chat(telegram_id, language_code=LOCALES[locale], first_name="王总")
    await member_chat.say("/start")
    mid = await member_id(shop, telegram_id)
    await shop.tiers.set_tier(mid, tier, actor="test", reason="scenario")
    return member_chat, mid


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
async def test_diamond_member_talks_to_their_manager_and_gets_the_answer(
    chat, bot: BotApiStub, shop: Shop, locale: str
) -> None:
    tr = t(locale)
    member_chat, mid = await vip(chat, shop, 3301, locale)
    manager_chat = chat(MANAGER_TG, language_code="zh-hans", first_name="张三")
    await shop.manager.assign(mid, MANAGER_TG, display_name="张三")

    [intro] = await member_chat.say("/manager")
    assert tr._("Your dedicated manager {name} is here for you.").format(name="张三") in intro.text

    [ack] = await member_chat.say("想批量采购 <500> 张")
    assert tr._("✓ Sent to {name}.").format(name="张三") in ack.text
    [relayed] = bot.sent_to(MANAGER_TG)
    assert "想批量采购 <500> 张" in relayed.text
    assert "王总" in relayed.text
    [sent] = await manager_messages(shop)
    assert (sent.direction, sent.member_id, sent.text) == ("in", mid, "想批量采购 <500> 张")
    assert sent.relay_message_id == relayed.message_id
    assert sent.delivered is True

    [prompt] = await manager_chat.tap("↩️ 回复")
    assert "王总" in prompt.text
    [delivered] = await manager_chat.say("没问题，已为您预留")
    assert "已送达" in delivered.text
    answer = bot.sent_to(member_chat.chat_id)[-1]
    signed = tr._("👤 <b>Your dedicated manager {name}:</b>").format(name="张三")
    assert signed.replace("<b>", "").replace("</b>", "") in answer.text
    assert "没问题，已为您预留" in answer.text
    if locale == "zh_CN":
        assert "专属客户经理 张三：" in answer.text
    out = (await manager_messages(shop))[-1]
    assert (out.direction, out.member_id, out.text) == ("out", mid, "没问题，已为您预留")
    assert out.delivered is True

    [left] = await press_latest(bot, member_chat, tr._("🚪 Leave manager mode"))
    assert tr._("You left manager mode.") in left.text
    await member_chat.say("还在吗")  # now an ordinary message: nothing is relayed
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(ManagerMessage.id))) == 2


async def test_without_a_manager_the_staff_chat_answers(chat, bot: BotApiStub, shop: Shop) -> None:
    member_chat, mid = await vip(chat, shop, 3302, "zh_CN")
    await shop.manager.add_staff(STAFF_TG, "李四")
    staff = bot.user(STAFF_TG, "Li")
    [intro] = await member_chat.say("/manager")
    assert "客服团队" in intro.text
    await member_chat.say("在吗")
    relayed = bot.sent_to(STAFF_CHAT)[-1]
    assert "在吗" in relayed.text
    assert "王总" in relayed.text
    answer = await incoming(
        bot,
        member_chat.chat_id,
        lambda: bot.inject_reply(staff, STAFF_CHAT, "在的，请讲", relayed.message_id),
    )
    assert "专属客户经理 李四：" in answer[0].text
    assert "在的，请讲" in answer[0].text

    async def both_delivered() -> bool:
        rows = await manager_messages(shop)
        return [(r.direction, r.delivered) for r in rows] == [("in", True), ("out", True)]

    await eventually(both_delivered, "both messages recorded as delivered")
    rows = await manager_messages(shop)
    assert rows[0].relay_message_id == relayed.message_id
    assert rows[1].member_id == mid


async def test_a_blocked_member_is_recorded_as_not_delivered(
    chat, bot: BotApiStub, shop: Shop
) -> None:
    member_chat, mid = await vip(chat, shop, 3303, "zh_CN")
    manager_chat = chat(MANAGER_TG, language_code="zh-hans", first_name="张三")
    await shop.manager.assign(mid, MANAGER_TG, display_name="张三")
    await member_chat.say("/manager")
    await member_chat.say("你好")
    await manager_chat.tap("↩️ 回复")
    bot.block(member_chat.chat_id)
    [note] = await manager_chat.say("您好")
    assert "会员已屏蔽机器人" in note.text
    async with shop.db.read() as session:
        out = (
            await session.scalars(select(ManagerMessage).where(ManagerMessage.direction == "out"))
        ).one()
        unreachable = await session.scalar(select(Member.unreachable).where(Member.id == mid))
    assert out.delivered is False
    assert unreachable is True


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
async def test_silver_member_is_told_which_tier_opens_the_manager(
    chat, shop: Shop, locale: str
) -> None:
    tr = t(locale)
    member_chat, _ = await vip(chat, shop, 3304, locale, tier="silver")
    [refusal] = await member_chat.say("/manager")
    diamond = shop.ladder.tier("diamond").name(locale)
    gold = shop.ladder.tier("gold").name(locale)
    assert diamond in refusal.text
    assert gold in refusal.text
    assert "░░░░░░░░░░ 0%" in refusal.text  # no spend yet: having no violations is no progress
    assert (
        tr.ngettext("{count} level to go to {tier}.", "{count} levels to go to {tier}.", 3).format(
            count=3, tier=diamond
        )
        in refusal.text
    )
    if locale == "zh_CN":
        assert "专属客户经理为钻石会员及以上等级专享" in refusal.text
    await member_chat.say("随便说点什么")
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(ManagerMessage.id))) == 0


async def test_a_forged_reply_button_answers_nobody(chat, bot: BotApiStub, shop: Shop) -> None:
    member_chat, mid = await vip(chat, shop, 3305, "zh_CN")
    await shop.manager.assign(mid, MANAGER_TG, display_name="张三")
    chat(MANAGER_TG, language_code="zh-hans")
    await member_chat.say("/manager")
    await member_chat.say("你好")
    intruder = chat(3399, language_code="zh-hans")
    [menu] = await intruder.say("/start")
    await intruder.press(menu.message_id, "mgr:answer")
    assert intruder.answer() == bad_button(t("zh_CN"))
    await intruder.say("我是经理")
    async with shop.db.read() as session:
        assert (
            await session.scalar(
                select(func.count(ManagerMessage.id)).where(ManagerMessage.direction == "out")
            )
            == 0
        )

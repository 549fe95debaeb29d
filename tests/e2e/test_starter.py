"""The starter conversations end to end, for both adapters on both databases.

Each scenario runs the real bot (`bot.app.run`) against the Bot API stand-in and reads
the outcome back from the stand-in (what the member saw) and the database.
"""

from __future__ import annotations

import aiohttp
import pytest
from sqlalchemy import func, select

from core.clock import ManualClock
from core.config import Settings
from core.models import ConversationState, ProcessedUpdate
from core.shop import Shop
from core.uow import Database
from tests.botapi import BotApiStub
from tests.conftest import START
from tests.e2e.harness import WEBHOOK_SECRET, Chat, running_bot, settle, webhook_settings
from tests.e2e.test_membership import eventually

MENU_ZH = [
    "🛒 商城",
    "📦 我的订单",
    "💰 充值",
    "👛 余额",
    "⭐ 会员等级",
    "📅 每日签到",
    "💬 联系客服",
    "👤 专属客户经理",
    "🌐 Language 语言",
]
MENU_EN = [
    "🛒 Shop",
    "📦 My orders",
    "💰 Top up",
    "👛 Balance",
    "⭐ My level",
    "📅 Check in",
    "💬 Support",
    "👤 My manager",
    "🌐 Language 语言",
]
STALE_ZH = "该按钮已失效，请发送 /start 重新打开菜单。"


async def test_start_greets_in_chinese_and_registers(chat, shop: Shop) -> None:
    zh = chat(1001, language_code="zh-hans", first_name="小明")
    [reply] = await zh.say("/start")
    assert "小明，欢迎光临！" in reply.text
    assert [b["text"] for b in reply.buttons] == MENU_ZH
    member = await shop.members.by_telegram(1001)
    assert member is not None
    assert member.locale == "zh_CN"
    assert member.display_name == "小明"


async def test_start_greets_in_english(chat, shop: Shop) -> None:
    en = chat(1002, language_code="en", first_name="Ann")
    [reply] = await en.say("/start")
    assert "Welcome, Ann!" in reply.text
    assert [b["text"] for b in reply.buttons] == MENU_EN
    member = await shop.members.by_telegram(1002)
    assert member is not None
    assert member.locale == "en"


async def test_language_switch_is_remembered(chat, shop: Shop) -> None:
    member_chat = chat(1003, language_code="zh-hans")
    await member_chat.say("/start")
    [menu] = await member_chat.tap("🌐 Language 语言")
    assert "当前语言：简体中文" in menu.text
    [menu] = await member_chat.tap("English")
    assert member_chat.answer() == "Language set to English."
    assert "Welcome" in menu.text
    assert [b["text"] for b in menu.buttons] == MENU_EN
    member = await shop.members.by_telegram(1003)
    assert member is not None
    assert member.locale == "en"

    [reply] = await member_chat.say("/help")
    assert "/lang — Change language" in reply.text

    [reply] = await member_chat.say("/lang zh_CN")
    assert "欢迎光临" in reply.text
    member = await shop.members.by_telegram(1003)
    assert member is not None
    assert member.locale == "zh_CN"


async def test_help_lists_the_commands(chat) -> None:
    [reply] = await chat(1004).say("/help")
    assert "/start — 主菜单" in reply.text
    assert "/lang — 切换语言" in reply.text
    assert "/help — 使用帮助" in reply.text


async def test_unknown_input_gets_a_hint(chat) -> None:
    member_chat = chat(1005, language_code="en")
    [reply] = await member_chat.say("hello?")
    assert reply.text == "Please use the buttons below, or send /help to see what I can do."
    [reply] = await member_chat.say("/frobnicate now")
    assert "I don't know the command /frobnicate" in reply.text


@pytest.mark.parametrize(
    "forged",
    [
        "menu:../../x",
        "menu:" + "x" * 65,
        "menu:shop:extra",
        "lang:fr",
        "lang:-1",
        "nosuch:1",
        "",
    ],
)
async def test_forged_callback_is_refused_politely(chat, shop: Shop, forged: str) -> None:
    member_chat = chat(1006)
    [menu] = await member_chat.say("/start")
    changed = await member_chat.press(menu.message_id, forged)
    assert changed == []
    assert member_chat.answer() == STALE_ZH
    member = await shop.members.by_telegram(1006)
    assert member is not None
    assert member.locale == "zh_CN"


async def test_someone_elses_button_changes_nothing(chat, shop: Shop) -> None:
    owner = chat(1007)
    [menu] = await owner.say("/lang")
    intruder = chat(1008, language_code="zh-hans")
    changed = await intruder.press(menu.message_id, "lang:en", chat_id=owner.chat_id)
    assert changed == []
    assert intruder.answer() == STALE_ZH
    assert len(owner.api.message(owner.chat_id, menu.message_id).versions) == 0
    for user_id in (1007, 1008):
        member = await shop.members.by_telegram(user_id)
        assert member is not None
        assert member.locale == "zh_CN"


async def test_repeated_update_is_processed_once(chat, bot: BotApiStub, db: Database) -> None:
    member_chat = chat(1009)
    update = bot.inject_message(member_chat.user, "/help")
    await bot.next_sent(member_chat.chat_id)
    await settle(bot)
    assert await member_chat.send_update(update, expect_reply=False) == []
    assert len(bot.sent_to(member_chat.chat_id)) == 1
    async with db.read() as session:
        claimed = await session.scalar(
            select(func.count()).where(ProcessedUpdate.update_id == update["update_id"])
        )
    assert claimed == 1


async def test_flood_control_is_waited_out(chat, bot: BotApiStub) -> None:
    bot.fail_next("sendMessage", retry_after=1)
    [reply] = await chat(1010).say("/help")
    assert "/start" in reply.text
    statuses = [call.status for call in bot.calls_to("sendMessage")]
    assert statuses == [429, 200]


async def test_blocked_member_is_marked_unreachable(chat, bot: BotApiStub, shop: Shop) -> None:
    member_chat = chat(1011)
    await member_chat.say("/start")
    bot.block(member_chat.chat_id)
    await member_chat.say("/help", expect_reply=False)

    async def marked() -> bool:
        member = await shop.members.by_telegram(1011)
        return member is not None and member.unreachable

    # No reply can show that the 403 was handled: wait for the mark itself.
    await eventually(marked, "the blocked member marked unreachable")
    bot.unblock(member_chat.chat_id)
    await member_chat.say("/help")
    member = await shop.members.by_telegram(1011)
    assert member is not None
    assert not member.unreachable


async def test_state_survives_in_the_database(chat, db: Database) -> None:
    """A command abandons pending input: the stored state row is cleared, not kept."""
    member_chat = chat(1012)
    async with db.transaction() as session:
        session.add(
            ConversationState(key="1012:1012", state="nowhere:yet", data={"p": 1}, updated_at=START)
        )
    [reply] = await member_chat.say("3")
    assert "/help" in reply.text  # no conversation claims that state: the hint
    await member_chat.say("/start")
    async with db.read() as session:
        assert await session.get(ConversationState, "1012:1012") is None


async def test_webhook_mode(
    api: BotApiStub, bot_settings: Settings, db: Database, shop: Shop, clock: ManualClock
) -> None:
    settings = webhook_settings(bot_settings)
    url = str(settings.webhook_url)
    async with running_bot(api, settings, clock):
        member_chat = Chat(api, api.user(1013, language_code="en", first_name="Web"))
        [reply] = await member_chat.say("/start")
        assert "Welcome, Web!" in reply.text
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"update_id": 1, "message": {}}) as response:
                assert response.status == 403
            wrong = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
            async with session.post(url, json={"update_id": 2}, headers=wrong) as response:
                assert response.status == 403
    [set_webhook] = api.calls_to("setWebhook")
    assert set_webhook.params["secret_token"] == WEBHOOK_SECRET
    member = await shop.members.by_telegram(1013)
    assert member is not None

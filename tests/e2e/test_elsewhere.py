"""What Telegram sends besides text and taps: blocks, edits, stickers, groups.

Each is either answered in the member's language or dropped on purpose, on both
adapters and databases; and both adapters ask Telegram for every kind they read (the
stand-in drops the kinds a bot did not ask for, as Telegram does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiogram
import pytest
import telegram

from bot.adapters.telegram import ALLOWED_UPDATES
from bot.incoming import UPDATE_TYPES
from core.clock import ManualClock
from core.config import Settings
from core.shop import Shop
from core.uow import Database
from tests.botapi import BotApiStub
from tests.e2e.harness import Chat, running_bot, settle, webhook_settings
from tests.e2e.test_membership import member_id, t
from tests.e2e.test_support import ticket_rows

GROUP = -1_001_234_567_890
HINT = "Please use the buttons below, or send /help to see what I can do."


async def handled(api: BotApiStub, update: dict[str, Any]) -> None:
    """Wait until the bot has fetched `update` and gone quiet: it had its chance to answer."""
    update_id = update["update_id"]

    def fetched() -> bool:
        return any(
            u["update_id"] == update_id
            for call in api.calls_to("getUpdates")
            for u in call.response.get("result") or []
        )

    await api.wait_for(fetched, what=f"the bot to fetch update {update_id}")
    await settle(api)


async def reachable(shop: Shop, telegram_id: int) -> bool:
    member = await shop.members.by_telegram(telegram_id)
    assert member is not None
    return not member.unreachable


async def test_blocking_and_unblocking_flips_the_reachable_flag(
    chat: Callable[..., Chat], bot: BotApiStub, shop: Shop
) -> None:
    member = chat(5_101, language_code="en")
    await member.say("/start")
    sent = len(bot.calls_to("sendMessage"))

    await handled(bot, bot.inject_member_status(member.user, "kicked"))
    assert not await reachable(shop, member.chat_id)
    await handled(bot, bot.inject_member_status(member.user, "member"))
    assert await reachable(shop, member.chat_id)
    assert len(bot.calls_to("sendMessage")) == sent  # nothing said to a blocking chat

    stranger = bot.user(5_102)  # never talked to the shop: nothing to flag, no member made
    await handled(bot, bot.inject_member_status(stranger, "kicked"))
    assert await shop.members.by_telegram(stranger.id) is None


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
async def test_an_edit_is_answered_only_while_input_is_awaited(
    chat: Callable[..., Chat], bot: BotApiStub, locale: str
) -> None:
    tr = t(locale)
    member = chat(5_201, language_code="en" if locale == "en" else "zh-hans")
    await member.say("/ticket")
    await member.tap(tr._("Something else"))
    typed = bot.inject_message(member.user, "draft")  # read as the ticket's text
    await handled(bot, typed)
    await member.say("/start")  # no input awaited any more
    sent = bot.sent_to(member.chat_id)
    message_id = typed["message"]["message_id"]
    await handled(bot, bot.inject_edit(member.user, message_id, "a better draft"))
    assert bot.sent_to(member.chat_id) == sent  # dropped: it changes nothing answered

    await member.say("/ticket")
    await member.tap(tr._("Something else"))  # input awaited again
    [told] = await member.act(lambda: bot.inject_edit(member.user, message_id, "my code fails"))
    assert told.text == tr._(
        "I do not read edited messages. Please send it again as a new message."
    )


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
async def test_a_sticker_gets_asked_for_text_in_a_conversation_and_the_hint_outside(
    chat: Callable[..., Chat], bot: BotApiStub, shop: Shop, locale: str
) -> None:
    tr = t(locale)
    member = chat(5_301, language_code="en" if locale == "en" else "zh-hans")
    await member.say("/start")
    [hint] = await member.act(lambda: bot.inject_sticker(member.user))
    assert hint.text == tr._(HINT)

    await member.say("/ticket")
    await member.tap(tr._("Something else"))
    [asked] = await member.act(lambda: bot.inject_sticker(member.user))
    assert asked.text == tr._(
        "Please type your answer as a text message: I cannot read photos, stickers,"
        " voice messages or other media here."
    )
    await member.say("My code does not work")  # still asked: this opens the ticket
    [ticket] = await ticket_rows(shop)
    assert ticket.member_id == await member_id(shop, member.chat_id)


async def test_in_a_group_only_a_command_to_the_bot_is_answered_with_a_link(
    bot: BotApiStub, shop: Shop
) -> None:
    bot.group(GROUP, "Friends")
    user = bot.user(5_401, language_code="en")
    await handled(bot, bot.inject_message(user, "hello everyone", chat_id=GROUP))
    await handled(bot, bot.inject_sticker(user, chat_id=GROUP))
    await handled(bot, bot.inject_message(user, "/start@some_other_bot", chat_id=GROUP))
    assert bot.sent_to(GROUP) == []
    assert await shop.members.by_telegram(user.id) is None  # chatter costs no registration

    bot.inject_message(user, f"/start@{bot.bot.username}", chat_id=GROUP)
    reply = await bot.next_sent(GROUP)
    assert reply.text == t("en")._(
        "Please talk to me in a private chat: your orders and balance stay between us."
    )
    assert [b.get("url") for b in reply.buttons] == [f"https://t.me/{bot.bot.username}"]


def test_every_update_type_read_is_one_both_frameworks_know() -> None:
    assert list(UPDATE_TYPES) == ALLOWED_UPDATES
    observers = aiogram.Router().observers
    for update_type in UPDATE_TYPES:
        assert update_type in observers
        assert hasattr(telegram.Update, update_type)


async def test_polling_asks_for_every_update_type_read(
    chat: Callable[..., Chat], bot: BotApiStub
) -> None:
    await chat(5_501).say("/start")  # a long poll is recorded when it returns
    asked = {tuple(call.params.get("allowed_updates") or ()) for call in bot.calls_to("getUpdates")}
    assert asked == {tuple(UPDATE_TYPES)}


async def test_the_webhook_asks_for_every_update_type_read(
    api: BotApiStub, bot_settings: Settings, db: Database, clock: ManualClock
) -> None:
    async with running_bot(api, webhook_settings(bot_settings), clock):
        await asyncio.sleep(0)
    [set_webhook] = api.calls_to("setWebhook")
    assert set_webhook.params["allowed_updates"] == list(UPDATE_TYPES)

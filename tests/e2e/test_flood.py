"""Flood control under load: every reply that meets a 429 is sent after `retry_after`.

Two hundred members send /start at once against the stand-in's limits (about 30
messages a second across the bot, about one a second per chat). Every one of them must
get the menu, none the apology, and the bot must keep under the global limit so that
Telegram's 429s stay the exception rather than the way replies are paced.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.botapi import BotApiStub
from tests.e2e.harness import Chat, settle

MEMBERS = 200
APOLOGY = "Sorry, something went wrong"


async def test_two_hundred_starts_at_once_all_get_the_menu(
    chat: Callable[..., Chat], bot: BotApiStub
) -> None:
    members = [chat(30_000 + n, language_code="en") for n in range(MEMBERS)]
    for member in members:
        bot.inject_message(member.user, "/start")

    def everyone_answered() -> bool:
        return all(bot.sent_to(member.chat_id) for member in members)

    await bot.wait_for(everyone_answered, timeout=120, what="a menu in every chat")
    await settle(bot, timeout=30)

    for member in members:
        [reply] = bot.sent_to(member.chat_id)
        assert APOLOGY not in (reply.text or "")
        assert reply.buttons, f"chat {member.chat_id} got no menu"
    refused = [c for c in bot.calls_to("sendMessage") if c.status == 429]
    assert len(refused) < MEMBERS // 10

"""Fixtures for scenarios: the Bot API stand-in, the real bot on it, and members' chats.

Every scenario runs for both adapters (aiogram, python-telegram-bot) on both databases,
and afterwards checks that every button press got exactly one answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import SecretStr

import bot.adapters.aiogram
import bot.adapters.ptb
from core.clock import ManualClock
from core.config import Settings
from core.uow import Database
from tests.botapi import BotApiStub
from tests.e2e.harness import Chat, running_bot


@pytest.fixture(params=["aiogram", "ptb"])
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def api(clock: ManualClock) -> AsyncIterator[BotApiStub]:
    # Telegram dates its updates by the shop's clock, as it would on the day the test plays.
    async with BotApiStub(wall_clock=lambda: clock.now().timestamp()) as stub:
        yield stub


@pytest.fixture
def bot_settings(settings: Settings, api: BotApiStub, adapter: str) -> Settings:
    return settings.model_copy(
        update={
            "telegram_bot_token": SecretStr(api.token),
            "telegram_api_base": api.base_url,
            "bot_framework": adapter,
        }
    )


@pytest.fixture
async def bot(
    api: BotApiStub, bot_settings: Settings, db: Database, clock: ManualClock
) -> AsyncIterator[BotApiStub]:
    """The real bot polling the stand-in, on the test's clock (`db` first: it empties the DB)."""
    async with running_bot(api, bot_settings, clock):
        yield api


@pytest.fixture
def chat(bot: BotApiStub) -> Callable[..., Chat]:
    """`chat(user_id, language_code=...)`: a member's private chat."""
    opened: list[Chat] = []

    def open_chat(user_id: int, *, language_code: str | None = "zh-hans", **names: str) -> Chat:
        user = bot.user(user_id, language_code=language_code, **names)
        opened.append(Chat(bot, user))
        return opened[-1]

    yield open_chat
    answers = Counter(
        call.params.get("callback_query_id") for call in bot.calls_to("answerCallbackQuery")
    )
    for each in opened:
        for query in each.queries:
            assert answers[query] == 1, f"callback {query} answered {answers[query]} times"

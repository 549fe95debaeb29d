"""Risk control end to end: a member buying too fast is paused, told when to retry, and
the admins and the staff chat hear about it once (both adapters, both databases).

The bot runs on the real clock, so the seconds to wait are read from the reply, never
assumed; the shop here allows 2 orders a minute.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from core.config import Settings
from core.models import Order, RiskEvent
from core.shop import Shop
from tests.botapi import BotApiStub, StoredMessage
from tests.e2e.harness import Chat
from tests.e2e.test_shopping import LOCALES, STEAM_CODES, buyer, confirmation, count, press, seed
from tests.e2e.test_shopping import text as tr
from tests.factories import tiers_file_with

ADMIN = 9_101
STAFF_CHAT = -100_777
MAX_ORDERS = 2
RETRY = {
    "zh_CN": re.compile(r"请 (\d+) 秒后再试"),
    "en": re.compile(r"Please try again in (\d+) seconds?\."),
}


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    limits = tiers_file_with(tmp_path, max_orders=MAX_ORDERS, window_seconds=60)
    return settings.model_copy(update={"tiers_file": limits})


@pytest.fixture
def bot_settings(bot_settings: Settings, api: BotApiStub) -> Settings:
    api.limits.per_chat_burst = 100  # a member who taps faster than Telegram allows
    api.group(STAFF_CHAT, "客服群")
    return bot_settings.model_copy(update={"admin_ids": [ADMIN], "staff_chat_id": STAFF_CHAT})


def notices(api: BotApiStub, chat_id: int) -> list[StoredMessage]:
    return [m for m in api.sent_to(chat_id) if "🛡" in (m.text or "")]


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_buying_too_fast_is_paused_with_when_to_retry_and_staff_told_once(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    ids = await seed(shop)
    admin = chat(ADMIN, language_code="en", first_name="Boss")
    await admin.say("/start")
    member, member_id = await buyer(chat, shop, 2101, locale)
    pay = tr(locale, "✅ Pay {total}").split("{total}")[0]
    for _ in range(MAX_ORDERS):
        await press(member, await confirmation(member, locale, "1"), pay)
    balance = await shop.wallet.balance(member_id)

    confirm = await confirmation(member, locale, "1")
    for _ in range(2):  # the member keeps tapping: refused each time, staff told once
        assert await member.press(confirm.message_id, next_pay(confirm, pay)) == []
        alert = member.answer() or ""
        seconds = RETRY[locale].search(alert)
        assert seconds is not None, alert
        assert 1 <= int(seconds.group(1)) <= 60
        assert member.api.answered_callbacks[member.queries[-1]].show_alert

    assert await count(shop, Order, Order.member_id == member_id) == MAX_ORDERS
    assert await shop.wallet.balance(member_id) == balance
    assert await shop.stock.available(ids["steam"]) == len(STEAM_CODES) - MAX_ORDERS
    api = member.api
    await api.wait_for(lambda: notices(api, ADMIN) and notices(api, STAFF_CHAT), timeout=10)
    [to_admin] = notices(api, ADMIN)
    assert "Risk control" in (to_admin.text or "")
    assert f"{MAX_ORDERS} orders within 60 seconds" in (to_admin.text or "")
    assert str(member.user.id) in (to_admin.text or "")
    [to_staff] = notices(api, STAFF_CHAT)
    assert "风控" in (to_staff.text or "")  # the staff chat speaks the shop's default locale
    await member.press(confirm.message_id, next_pay(confirm, pay))  # a third refusal
    # Still the one trip, already told: nothing is left for a second notice.
    assert await count(shop, RiskEvent, RiskEvent.kind == "trip") == 1
    assert await count(shop, RiskEvent, RiskEvent.notified_at.is_(None)) == 0
    assert len(notices(api, ADMIN)) == len(notices(api, STAFF_CHAT)) == 1


def next_pay(message: StoredMessage, label: str) -> str:
    [data] = [b["callback_data"] for b in message.buttons if b["text"].startswith(label)]
    return str(data)

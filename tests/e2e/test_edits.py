"""The bot never sends an edit that changes nothing.

Telegram answers such an edit with 400 "message is not modified". Taps on "Pay" after
the codes arrived redraw the same "already paid" message, so the stand-in's call log
must show no 400 at all, while each tap is still answered once and the codes stay shown.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select

from core.models import Order
from core.shop import Shop
from tests.e2e.harness import Chat
from tests.e2e.test_shopping import button, buyer, codes_in, confirmation, seed

TAPS = 3


async def test_repeated_taps_on_pay_send_no_edit_that_changes_nothing(
    chat: Callable[..., Chat], shop: Shop
) -> None:
    await seed(shop)
    member, member_id = await buyer(chat, shop, 2101, "en")
    confirm = await confirmation(member, "en", "1")
    pay = button(confirm, "✅ Pay")
    for _ in range(TAPS):  # a double tap, and one more for good measure
        await member.press(confirm.message_id, pay)

    refused = [(c.method, c.description) for c in member.api.calls if c.status == 400]
    assert refused == []
    shown = member.api.message(member.chat_id, confirm.message_id)
    assert "Already paid" in (shown.text or "")
    assert len(codes_in(shown)) == 1
    async with shop.db.read() as session:
        orders = select(func.count()).select_from(Order).where(Order.member_id == member_id)
        assert await session.scalar(orders) == 1

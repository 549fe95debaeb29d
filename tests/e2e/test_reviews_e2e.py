"""Reviewing an order (评价) from the order screen, end to end on both adapters and databases:
stars, optional words or Skip, the points announced, the review shown afterwards, and a
second review or another member's order refused without a change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

import pytest
from sqlalchemy import select

from bot.i18n import Translator
from core.models import PointLot, Review
from core.shop import Shop
from tests.botapi import BotApiStub, StoredMessage
from tests.e2e.harness import Chat
from tests.e2e.test_shopping import LOCALES, buyer, confirmation, count, press, seed
from tests.e2e.test_shopping import text as tr


@pytest.fixture(autouse=True)
def quick_typist(api: BotApiStub) -> None:
    api.limits.per_chat_burst = 100  # a member who taps faster than Telegram allows


async def bought(member: Chat, shop: Shop, member_id: int, locale: str) -> int:
    """One code bought and delivered; the order's id."""
    await seed(shop)
    paid = await confirmation(member, locale, "1")
    await press(member, paid, tr(locale, "✅ Pay {total}").split("{total}")[0])
    [order] = await shop.orders.recent(member_id)
    assert order.status == "delivered"
    return order.id


async def order_screen(member: Chat, order_id: int) -> StoredMessage:
    [listing] = await member.say("/orders")
    return await press(member, listing, f"#{order_id}")


async def reviews_of(shop: Shop, order_id: int) -> list[tuple[int, str]]:
    async with shop.db.read() as session:
        rows = await session.execute(
            select(Review.rating, Review.text).where(Review.order_id == order_id)
        )
        return [(rating, words) for rating, words in rows]


def labels(message: StoredMessage) -> list[str]:
    return [b["text"] for b in message.buttons]


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_buyer_rates_a_delivered_order_with_words_once(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    member, member_id = await buyer(chat, shop, 2201, locale)
    order_id = await bought(member, shop, member_id, locale)

    detail = await order_screen(member, order_id)
    rate = tr(locale, "⭐ Rate")
    assert rate in labels(detail)
    stars = await press(member, detail, rate)
    assert [b for b in labels(stars) if set(b) == {"⭐"}] == ["⭐" * n for n in range(1, 6)]
    asked = await press(member, stars, "⭐⭐⭐⭐")
    assert tr(locale, "Skip »") in labels(asked)

    words = "发货很快，卡密可用" if locale == "zh_CN" else "Fast & <fine>"
    [shown] = await member.say(words)
    earned = shop.ladder.points.review_points
    thanks = Translator(locale, currency="CNY", zone=UTC).ngettext(
        "🎉 Thank you for your review! You earned {points} point.",
        "🎉 Thank you for your review! You earned {points} points.",
        earned,
    )
    assert thanks.format(points=earned) in (shown.text or "")
    review_line = tr(locale, "Your review: {stars} ({rating}/5)").format(stars="⭐" * 4, rating=4)
    assert review_line in (shown.text or "")
    assert words in (shown.text or "")  # escaped on the way out, read back as typed
    assert rate not in labels(shown)
    assert await reviews_of(shop, order_id) == [(4, words)]
    async with shop.db.read() as session:
        lots = list(
            await session.scalars(select(PointLot.amount).where(PointLot.source == "review"))
        )
    assert lots == [earned]

    again = await order_screen(member, order_id)
    assert review_line in (again.text or "")
    assert rate not in labels(again)
    # The old "Rate" and "Skip" buttons, tapped again: refused politely, nothing changes.
    for data in (f"orate:{order_id}:1", f"oskip:{order_id}:5:1"):
        assert await member.press(detail.message_id, data) == []
        assert member.answer() == tr(locale, "You have already reviewed this order.")
    assert await reviews_of(shop, order_id) == [(4, words)]


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_skip_words_and_forged_reviews_of_another_members_order(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    owner, owner_id = await buyer(chat, shop, 2202, locale)
    order_id = await bought(owner, shop, owner_id, locale)

    thief, _ = await buyer(chat, shop, 2203, locale)
    [menu] = await thief.say("/orders")
    for data in (f"orate:{order_id}:1", f"ostars:{order_id}:5:1", f"oskip:{order_id}:5:1"):
        assert await thief.press(menu.message_id, data) == []
        assert thief.answer() == tr(locale, "No such order."), data
    assert await thief.press(menu.message_id, f"ostars:{order_id}:9:1") == []
    assert thief.answer() == tr(locale, "Please rate from {min} to {max}.").format(min=1, max=5)
    assert await count(shop, Review) == 0

    detail = await order_screen(owner, order_id)
    stars = await press(owner, detail, tr(locale, "⭐ Rate"))
    asked = await press(owner, stars, "⭐⭐")
    done = await press(owner, asked, tr(locale, "Skip »"))
    review_line = tr(locale, "Your review: {stars} ({rating}/5)").format(stars="⭐⭐", rating=2)
    assert review_line in (done.text or "")
    assert await reviews_of(shop, order_id) == [(2, "")]
    # The words step is over: text now is not taken as a review.
    [reply] = await owner.say("more words")
    assert reply.text != tr(locale, "You have already reviewed this order.")
    assert await reviews_of(shop, order_id) == [(2, "")]

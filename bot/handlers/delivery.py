"""Handing over the codes of a paid order, wherever the payment happened.

A purchase is shown after "Pay" (in the confirmation, edited in place), after a top-up
that buys in one step (as a new message, maybe with no update to answer: the money can
land by an HTTP callback from the payment gateway), and again from "My orders". All of
them write through a `Screen`: an update's `Context` is one, and `MemberChat` is the
member's chat written to unprompted, so the codes read the same every way they arrive.
"""

from __future__ import annotations

import logging

from bot.conversation import Button, Context, Keyboard, Transport, UnreachableError, escape
from bot.handlers.level import reward_lines
from bot.handlers.start import MenuCallback, menu_button
from bot.i18n import Translator
from core.commission import CommissionCredit
from core.orders import Purchase
from core.shop import Shop

log = logging.getLogger(__name__)

#: Telegram's message limit; codes that would not fit come as one text file instead.
MESSAGE_LIMIT = 4096


class MemberChat(Translator):
    """A member's chat the bot writes to on its own (money landed by a gateway's callback,
    a scheduled job): every `reply` is a new message, as there is no tap to answer."""

    def __init__(self, shop: Shop, transport: Transport, chat_id: int, locale: str | None):
        settings = shop.settings
        super().__init__(
            locale or settings.default_locale, currency=settings.shop_currency, zone=settings.zone
        )
        self.shop = shop
        self.transport = transport
        self.chat_id = chat_id

    async def reply(self, text: str, keyboard: Keyboard | None = None) -> int:
        return await self.transport.send(self.chat_id, text, keyboard)


#: A member's chat in their language, with the shop: an update's own, or one written to.
Screen = Context | MemberChat


async def deliver(screen: Screen, purchase: Purchase) -> None:
    """The codes in one message, each in <code> so a tap copies it; then mark delivered."""
    order = purchase.order
    head = [
        screen._("✅ <b>Payment successful</b>")
        if purchase.created
        else screen._("✅ <b>Already paid</b> — here are your codes again."),
        screen._("Order #{order}: {name} × {quantity}").format(
            order=order.id,
            name=escape(order.product_name(screen.locale)),
            quantity=screen.number(order.quantity),
        ),
        screen._("Paid {total} · balance {balance}").format(
            total=screen.money(order.total), balance=screen.money(purchase.balance_after)
        ),
    ]
    ladder = screen.shop.ladder
    if purchase.new_tier is not None:
        tier = ladder.tier(purchase.new_tier).name(screen.locale)
        head.append(
            screen._("🎉 Congratulations! Your level is now {tier}.").format(tier=escape(tier))
        )
    head += reward_lines(screen, ladder, purchase.rewards)
    keyboard: Keyboard = [
        [
            Button(screen._("📦 My orders"), MenuCallback(item="orders")),
            Button(screen._("🛒 Keep shopping"), MenuCallback(item="shop")),
        ],
        [menu_button(screen)],
    ]
    await show_codes(screen, order.id, head, purchase.codes, keyboard)
    credit = await screen.shop.orders.mark_delivered(order.id)
    if credit is not None:
        await tell_referrer(screen.shop, screen.transport, credit)


async def tell_referrer(shop: Shop, transport: Transport, credit: CommissionCredit) -> None:
    """The referrer hears of a commission just credited, in their own language.

    `mark_delivered` returns a credit only from the one call that delivered the order,
    so a redelivery or a double tap tells nobody twice. The notice is best effort: the
    money is in the ledger and on the 👥 screen whatever happens here, and the buyer,
    whose codes are already shown, must not get an apology for someone else's chat.
    """
    if credit.telegram_id is None:
        return
    chat = MemberChat(shop, transport, credit.telegram_id, credit.locale)
    text = chat._(
        "💰 +{amount} commission from an order of a member you referred ({name})."
    ).format(amount=chat.money(credit.amount), name=escape(credit.buyer_name))
    keyboard = [[Button(chat._("👥 Referrals"), MenuCallback(item="referrals"))]]
    try:
        await chat.reply(text, keyboard)
    except UnreachableError:
        await shop.members.set_reachable(credit.referrer_id, False)
    except Exception:
        log.exception("could not tell member %s of commission on order %s",
                      credit.referrer_id, credit.order_id)  # fmt: skip


async def show_codes(
    screen: Screen, order_id: int, head: list[str], codes: list[str], keyboard: Keyboard
) -> None:
    """`head` and the codes in one message, each in <code> so a tap copies it.

    Codes too many for one message (Telegram's 4096 characters) come as one text file
    after the head instead, so a big batch still arrives whole.
    """
    tagged = [f"<code>{escape(code)}</code>" for code in codes]
    text = "\n".join([*head, "", screen._("Your codes (tap to copy):"), *tagged])
    if len(text) <= MESSAGE_LIMIT:
        await screen.reply(text, keyboard)
        return
    await screen.reply(
        "\n".join([*head, "", screen._("Your codes are in the file below.")]), keyboard
    )
    await screen.transport.send_document(
        screen.chat_id,
        f"order-{order_id}.txt",
        "\n".join(codes).encode(),
        caption=screen._("Codes of order #{order}").format(order=order_id),
    )

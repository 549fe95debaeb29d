"""/topup: money into the wallet by Telegram Stars or 易支付, and what happens when it lands.

The member picks an amount (a preset, or typed, within `[topup]` of tiers.toml) and then
one of the methods the shop has configured (`shop.payments.methods()`: a method whose
settings are missing is never offered). The shop records a pending top-up and hands
back what to pay: a Stars invoice, sent into the chat, or an 易支付 checkout page, shown
as a link button next to a "check status" button. Nothing is credited here: the wallet
fills only when the provider says the money arrived (`successful_payment` for Stars, the
gateway's signed notify for 易支付), exactly once per payment, and `money_landed` then
tells the member in their language, however late that is.

Buy in one step: the "balance too low" confirmation offers "pay the missing ¥X"
(`bot.handlers.buy`); its top-up carries a `BuyIntent` with the confirmation's
idempotency key and total, and the order is placed with that key, at that price, the
moment the money lands. Stock gone or a price moved by then: the money stays in the
wallet and the member is told, with the way back to the product.

The method screen is bound to a nonce, like buy's confirmation: the amount and the
intent live in the chat state, not in the buttons, so a stale or forged method button
is refused instead of starting a top-up nobody chose.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, assert_never

from bot.callbacks import BadCallbackError, Callback
from bot.conversation import (
    Button,
    Context,
    Conversation,
    Incoming,
    Keyboard,
    Transport,
    UnreachableError,
    escape,
)
from bot.errors import render_error
from bot.handlers.browse import ProductCallback
from bot.handlers.delivery import MemberChat, Screen, deliver
from bot.handlers.start import MenuCallback, menu_button
from bot.i18n import N_, Translator
from bot.payments import method_name
from core.errors import ErrorCode, ShopError
from core.ladder import TopUpRules
from core.money import MAX_FEN, parse_yuan
from core.payments import BuyIntent, Checkout, Credit, PaymentState, PaymentView
from core.shop import Shop

if TYPE_CHECKING:
    from bot.framework import Runtime

log = logging.getLogger(__name__)

conversation = Conversation("topup")

#: Waiting for an amount typed in yuan.
AMOUNT = "topup:amount"
#: The method screen is on show; its data holds the nonce, the amount and any intent.
METHOD = "topup:method"


class TopUpCallback(Callback):
    """Top up this amount (a preset, or what a short confirmation suggests): choose how.

    The amount is the member's own choice, like a typed one: it is checked against the
    limits, and the shop checks it again when the top-up starts.
    """

    prefix = "topup"
    amount: int


class MethodCallback(Callback):
    """Pay what the method screen with this nonce shows, by `method`."""

    prefix = "topupm"
    nonce: str
    method: str


class StatusCallback(Callback):
    """Where one of the member's top-ups is now (waiting, credited, expired...)."""

    prefix = "topups"
    payment: int


def out_of_range(amount: int, rules: TopUpRules) -> ShopError:
    return ShopError(
        ErrorCode.TOPUP_AMOUNT_OUT_OF_RANGE,
        amount=amount,
        min=rules.min_amount,
        max=rules.max_amount,
    )


def within(amount: int, rules: TopUpRules) -> bool:
    return rules.min_amount <= amount <= rules.max_amount


def missing_amount(missing: int, rules: TopUpRules) -> int | None:
    """What "pay the missing" tops up: the shortfall, at least the smallest top-up; None
    when one top-up cannot cover it (the member tops up twice instead)."""
    amount = max(missing, rules.min_amount)
    return amount if amount <= rules.max_amount else None


# --- amount --------------------------------------------------------------------------------


@conversation.command("topup", description=N_("Top up my balance"))
async def topup_command(ctx: Context) -> None:
    await choose_amount(ctx)


@conversation.menu("topup")
async def choose_amount(ctx: Context) -> None:
    """The balance, the presets and the limits; the member taps one or types an amount."""
    payments = ctx.shop.payments
    if not payments.methods():
        await unavailable(ctx)
        return
    rules = payments.rules
    balance = await ctx.shop.wallet.balance(ctx.member.id)
    lines = [
        ctx._("💰 <b>Top up your balance</b>"),
        ctx._("Balance: {balance}").format(balance=ctx.money(balance)),
        "",
        ctx._("Tap an amount, or send one in yuan from {min} to {max}.").format(
            min=ctx.money(rules.min_amount), max=ctx.money(rules.max_amount)
        ),
    ]
    presets = [Button(ctx.money(preset), TopUpCallback(amount=preset)) for preset in rules.presets]
    keyboard: list[list[Button]] = [presets[i : i + 2] for i in range(0, len(presets), 2)]
    keyboard.append([Button(ctx._("👛 Balance"), MenuCallback(item="balance")), menu_button(ctx)])
    ctx.state.set(AMOUNT)
    await ctx.reply("\n".join(lines), keyboard)


async def unavailable(ctx: Context) -> None:
    """No method is configured: the old way, through support, still works."""
    ctx.state.clear()
    await ctx.reply(
        ctx._("Online top-up is not available right now. Please contact support to top up."),
        [[Button(ctx._("💬 Support"), MenuCallback(item="ticket"))], [menu_button(ctx)]],
    )


@conversation.callback(TopUpCallback)
async def amount_chosen(ctx: Context, data: TopUpCallback) -> None:
    await choose_method(ctx, data.amount)


@conversation.state(AMOUNT)
async def amount_typed(ctx: Context) -> None:
    """An amount in yuan; anything else is explained, and the member can try again."""
    rules = ctx.shop.payments.rules
    try:
        amount = parse_yuan(ctx.incoming.text)
    except ShopError as refusal:
        # Past what any amount may be (the refusal names that "max") is too much, not
        # "no amount".
        amount = MAX_FEN + 1 if "max" in refusal.params else 0
    if amount <= 0:
        await ctx.reply(
            ctx._("Please send an amount in yuan, such as 100 or 12.50."), [[menu_button(ctx)]]
        )
        return
    if not within(amount, rules):
        await ctx.reply(
            render_error(out_of_range(amount, rules), ctx, ctx.shop.ladder), [[menu_button(ctx)]]
        )
        return
    await choose_method(ctx, amount)


# --- method --------------------------------------------------------------------------------


async def choose_method(
    ctx: Context, amount: int, *, intent: BuyIntent | None = None, back: Callback | None = None
) -> None:
    """The methods the shop offers for `amount`, under a fresh nonce.

    With `intent` the top-up buys too: the screen says what is bought once the money is
    in. `back` is where "« Back" goes (the amounts by default).
    """
    payments = ctx.shop.payments
    rules = payments.rules
    if not within(amount, rules):
        raise out_of_range(amount, rules)
    methods = payments.methods()
    if not methods:
        await unavailable(ctx)
        return
    lines = [ctx._("💰 <b>Top up {amount}</b>").format(amount=ctx.money(amount))]
    if intent is not None:
        offer = await ctx.shop.catalog.offer(ctx.member.id, intent.product_id)
        lines.append(
            ctx._(
                "⚡ As soon as the money arrives, your order is placed:"
                " {name} × {quantity} for {total}."
            ).format(
                name=escape(offer.product.name(ctx.locale)),
                quantity=ctx.number(intent.quantity),
                total=ctx.money(intent.expected_total),
            )
        )
    lines += ["", ctx._("How would you like to pay?")]
    nonce = secrets.token_urlsafe(6)
    keyboard: list[list[Button]] = [
        [Button(method_name(ctx, method), MethodCallback(nonce=nonce, method=method))]
        for method in methods
    ]
    keyboard.append(
        [
            Button(ctx._("« Back"), back or MenuCallback(item="topup")),
            menu_button(ctx),
        ]
    )
    await ctx.reply("\n".join(lines), keyboard)
    ctx.state.set(
        METHOD, nonce=nonce, amount=amount, intent=None if intent is None else intent.as_json()
    )


@conversation.callback(MethodCallback)
async def method_chosen(ctx: Context, data: MethodCallback) -> None:
    """Start the top-up with the shop and show how to pay it.

    The state ends here, so the same screen cannot start a second top-up; a refusal
    (today's limit reached, say) keeps it, and the member can choose again.
    """
    if ctx.state.name != METHOD or ctx.state.get("nonce") != data.nonce:
        raise BadCallbackError("no method screen with this nonce")
    if data.method not in ctx.shop.payments.methods():
        raise BadCallbackError(f"method {data.method!r} is not offered")
    amount = int(ctx.state.get("amount"))
    intent = BuyIntent.from_json(ctx.state.get("intent"))
    checkout = await ctx.shop.payments.start(ctx.member.id, amount, data.method, then_buy=intent)
    ctx.state.clear()
    if checkout.invoice is not None:
        await pay_by_stars(ctx, checkout)
    else:
        await pay_at_gateway(ctx, checkout, data.method)


def status_button(t: Translator, payment: PaymentView) -> Button:
    return Button(t._("🔄 I have paid: check status"), StatusCallback(payment=payment.id))


async def pay_by_stars(ctx: Context, checkout: Checkout) -> None:
    """What the invoice buys, then the invoice itself (Telegram's Pay button) below it."""
    invoice, payment = checkout.invoice, checkout.payment
    assert invoice is not None
    amount = ctx.money(invoice.amount)
    lines = [
        ctx.ngettext(
            "⭐ <b>Pay {stars} Star</b> with the invoice below, and {amount} is added"
            " to your balance.",
            "⭐ <b>Pay {stars} Stars</b> with the invoice below, and {amount} is added"
            " to your balance.",
            invoice.stars,
        ).format(stars=ctx.number(invoice.stars), amount=amount),
        ctx._("The invoice is valid until {time}.").format(time=ctx.datetime(payment.expires_at)),
    ]
    await ctx.reply("\n".join(lines), [[status_button(ctx, payment)], [menu_button(ctx)]])
    await ctx.transport.send_invoice(
        ctx.chat_id,
        ctx._("Top up {amount}").format(amount=amount),
        ctx.ngettext(
            "{amount} added to your shop balance, for {stars} Telegram Star.",
            "{amount} added to your shop balance, for {stars} Telegram Stars.",
            invoice.stars,
        ).format(amount=amount, stars=ctx.number(invoice.stars)),
        invoice.payload,
        invoice.stars,
    )


async def pay_at_gateway(ctx: Context, checkout: Checkout, method: str) -> None:
    """A link to the gateway's checkout page, and a button to ask where the payment is."""
    payment = checkout.payment
    assert checkout.url is not None
    amount = ctx.money(payment.amount)
    lines = [
        ctx._("💳 <b>Pay {amount} with {method}</b>").format(
            amount=amount, method=method_name(ctx, method)
        ),
        ctx._("Tap the button below to open the payment page. It is valid until {time}.").format(
            time=ctx.datetime(payment.expires_at)
        ),
        ctx._("We will tell you here the moment the money arrives."),
    ]
    keyboard: Keyboard = [
        [Button(ctx._("💳 Pay {amount}").format(amount=amount), url=checkout.url)],
        [status_button(ctx, payment)],
        [menu_button(ctx)],
    ]
    await ctx.reply("\n".join(lines), keyboard)


# --- status --------------------------------------------------------------------------------


@conversation.callback(StatusCallback)
async def check_status(ctx: Context, data: StatusCallback) -> None:
    """The top-up's state; the shop answers for the member's own top-ups only.

    While it is still pending the screen (with its link to pay) stays as it is and the
    answer comes as an alert; a settled top-up replaces it with the outcome.
    """
    payment = await ctx.shop.payments.status(ctx.member.id, data.payment)
    amount = ctx.money(payment.amount)
    again = [[Button(ctx._("💰 Top up"), MenuCallback(item="topup"))], [menu_button(ctx)]]
    match payment.state:
        case PaymentState.PENDING:
            await ctx.answer(
                ctx._(
                    "⏳ Not received yet. If you have just paid, it can take a minute:"
                    " please check again soon. This top-up is valid until {time}."
                ).format(time=ctx.datetime(payment.expires_at)),
                alert=True,
            )
        case PaymentState.CREDITED:
            await ctx.reply(
                ctx._("✅ {amount} was added to your balance.").format(amount=amount),
                [
                    [
                        Button(ctx._("🛒 Shop"), MenuCallback(item="shop")),
                        Button(ctx._("👛 Balance"), MenuCallback(item="balance")),
                    ],
                    [menu_button(ctx)],
                ],
            )
        case PaymentState.EXPIRED:
            await ctx.reply(
                ctx._(
                    "⌛ This top-up of {amount} expired unpaid, so nothing was charged."
                    " Start a new one if you still want to top up."
                ).format(amount=amount),
                again,
            )
        case PaymentState.PAID:
            await ctx.reply(
                ctx._(
                    "Your payment of {amount} has arrived, but our staff need to check it"
                    " before it is added to your balance. Support will help you."
                ).format(amount=amount),
                [[Button(ctx._("💬 Support"), MenuCallback(item="ticket"))], [menu_button(ctx)]],
            )
        case PaymentState.REFUNDING | PaymentState.REFUNDED:
            await ctx.reply(
                ctx._("↩️ This top-up of {amount} was refunded.").format(amount=amount), again
            )
        case _:
            assert_never(payment.state)


# --- the money lands -----------------------------------------------------------------------


def charge_of(incoming: Incoming) -> tuple[str, int, str]:
    """Currency, amount and charge id: on every paid or refunded message (`bot.incoming`)."""
    currency, total, charge_id = incoming.currency, incoming.total_amount, incoming.charge_id
    if currency is None or total is None or charge_id is None:
        raise ValueError(f"a {incoming.kind} message without its payment")
    return currency, total, charge_id


def screen_for(ctx: Context, telegram_id: int, locale: str | None) -> Screen:
    """The chat to tell a payment's member in: this one when it is theirs, else their own
    private chat (an invoice forwarded to a group is paid there, but the balance is private)."""
    if ctx.chat_id == telegram_id:
        return ctx
    return MemberChat(ctx.shop, ctx.transport, telegram_id, locale)


@conversation.payment("paid")
async def stars_paid(ctx: Context) -> None:
    """Telegram's `successful_payment`: credit it (once per charge id), then say so.

    A payload naming no top-up is refused by the shop (logged there: money taken,
    nothing credited) and the payer gets the refusal; a replay says nothing.
    """
    currency, total, charge_id = charge_of(ctx.incoming)
    credit = await ctx.shop.payments.credit_stars(
        ctx.incoming.user_id, ctx.incoming.invoice_payload or "", currency, total, charge_id
    )
    if credit.created and credit.telegram_id is not None:
        await tell_landed(screen_for(ctx, credit.telegram_id, credit.locale), credit)


@conversation.payment("refunded")
async def stars_refunded(ctx: Context) -> None:
    """Telegram's `refunded_payment`: a Stars payment given back; its money leaves the wallet."""
    _, _, charge_id = charge_of(ctx.incoming)
    payment = await ctx.shop.payments.refunded_by_provider("stars", charge_id)
    if payment is None:
        log.warning("refund of an unknown Stars charge %r", charge_id)
        return
    member = await ctx.shop.members.get(payment.member_id)
    if member.telegram_id is None:
        return
    screen = screen_for(ctx, member.telegram_id, member.locale)
    balance = await ctx.shop.wallet.balance(member.id)
    await screen.reply(
        screen._(
            "↩️ Your top-up of {amount} by Telegram Stars was refunded, so it has left"
            " your balance. Balance: {balance}"
        ).format(amount=screen.money(payment.amount), balance=screen.money(balance)),
        [[Button(screen._("👛 Balance"), MenuCallback(item="balance"))], [menu_button(screen)]],
    )


async def tell_landed(screen: Screen, credit: Credit) -> None:
    """Tell the member their money is in (before → after); buy what it was meant to buy.

    A replayed credit (`created` False) was told the first time and says nothing. The
    order is placed with the intent's key and the total the member confirmed, so a
    retry can never buy twice nor at another price; a refusal leaves the money where
    it now is, in the wallet, and says why.
    """
    if not credit.created:
        return
    payment = credit.payment
    lines = [
        screen._("✅ <b>{amount} added to your balance</b>").format(
            amount=screen.money(payment.amount)
        ),
        screen._("Balance: {balance} → {after}").format(
            balance=screen.money(credit.balance_before), after=screen.money(credit.balance_after)
        ),
    ]
    intent = payment.then_buy
    if intent is None:
        await screen.reply(
            "\n".join(lines),
            [
                [
                    Button(screen._("🛒 Shop"), MenuCallback(item="shop")),
                    Button(screen._("👛 Balance"), MenuCallback(item="balance")),
                ],
                [menu_button(screen)],
            ],
        )
        return
    shop = screen.shop
    try:
        purchase = await shop.orders.place(
            payment.member_id,
            intent.product_id,
            intent.quantity,
            idempotency_key=intent.idempotency_key,
            use_points=intent.use_points,
            expected_total=intent.expected_total,
        )
    except ShopError as refusal:
        lines += [
            "",
            screen._("⚠️ Your order could not be placed: {reason}").format(
                reason=render_error(refusal, screen, shop.ladder)
            ),
            screen._("The money stays in your balance, ready for your next order."),
        ]
        back = ProductCallback(product=intent.product_id)
        await screen.reply(
            "\n".join(lines),
            [[Button(screen._("« Back to the product"), back)], [menu_button(screen)]],
        )
        return
    await screen.reply("\n".join(lines))
    await deliver(screen, purchase)


async def tell(shop: Shop, transport: Transport, credit: Credit) -> None:
    """`tell_landed` in the member's own chat, written to unprompted."""
    if not credit.created or credit.telegram_id is None:
        return
    chat = MemberChat(shop, transport, credit.telegram_id, credit.locale)
    try:
        await tell_landed(chat, credit)
    except UnreachableError:
        await shop.members.set_reachable(credit.payment.member_id, False)


async def money_landed(runtime: Runtime, transport: Transport, credit: Credit) -> None:
    """Money arrived outside any update (the gateway's notify): tell the member and buy.

    It waits for the member's chat like an update does, so its messages and order do
    not cut into a step the member is taking. The money is in the wallet whatever
    happens here: a failure to tell is logged, never raised to the gateway.
    """
    if not credit.created or credit.telegram_id is None:
        return
    try:
        async with runtime.locks.hold(credit.telegram_id):
            await tell(runtime.shop, transport, credit)
    except Exception:
        log.exception("could not tell member of payment %s", credit.payment.reference)

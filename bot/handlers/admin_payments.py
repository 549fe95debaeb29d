"""Admin: the wallet top-ups members paid, and giving a Stars payment back.

The list shows the newest payments with their method, amount and state, filtered by
state (`paid` ones are money that came but could not be credited: their note says why).
A Stars payment still credited can be refunded after a confirmation: the shop takes the
amount back out of the wallet first, refused when the wallet no longer holds it, then
asks Telegram to return the Stars, and puts the money back if Telegram refuses
(`Payments.refund`, audited there). Buttons name a payment by its reference, so one
screen reads one row.
"""

from __future__ import annotations

from typing import Literal

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.handlers.admin import actor, admins_only, home_button, section
from bot.payments import method_name, refund_refusal, star_refunder, state_name
from core.errors import ErrorCode, ShopError
from core.payments import STARS, PaymentState, PaymentView

conversation = Conversation("admin_payments", button_guard=admins_only)

#: Payments listed at once, newest first.
LISTED = 10
#: What the list shows: every payment, or those in one state.
Filter = Literal["all", "pending", "paid", "credited", "refunding", "refunded", "expired"]
FILTER_ROWS: tuple[tuple[Filter, ...], ...] = (
    ("all", "pending", "credited"),
    ("paid", "refunded", "expired"),
)


class PaymentsCallback(Callback):
    """The list, filtered."""

    prefix = "admpay"
    shown: Filter


class PaymentCallback(Callback):
    """One payment: its card, the refund's confirmation, or the refund itself."""

    prefix = "admpy"
    reference: str
    action: Literal["view", "refund", "confirm"]
    shown: Filter


def filter_label(ctx: Context, shown: Filter) -> str:
    return ctx._("All") if shown == "all" else state_name(ctx, PaymentState(shown))


def charge(ctx: Context, payment: PaymentView) -> str:
    """What the member paid: Stars, or yuan at the gateway."""
    if payment.provider == STARS:
        return ctx.ngettext("{count} Star", "{count} Stars", payment.charge_amount).format(
            count=ctx.number(payment.charge_amount)
        )
    return ctx.money(payment.charge_amount)


def line(ctx: Context, payment: PaymentView) -> str:
    return " · ".join(
        (
            f"#{payment.id}",
            method_name(ctx, payment.method),
            ctx.money(payment.amount),
            state_name(ctx, payment.state),
            ctx._("member #{id}").format(id=payment.member_id),
            ctx.datetime(payment.created_at),
        )
    )


async def show_list(ctx: Context, shown: Filter) -> None:
    state = None if shown == "all" else PaymentState(shown)
    payments = await ctx.shop.payments.recent(limit=LISTED, state=state)
    title = ctx._("💳 Payments")
    lines = [f"<b>{title}</b> · {filter_label(ctx, shown)}"]
    lines += [line(ctx, payment) for payment in payments] or [ctx._("none")]
    filters = [
        [
            Button(
                ("· " if each == shown else "") + filter_label(ctx, each),
                PaymentsCallback(shown=each),
            )
            for each in row
        ]
        for row in FILTER_ROWS
    ]
    opens = [
        Button(
            f"#{payment.id}",
            PaymentCallback(reference=payment.reference, action="view", shown=shown),
        )
        for payment in payments
    ]
    rows = [opens[i : i + 5] for i in range(0, len(opens), 5)]
    await ctx.reply("\n".join(lines), [*filters, *rows, [home_button(ctx)]])


def refundable(payment: PaymentView) -> bool:
    return payment.provider == STARS and payment.state is PaymentState.CREDITED


async def card_text(ctx: Context, payment: PaymentView) -> str:
    member = await ctx.shop.members.get(payment.member_id)
    name = escape(member.display_name) or ctx._("(no name)")
    if member.username:
        name += " @" + escape(member.username)
    lines = [
        ctx._("💳 <b>Payment #{id}</b> · <code>{reference}</code>").format(
            id=payment.id, reference=payment.reference
        ),
        ctx._("Member: {name} · Telegram id <code>{telegram_id}</code> · #{id}").format(
            name=name, telegram_id=member.telegram_id, id=member.id
        ),
        ctx._("{method}: {charge} for {amount}").format(
            method=method_name(ctx, payment.method),
            charge=charge(ctx, payment),
            amount=ctx.money(payment.amount),
        ),
        ctx._("State: {state}").format(state=state_name(ctx, payment.state)),
        ctx._("Started {time}").format(time=ctx.datetime(payment.created_at)),
    ]
    for label, moment in (
        (ctx._("Paid {time}"), payment.paid_at),
        (ctx._("Credited {time}"), payment.credited_at),
        (ctx._("Refunded {time}"), payment.refunded_at),
    ):
        if moment is not None:
            lines.append(label.format(time=ctx.datetime(moment)))
    if payment.provider_charge_id:
        lines.append(
            ctx._("Charge id: <code>{charge_id}</code>").format(
                charge_id=escape(payment.provider_charge_id)
            )
        )
    if payment.note:
        lines.append(ctx._("Note: {note}").format(note=escape(payment.note)))
    return "\n".join(lines)


async def show_card(
    ctx: Context, payment: PaymentView, shown: Filter, notice: str | None = None
) -> None:
    text = await card_text(ctx, payment)
    if notice:
        text = f"{notice}\n\n{text}"
    rows: list[list[Button]] = []
    if refundable(payment):
        rows.append(
            [
                Button(
                    ctx._("↩ Refund"),
                    PaymentCallback(reference=payment.reference, action="refund", shown=shown),
                )
            ]
        )
    await ctx.reply(text, [*rows, *back(ctx, shown)])


def back(ctx: Context, shown: Filter) -> Keyboard:
    return [[Button(ctx._("« Payments"), PaymentsCallback(shown=shown))], [home_button(ctx)]]


@section("payments")
async def payments_section(ctx: Context) -> None:
    await show_list(ctx, "all")


@conversation.callback(PaymentsCallback)
async def list_payments(ctx: Context, data: PaymentsCallback) -> None:
    await show_list(ctx, data.shown)


@conversation.callback(PaymentCallback)
async def payment_action(ctx: Context, data: PaymentCallback) -> None:
    payment = await ctx.shop.payments.get(data.reference)
    if payment is None:
        raise ShopError(ErrorCode.PAYMENT_NOT_FOUND, payment=data.reference)
    match data.action:
        case "view":
            await show_card(ctx, payment, data.shown)
        case "refund":
            await confirm_refund(ctx, payment, data.shown)
        case "confirm":
            await refund(ctx, payment, data.shown)


async def confirm_refund(ctx: Context, payment: PaymentView, shown: Filter) -> None:
    if not refundable(payment):
        await show_card(ctx, payment, shown)
        return
    member = await ctx.shop.members.get(payment.member_id)
    text = ctx._(
        "↩ Refund payment #{id}? {amount} leaves the member's wallet (balance now {balance}),"
        " then Telegram gives them back {charge}."
    ).format(
        id=payment.id,
        amount=ctx.money(payment.amount),
        balance=ctx.money(member.balance),
        charge=charge(ctx, payment),
    )
    keyboard = [
        [
            Button(
                ctx._("✅ Yes, refund"),
                PaymentCallback(reference=payment.reference, action="confirm", shown=shown),
            )
        ],
        [
            Button(
                ctx._("« Back"),
                PaymentCallback(reference=payment.reference, action="view", shown=shown),
            )
        ],
    ]
    await ctx.reply(text, keyboard)


async def refund(ctx: Context, payment: PaymentView, shown: Filter) -> None:
    """Refund, then show the payment as it is now, with what happened on top."""
    try:
        refunded = await ctx.shop.payments.refund(
            actor(ctx), payment.id, star_refunder(ctx.shop, ctx.transport)
        )
    except ShopError as error:
        notice = refund_refusal(ctx, error)
        if notice is None:
            raise
        current = await ctx.shop.payments.get(payment.reference)
        await show_card(ctx, current or payment, shown, notice)
        return
    notice = ctx._("✅ Refunded: {amount} taken from the wallet, {charge} given back.").format(
        amount=ctx.money(refunded.amount), charge=charge(ctx, refunded)
    )
    await show_card(ctx, refunded, shown, notice)

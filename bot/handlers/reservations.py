"""Stock reservation in chat (库存预留): from a product, hold codes for the shop's period;
/reservations lists the member's holds, each with a button to give it back early.

Reserving moves no money (the codes are paid for when bought, at that day's price), so
the confirmation needs no nonce: a double tap on "Reserve" asks for the same codes
again, which the tier's cap or the stock refuses like any second request.
"""

from __future__ import annotations

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, escape
from bot.errors import render_error
from bot.handlers.browse import ProductCallback, typed_quantity
from bot.handlers.start import menu_button
from bot.i18n import N_
from core.errors import ErrorCode, ShopError
from core.reservations import ReservationView

conversation = Conversation("reservations")

#: The quantities offered as buttons, as far as the tier's cap allows.
QUICK_QUANTITIES = (1, 5, 10, 50, 100)
#: Typing how many codes to reserve (any other number than the buttons').
RESERVE_QUANTITY = "reservations:quantity"


class ReserveCallback(Callback):
    """Reserve codes of a product: the quantity choice (0), or the confirmation."""

    prefix = "rsv"
    product: int
    quantity: int = 0
    page: int = 1


class ReserveConfirmCallback(Callback):
    prefix = "rsvok"
    product: int
    quantity: int
    page: int = 1


class ReleaseCallback(Callback):
    prefix = "rsvrel"
    reservation: int


def reserve_button(ctx: Context, product_id: int, page: int) -> Button | None:
    """The product screen's "Reserve" button, for members whose tier may reserve."""
    caps = ctx.shop.ladder.tier(ctx.member.tier_key).capabilities
    if not caps.reservation or caps.reservation_max == 0:
        return None
    return Button(ctx._("📌 Reserve"), ReserveCallback(product=product_id, page=page))


@conversation.callback(ReserveCallback)
async def choose(ctx: Context, data: ReserveCallback) -> None:
    back = [Button(ctx._("« Back"), ProductCallback(product=data.product, page=data.page))]
    product = await ctx.shop.catalog.product(data.product)
    name = escape(product.name(ctx.locale))
    hours = ctx.shop.ladder.reservation.hours
    if data.quantity == 0:
        cap = ctx.shop.ladder.tier(ctx.member.tier_key).capabilities.reservation_max
        quick = [
            Button(ctx.number(n), ReserveCallback(product=data.product, quantity=n, page=data.page))
            for n in QUICK_QUANTITIES
            if n <= min(cap, product.stock)
        ]
        text = ctx._(
            "📌 Reserve codes of <b>{name}</b> for {hours} h: nobody else can buy them"
            " meanwhile, and your purchases take them first at the price of the day."
            " In stock: {stock}. How many? Tap a number or send one."
        ).format(name=name, hours=ctx.number(hours), stock=ctx.number(product.stock))
        ctx.state.set(RESERVE_QUANTITY, product=data.product, page=data.page)
        await ctx.reply(text, [quick, back] if quick else [back])
        return
    ctx.state.clear()
    text = ctx.ngettext(
        "Reserve {count} code of <b>{name}</b> for {hours} h?",
        "Reserve {count} codes of <b>{name}</b> for {hours} h?",
        data.quantity,
    ).format(count=ctx.number(data.quantity), name=name, hours=ctx.number(hours))
    confirm = ReserveConfirmCallback(product=data.product, quantity=data.quantity, page=data.page)
    await ctx.reply(text, [[Button(ctx._("✅ Reserve"), confirm)], back])


@conversation.state(RESERVE_QUANTITY)
async def quantity_typed(ctx: Context) -> None:
    """A typed quantity, confirmed like a tapped one (the shop's cap and stock decide)."""
    quantity = typed_quantity(ctx.incoming.text)
    if quantity == 0:
        product = await ctx.shop.catalog.product(int(ctx.state.get("product")))
        cap = ctx.shop.ladder.tier(ctx.member.tier_key).capabilities.reservation_max
        raise ShopError(ErrorCode.QUANTITY_OUT_OF_RANGE, min=1, max=cap, sku=product.sku)
    if quantity is None:
        await ctx.reply(
            ctx._("Please send how many codes to reserve as a whole number, for example 5."),
            [[menu_button(ctx)]],
        )
        return
    asked = ReserveCallback(
        product=int(ctx.state.get("product")),
        quantity=quantity,
        page=int(ctx.state.get("page", 1)),
    )
    await choose(ctx, asked)


@conversation.callback(ReserveConfirmCallback)
async def reserve(ctx: Context, data: ReserveConfirmCallback) -> None:
    back = [Button(ctx._("« Back"), ProductCallback(product=data.product, page=data.page))]
    try:
        hold = await ctx.shop.reservations.reserve(ctx.member.id, data.product, data.quantity)
    except ShopError as refusal:
        await ctx.reply(render_error(refusal, ctx, ctx.shop.ladder), [back])
        return
    text = ctx.ngettext(
        "📌 Reserved: you hold {count} code of <b>{name}</b> until {time}.",
        "📌 Reserved: you hold {count} codes of <b>{name}</b> until {time}.",
        hold.remaining,
    ).format(
        count=ctx.number(hold.remaining),
        name=escape(hold.product_name(ctx.locale)),
        time=ctx.datetime(hold.expires_at),
    )
    mine = [Button(ctx._("📌 My reservations"), ReleaseCallback(reservation=0))]
    await ctx.reply(text, [mine, back])


@conversation.command("reservations", description=N_("My reservations"))
async def reservations_command(ctx: Context) -> None:
    await show_mine(ctx)


@conversation.callback(ReleaseCallback)
async def release(ctx: Context, data: ReleaseCallback) -> None:
    """Give a hold back (reservation 0 only shows the list)."""
    notice = None
    if data.reservation:
        try:
            released = await ctx.shop.reservations.release(ctx.member.id, data.reservation)
        except ShopError as refusal:
            notice = render_error(refusal, ctx, ctx.shop.ladder)
        else:
            notice = ctx.ngettext(
                "Released: {count} code is back on sale.",
                "Released: {count} codes are back on sale.",
                released,
            ).format(count=ctx.number(released))
    await show_mine(ctx, notice=notice)


def _line(ctx: Context, hold: ReservationView) -> str:
    return ctx._("#{id} <b>{name}</b>: {remaining} of {quantity} left, until {time}").format(
        id=hold.id,
        name=escape(hold.product_name(ctx.locale)),
        remaining=ctx.number(hold.remaining),
        quantity=ctx.number(hold.quantity),
        time=ctx.datetime(hold.expires_at),
    )


async def show_mine(ctx: Context, *, notice: str | None = None) -> None:
    holds = await ctx.shop.reservations.mine(ctx.member.id)
    lines = [notice, ""] if notice else []
    if not holds:
        lines.append(ctx._("You have no reservations."))
    else:
        lines.append(ctx._("📌 Your reservations:"))
        lines += [_line(ctx, hold) for hold in holds]
    keyboard = [
        [Button(ctx._("Release #{id}").format(id=hold.id), ReleaseCallback(reservation=hold.id))]
        for hold in holds
    ]
    keyboard.append([menu_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)

"""Buying: a product → how many → the confirmation with the shop's quote → pay → the codes.

Money moves only on "Pay", and only once per confirmation: each confirmation drawn gets
a fresh nonce, carried by its buttons and kept in the chat state together with the
idempotency key `chat:message:nonce`. A double tap or a redelivered update presents the
same key, and the shop hands back the first order instead of charging again; a button
from an older confirmation (or a forged one) no longer matches and is refused. The
price shown is what the shop charges: `place` gets `expected_total` and refuses when
the price moved, and the confirmation is drawn again at the new price to confirm.
"""

from __future__ import annotations

import secrets
from typing import Any

from bot.callbacks import BadCallbackError, Callback
from bot.conversation import Button, Context, Conversation, escape
from bot.errors import render_error
from bot.handlers.browse import (
    ProductCallback,
    ShopCallback,
    locked_until,
    price_text,
    typed_quantity,
)
from bot.handlers.delivery import deliver
from bot.handlers.reservations import reserve_button
from bot.handlers.start import MenuCallback, menu_button
from bot.handlers.topup import TopUpCallback, choose_method, missing_amount
from core.catalog import Offer, ProductView
from core.errors import ErrorCode, ShopError
from core.payments import BuyIntent
from core.pricing import Quote

conversation = Conversation("buy")

#: Typing a quantity for the product in the state data.
QUANTITY = "buy:quantity"
#: A confirmation is on screen; its data holds what "Pay" will buy and with which key.
CONFIRM = "buy:confirm"
#: The quantities offered as buttons, as far as the tier's batch limit and stock allow.
QUICK_QUANTITIES = (1, 2, 5, 10)


class QuantityCallback(Callback):
    prefix = "buyq"
    product: int
    quantity: int
    page: int = 1


class PointsCallback(Callback):
    """Use (or stop using) points on the confirmation with this nonce."""

    prefix = "buypts"
    nonce: str
    use: bool


class PayCallback(Callback):
    prefix = "buypay"
    nonce: str


class PayMissingCallback(Callback):
    """Top up what the confirmation with this nonce is short, and buy it once it lands."""

    prefix = "buytop"
    nonce: str


def in_stock(ctx: Context, offer: Offer) -> str:
    """The stock this member can buy, and how much of it they hold under a reservation."""
    stock = ctx._("In stock: {stock}").format(stock=ctx.number(offer.product.stock))
    if not offer.held:
        return stock
    return ctx._("{stock} ({held} reserved for you)").format(
        stock=stock, held=ctx.number(offer.held)
    )


@conversation.callback(ProductCallback)
async def open_product(ctx: Context, data: ProductCallback) -> None:
    await show_product(ctx, data.product, data.page)


async def show_product(
    ctx: Context, product_id: int, page: int, *, notice: str | None = None
) -> None:
    """The product with the member's price and the quantity choice (or why they cannot buy)."""
    shown = await ctx.shop.catalog.offer(ctx.member.id, product_id)
    product = shown.product
    lines = [notice, ""] if notice else []
    lines.append(f"<b>{escape(product.name(ctx.locale))}</b>")
    description = product.description(ctx.locale)
    if description:
        lines.append(escape(description))
    lines.append("")
    back = [
        Button(ctx._("« Back"), ShopCallback(category=product.category_id, page=page)),
        menu_button(ctx),
    ]
    if shown.locked:
        lines += [
            ctx._("Price: {price}").format(price=price_text(ctx, shown)),
            ctx._("🔒 Available from {tier} up.").format(tier=escape(locked_until(ctx, shown))),
            ctx._("See ⭐ My level for what is left to get there."),
        ]
        ctx.state.clear()
        await ctx.reply(
            "\n".join(lines), [[Button(ctx._("⭐ My level"), MenuCallback(item="level"))], back]
        )
        return
    if shown.sold_out:
        lines += [
            ctx._("Price: {price}").format(price=price_text(ctx, shown)),
            ctx._("Sold out for now. Please check back later."),
        ]
        ctx.state.clear()
        await ctx.reply("\n".join(lines), [back])
        return
    quote = shown.quoted()  # raises a refusal the card has no words for (a withdrawn product)
    tier = ctx.shop.ladder.tier(quote.tier_key).name(ctx.locale)
    lines += [
        ctx._("Your price ({tier}): {price}").format(
            tier=escape(tier), price=price_text(ctx, shown)
        ),
        in_stock(ctx, shown),
        ctx._("Up to {max} per order.").format(max=ctx.number(quote.max_quantity)),
        "",
        ctx._("How many would you like? Tap a number or send one."),
    ]
    quick = [
        Button(
            ctx.number(quantity), QuantityCallback(product=product.id, quantity=quantity, page=page)
        )
        for quantity in QUICK_QUANTITIES
        if quantity <= quote.max_quantity
    ]
    ctx.state.set(QUANTITY, product=product.id, page=page)
    keyboard = [quick]
    reserve = reserve_button(ctx, product.id, page)
    if reserve is not None:
        keyboard.append([reserve])
    await ctx.reply("\n".join(lines), [*keyboard, back])


@conversation.callback(QuantityCallback)
async def quantity_chosen(ctx: Context, data: QuantityCallback) -> None:
    await confirm(ctx, data.product, data.quantity, data.page, use_points=False)


@conversation.state(QUANTITY)
async def quantity_typed(ctx: Context) -> None:
    quantity = typed_quantity(ctx.incoming.text)
    if quantity is None:
        await ctx.reply(
            ctx._("Please send the quantity as a whole number, for example 2."),
            [[menu_button(ctx)]],
        )
        return
    await confirm(
        ctx,
        int(ctx.state.get("product")),
        quantity,
        int(ctx.state.get("page", 1)),
        use_points=False,
    )


async def confirm(
    ctx: Context,
    product_id: int,
    quantity: int,
    page: int,
    *,
    use_points: bool,
    notice: str | None = None,
) -> None:
    """Draw the breakdown with a fresh nonce; the shop's quote refuses a bad quantity."""
    shown = await ctx.shop.catalog.offer(ctx.member.id, product_id, quantity, use_points=use_points)
    product, quote = shown.product, shown.quoted()
    nonce = secrets.token_urlsafe(6)
    lines = [notice, ""] if notice else []
    lines += breakdown(ctx, product, quote)
    keyboard: list[list[Button]] = []
    if quote.affordable:
        lines += ["", ctx._("Pay from your balance?")]
        keyboard.append(
            [
                Button(
                    ctx._("✅ Pay {total}").format(total=ctx.money(quote.total)),
                    PayCallback(nonce=nonce),
                )
            ]
        )
    elif ctx.shop.payments.methods():
        lines += [
            "",
            ctx._("⚠️ Your balance is {missing} short.").format(
                missing=ctx.money(-quote.balance_after)
            ),
        ]
        keyboard += top_up_buttons(ctx, -quote.balance_after, nonce)
    else:
        lines += [
            "",
            ctx._(
                "⚠️ Your balance is {missing} short. Please top up first: contact support."
            ).format(missing=ctx.money(-quote.balance_after)),
        ]
        keyboard.append([Button(ctx._("💬 Top up via support"), MenuCallback(item="ticket"))])
    if use_points:
        keyboard.append([Button(ctx._("Don't use points"), PointsCallback(nonce=nonce, use=False))])
    elif shown.points > 0:
        label = ctx._("🎁 Use points ({points} available)").format(points=ctx.number(shown.points))
        keyboard.append([Button(label, PointsCallback(nonce=nonce, use=True))])
    keyboard.append(
        [Button(ctx._("« Back"), ProductCallback(product=product_id, page=page)), menu_button(ctx)]
    )
    message_id = await ctx.reply("\n".join(lines), keyboard)
    ctx.state.set(
        CONFIRM,
        product=product_id,
        quantity=quote.quantity,
        page=page,
        use_points=use_points,
        total=quote.total,
        nonce=nonce,
        key=f"{ctx.chat_id}:{message_id}:{nonce}",
    )


def top_up_buttons(ctx: Context, missing: int, nonce: str) -> list[list[Button]]:
    """ "💰 Top up ¥X" (the shortfall rounded up to a preset) and, when one top-up can
    cover it, "⚡ Pay the missing ¥Y", which tops up and buys this confirmation."""
    rules = ctx.shop.payments.rules
    suggested = rules.preset_for(missing)
    buttons = [
        [
            Button(
                ctx._("💰 Top up {amount}").format(amount=ctx.money(suggested)),
                TopUpCallback(amount=suggested),
            )
        ]
    ]
    exact = missing_amount(missing, rules)
    if exact is not None:
        label = ctx._("⚡ Pay the missing {amount}").format(amount=ctx.money(exact))
        buttons.append([Button(label, PayMissingCallback(nonce=nonce))])
    return buttons


def breakdown(ctx: Context, product: ProductView, quote: Quote) -> list[str]:
    tier = ctx.shop.ladder.tier(quote.tier_key).name(ctx.locale)
    lines = [
        ctx._("🧾 <b>Confirm your order</b>"),
        f"{escape(product.name(ctx.locale))} × {ctx.number(quote.quantity)}",
        ctx._("Price: {amount}").format(amount=ctx.money(quote.base_total)),
    ]
    if quote.discount:
        lines.append(
            ctx._("{tier} discount: −{amount}").format(
                tier=escape(tier), amount=ctx.money(quote.discount)
            )
        )
    # Each unit is priced (and rounded) on its own, so the total is exactly units × price.
    lines.append(
        ctx._("Unit price {unit} × {quantity} = {subtotal}").format(
            unit=ctx.money(quote.unit_price),
            quantity=ctx.number(quote.quantity),
            subtotal=ctx.money(quote.subtotal),
        )
    )
    if quote.points_used:
        lines.append(
            ctx.ngettext(
                "Points: −{amount} ({points} point)",
                "Points: −{amount} ({points} points)",
                quote.points_used,
            ).format(amount=ctx.money(quote.points_value), points=ctx.number(quote.points_used))
        )
    lines.append(ctx._("<b>To pay: {amount}</b>").format(amount=ctx.money(quote.total)))
    if quote.affordable:
        lines.append(
            ctx._("Balance: {balance} → {after}").format(
                balance=ctx.money(quote.balance), after=ctx.money(quote.balance_after)
            )
        )
    else:
        # No arrow to ¥0.00: nothing is charged, and the member needs the shortfall.
        lines.append(ctx._("Balance: {balance}").format(balance=ctx.money(quote.balance)))
    return lines


def confirmation(ctx: Context, nonce: str) -> dict[str, Any]:
    """The confirmation this button belongs to, or a refusal for a stale or forged one."""
    if ctx.state.name != CONFIRM or ctx.state.get("nonce") != nonce:
        raise BadCallbackError("no confirmation with this nonce")
    return dict(ctx.state.data)


@conversation.callback(PointsCallback)
async def toggle_points(ctx: Context, data: PointsCallback) -> None:
    drawn = confirmation(ctx, data.nonce)
    if drawn.get("order") is not None:
        raise BadCallbackError("this confirmation is already paid")
    await confirm(ctx, drawn["product"], drawn["quantity"], drawn["page"], use_points=data.use)


@conversation.callback(PayCallback)
async def pay(ctx: Context, data: PayCallback) -> None:
    drawn = confirmation(ctx, data.nonce)
    try:
        purchase = await ctx.shop.orders.place(
            ctx.member.id,
            drawn["product"],
            drawn["quantity"],
            idempotency_key=drawn["key"],
            use_points=drawn["use_points"],
            expected_total=drawn["total"],
        )
    except ShopError as refusal:
        await refused(ctx, refusal, drawn)
        return
    await deliver(ctx, purchase)
    await ctx.answer(ctx._("Paid. Enjoy!") if purchase.created else None)
    ctx.state.update(order=purchase.order.id)


@conversation.callback(PayMissingCallback)
async def pay_missing(ctx: Context, data: PayMissingCallback) -> None:
    """Buy in one step: a top-up of the shortfall carrying this confirmation's order.

    The intent takes the confirmation's idempotency key and total, so the order placed
    when the money lands is this one, at this price, once. Money that came in meanwhile
    shows the confirmation again, now with "Pay".
    """
    drawn = confirmation(ctx, data.nonce)
    if drawn.get("order") is not None:
        raise BadCallbackError("this confirmation is already paid")
    product_id, quantity, page = drawn["product"], drawn["quantity"], drawn["page"]
    balance = await ctx.shop.wallet.balance(ctx.member.id)
    amount = missing_amount(drawn["total"] - balance, ctx.shop.payments.rules)
    if balance >= drawn["total"] or amount is None:
        await confirm(ctx, product_id, quantity, page, use_points=drawn["use_points"])
        return
    intent = BuyIntent(
        product_id=product_id,
        quantity=quantity,
        use_points=drawn["use_points"],
        idempotency_key=drawn["key"],
        expected_total=drawn["total"],
    )
    back = ProductCallback(product=product_id, page=page)
    await choose_method(ctx, amount, intent=intent, back=back)


async def refused(ctx: Context, refusal: ShopError, drawn: dict[str, Any]) -> None:
    """Nothing was charged: show what changed and let the member decide again."""
    product_id, quantity, page = drawn["product"], drawn["quantity"], drawn["page"]
    reason = render_error(refusal, ctx, ctx.shop.ladder)
    if refusal.code == ErrorCode.PRICE_CHANGED:
        await ctx.answer(reason, alert=True)
        await confirm(
            ctx, product_id, quantity, page, use_points=drawn["use_points"], notice=f"⚠️ {reason}"
        )
    elif refusal.code in (ErrorCode.OUT_OF_STOCK, ErrorCode.QUANTITY_OUT_OF_RANGE):
        await ctx.answer(reason, alert=True)
        await show_product(ctx, product_id, page, notice=f"⚠️ {reason}")
    elif refusal.code in (ErrorCode.INSUFFICIENT_BALANCE, ErrorCode.INSUFFICIENT_POINTS):
        await ctx.answer(reason, alert=True)
        await confirm(
            ctx,
            product_id,
            quantity,
            page,
            use_points=drawn["use_points"],
            notice=f"⚠️ {reason}",
        )
    else:
        raise refusal

"""/orders: the member's recent orders, and the codes of one again whenever they ask.

Codes are read only through `shop.orders.reveal`, which answers for the member's own
orders alone: an order id forged into a button reads as "no such order" and shows
nothing.
"""

from __future__ import annotations

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, escape
from bot.handlers.buy import show_codes
from bot.handlers.start import MenuCallback, menu_button
from bot.i18n import N_
from core.clock import local_day
from core.orders import OrderView

conversation = Conversation("orders")

#: Orders listed on one page.
PAGE_SIZE = 5

#: Order statuses as the member reads them.
STATUS_NAMES = {
    "placed": N_("awaiting payment"),
    "paid": N_("paid"),
    "delivered": N_("delivered"),
    "failed": N_("failed"),
    "refunded": N_("refunded"),
}


class OrdersCallback(Callback):
    """A page of the order list."""

    prefix = "orders"
    page: int = 1


class ExportCallback(Callback):
    """The member's own orders as CSV (对账), for tiers that may export."""

    prefix = "orders_csv"


class OrderCallback(Callback):
    """One order with its codes; `page` is the list page to go back to."""

    prefix = "order"
    order: int
    page: int = 1


def status_name(ctx: Context, status: str) -> str:
    label = STATUS_NAMES.get(status)
    return ctx._(label) if label else escape(status)


def summary(ctx: Context, order: OrderView) -> str:
    return ctx._("#{order} · {date}\n    {name} × {quantity} · {total} · {status}").format(
        order=order.id,
        date=ctx.datetime(order.created_at),
        name=escape(order.product_name(ctx.locale)),
        quantity=ctx.number(order.quantity),
        total=ctx.money(order.total),
        status=status_name(ctx, order.status),
    )


@conversation.command("orders", description=N_("My orders"))
async def orders_command(ctx: Context) -> None:
    await show_page(ctx, 1)


@conversation.menu("orders")
async def orders_menu(ctx: Context) -> None:
    await show_page(ctx, 1)


@conversation.callback(OrdersCallback)
async def orders_page(ctx: Context, data: OrdersCallback) -> None:
    await show_page(ctx, max(data.page, 1))


async def show_page(ctx: Context, page: int) -> None:
    # One more than a page tells whether there is a next page without counting.
    found = await ctx.shop.orders.recent(
        ctx.member.id, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
    )
    shown, has_next = found[:PAGE_SIZE], len(found) > PAGE_SIZE
    keyboard: list[list[Button]] = []
    if not shown:
        text = (
            ctx._("You have no orders yet.")
            if page == 1
            else ctx._("No more orders. Go back to the first page.")
        )
        keyboard.append([Button(ctx._("🛒 Shop"), MenuCallback(item="shop"))])
        if page > 1:
            keyboard.append([Button(ctx._("‹ Previous"), OrdersCallback(page=1))])
    else:
        lines = [ctx._("📦 <b>My orders</b>")]
        if page > 1 or has_next:
            lines.append(ctx._("Page {page}").format(page=ctx.number(page)))
        lines.append("")
        lines += [summary(ctx, order) for order in shown]
        lines += ["", ctx._("Tap an order to see its codes again.")]
        text = "\n".join(lines)
        keyboard += [
            [
                Button(
                    ctx._("#{order} {name}").format(
                        order=order.id, name=order.product_name(ctx.locale)
                    ),
                    OrderCallback(order=order.id, page=page),
                )
            ]
            for order in shown
        ]
        paging: list[Button] = []
        if page > 1:
            paging.append(Button(ctx._("‹ Previous"), OrdersCallback(page=page - 1)))
        if has_next:
            paging.append(Button(ctx._("Next ›"), OrdersCallback(page=page + 1)))
        if paging:
            keyboard.append(paging)
        if ctx.shop.ladder.tier(ctx.member.tier_key).capabilities.export:
            keyboard.append([Button(ctx._("📄 Export my orders (CSV)"), ExportCallback())])
    keyboard.append([menu_button(ctx)])
    await ctx.reply(text, keyboard)


@conversation.callback(ExportCallback)
async def export_orders(ctx: Context, data: ExportCallback) -> None:
    """Every order since the member joined; the shop refuses a tier without export."""
    start = local_day(ctx.member.created_at, ctx.zone)
    end = local_day(ctx.shop.clock.now(), ctx.zone)
    exports = ctx.shop.operations.exports
    csv = await exports.own_orders_csv(ctx.member.id, start, end)
    caption = ctx._("Your orders from {start} to {end}").format(start=start, end=end)
    await ctx.transport.send_document(ctx.chat_id, f"orders-{end:%Y%m%d}.csv", csv, caption)
    await ctx.answer(ctx._("Your orders are in the file below."))


@conversation.callback(OrderCallback)
async def order_detail(ctx: Context, data: OrderCallback) -> None:
    order, codes = await ctx.shop.orders.reveal(ctx.member.id, data.order)
    lines = [ctx._("📦 <b>Order #{order}</b>").format(order=order.id), summary(ctx, order)]
    if order.discount or order.points_used:
        lines.append(
            ctx._("Base price {base}, saved {saved}, points used {points}").format(
                base=ctx.money(order.unit_base_price * order.quantity),
                saved=ctx.money(order.discount),
                points=ctx.number(order.points_used),
            )
        )
    keyboard = [
        [Button(ctx._("« Back to my orders"), OrdersCallback(page=data.page))],
        [menu_button(ctx)],
    ]
    if codes:
        await show_codes(ctx, order.id, lines, codes, keyboard)
    else:
        await ctx.reply("\n".join([*lines, "", ctx._("This order has no codes.")]), keyboard)

"""/orders: the member's recent orders, the codes of one again, and reviewing it (评价).

Codes are read only through `shop.orders.reveal`, which answers for the member's own
orders alone: an order id forged into a button reads as "no such order" and shows
nothing. A delivered order offers "⭐ Rate": stars 1-5, then a few words or "Skip"; the
shop keeps one review per order and awards its points once, and the order screen shows
the review from then on.
"""

from __future__ import annotations

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.errors import render_error
from bot.handlers.delivery import show_codes
from bot.handlers.start import MenuCallback, menu_button
from bot.i18n import N_
from bot.paging import paging_row
from core.clock import local_day
from core.errors import ErrorCode, ShopError
from core.models import OrderStatus
from core.orders import OrderView
from core.reviews import RATING_MAX, RATING_MIN, ReviewView

conversation = Conversation("orders")

#: Orders listed on one page.
PAGE_SIZE = 5
#: Typing the words of a review; the data holds the order, its stars and the list page.
REVIEW_TEXT = "orders:review_text"
#: The longest review text taken, in characters.
REVIEW_TEXT_MAX = 500

#: Order statuses as the member reads them.
STATUS_NAMES: dict[OrderStatus, str] = {
    OrderStatus.PLACED: N_("awaiting payment"),
    OrderStatus.PAID: N_("paid"),
    OrderStatus.DELIVERED: N_("delivered"),
    OrderStatus.FAILED: N_("failed"),
    OrderStatus.REFUNDED: N_("refunded"),
}


class OrdersCallback(Callback):
    """A page of the order list."""

    prefix = "orders"
    page: int = 1


class OrdersExportCallback(Callback):
    """The member's own orders as CSV (对账), for tiers that may export."""

    prefix = "orders_csv"


class OrderCallback(Callback):
    """One order with its codes; `page` is the list page to go back to."""

    prefix = "order"
    order: int
    page: int = 1


class RateCallback(Callback):
    """Start reviewing an order: choose the stars."""

    prefix = "orate"
    order: int
    page: int = 1


class StarsCallback(Callback):
    """The stars chosen for an order; the words come next."""

    prefix = "ostars"
    order: int
    stars: int
    page: int = 1


class SkipWordsCallback(Callback):
    """Send the review with its stars and no words."""

    prefix = "oskip"
    order: int
    stars: int
    page: int = 1


def status_name(ctx: Context, status: OrderStatus) -> str:
    return ctx._(STATUS_NAMES[status])


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
        keyboard += paging_row(ctx, page, has_next, lambda n: OrdersCallback(page=n))
        if ctx.shop.ladder.tier(ctx.member.tier_key).capabilities.export:
            keyboard.append([Button(ctx._("📄 Export my orders (CSV)"), OrdersExportCallback())])
    keyboard.append([menu_button(ctx)])
    await ctx.reply(text, keyboard)


@conversation.callback(OrdersExportCallback)
async def export_orders(ctx: Context, data: OrdersExportCallback) -> None:
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
    await show_order(ctx, data.order, data.page)


async def show_order(ctx: Context, order_id: int, page: int, *, notice: str | None = None) -> None:
    """One order with its codes and its review (or the button to write one)."""
    order, codes = await ctx.shop.orders.reveal(ctx.member.id, order_id)
    review = await ctx.shop.reviews.of_order(ctx.member.id, order.id)
    lines = [notice, ""] if notice else []
    lines += [ctx._("📦 <b>Order #{order}</b>").format(order=order.id), summary(ctx, order)]
    if order.discount or order.points_used:
        lines.append(
            ctx._("Base price {base}, saved {saved}, points used {points}").format(
                base=ctx.money(order.unit_base_price * order.quantity),
                saved=ctx.money(order.discount),
                points=ctx.number(order.points_used),
            )
        )
    if review is not None:
        lines += review_lines(ctx, review)
    keyboard: list[list[Button]] = []
    if review is None and order.status is OrderStatus.DELIVERED:
        keyboard.append([Button(ctx._("⭐ Rate"), RateCallback(order=order.id, page=page))])
    keyboard += [
        [Button(ctx._("« Back to my orders"), OrdersCallback(page=page))],
        [menu_button(ctx)],
    ]
    if codes:
        await show_codes(ctx, order.id, lines, codes, keyboard)
    else:
        await ctx.reply("\n".join([*lines, "", ctx._("This order has no codes.")]), keyboard)


# --- reviews (评价) ------------------------------------------------------------------------


def stars_text(rating: int) -> str:
    return "⭐" * rating


def review_lines(ctx: Context, review: ReviewView) -> list[str]:
    lines = [
        ctx._("Your review: {stars} ({rating}/5)").format(
            stars=stars_text(review.rating), rating=review.rating
        )
    ]
    if review.text:
        lines.append(f"<i>{escape(review.text)}</i>")
    return lines


@conversation.callback(RateCallback)
async def rate_order(ctx: Context, data: RateCallback) -> None:
    """The stars to choose from, for the member's own order not reviewed yet."""
    order = await ctx.shop.orders.get(ctx.member.id, data.order)
    if await ctx.shop.reviews.of_order(ctx.member.id, order.id) is not None:
        raise ShopError(ErrorCode.ALREADY_REVIEWED, order=order.id)
    ctx.state.clear()
    stars = [
        Button(stars_text(rating), StarsCallback(order=order.id, stars=rating, page=data.page))
        for rating in range(RATING_MIN, RATING_MAX + 1)
    ]
    text = ctx._("⭐ How would you rate order #{order}, {name}?\nTap 1 to 5 stars.").format(
        order=order.id, name=escape(order.product_name(ctx.locale))
    )
    await ctx.reply(
        text,
        [
            stars[:3],
            stars[3:],
            [Button(ctx._("« Back"), OrderCallback(order=order.id, page=data.page))],
        ],
    )


@conversation.callback(StarsCallback)
async def stars_chosen(ctx: Context, data: StarsCallback) -> None:
    """Keep the stars in the chat state and ask for a few optional words."""
    if not RATING_MIN <= data.stars <= RATING_MAX:
        raise ShopError(ErrorCode.INVALID_RATING, min=RATING_MIN, max=RATING_MAX)
    order = await ctx.shop.orders.get(ctx.member.id, data.order)
    ctx.state.set(REVIEW_TEXT, order=order.id, stars=data.stars, page=data.page)
    await ctx.reply(
        ctx.ngettext(
            "You chose {stars}. Add a few words about order #{order} if you like"
            " (up to {max} character), or tap Skip.",
            "You chose {stars}. Add a few words about order #{order} if you like"
            " (up to {max} characters), or tap Skip.",
            REVIEW_TEXT_MAX,
        ).format(stars=stars_text(data.stars), order=order.id, max=ctx.number(REVIEW_TEXT_MAX)),
        words_keyboard(ctx, order.id, data.stars, data.page),
    )


def words_keyboard(ctx: Context, order_id: int, stars: int, page: int) -> Keyboard:
    return [
        [Button(ctx._("Skip »"), SkipWordsCallback(order=order_id, stars=stars, page=page))],
        [Button(ctx._("« Back"), RateCallback(order=order_id, page=page))],
    ]


@conversation.callback(SkipWordsCallback)
async def skip_words(ctx: Context, data: SkipWordsCallback) -> None:
    await submit_review(ctx, data.order, data.stars, "", data.page)


@conversation.state(REVIEW_TEXT)
async def words_typed(ctx: Context) -> None:
    order_id, stars = int(ctx.state.get("order")), int(ctx.state.get("stars"))
    page = int(ctx.state.get("page", 1))
    words = ctx.incoming.text.strip()
    if not words or len(words) > REVIEW_TEXT_MAX:
        await ctx.reply(
            ctx.ngettext(
                "Please send your review as text of up to {max} character, or tap Skip.",
                "Please send your review as text of up to {max} characters, or tap Skip.",
                REVIEW_TEXT_MAX,
            ).format(max=ctx.number(REVIEW_TEXT_MAX)),
            words_keyboard(ctx, order_id, stars, page),
        )
        return
    await submit_review(ctx, order_id, stars, words, page)


async def submit_review(ctx: Context, order_id: int, stars: int, words: str, page: int) -> None:
    """Send the review once; the points it earned are announced on the order screen.

    A refusal (reviewed already, say from another device) ends the review step too, so
    the member is not left typing into a review that cannot be sent.
    """
    ctx.state.clear()
    try:
        review = await ctx.shop.reviews.review(ctx.member.id, order_id, stars, words)
    except ShopError as refusal:
        reason = render_error(refusal, ctx, ctx.shop.ladder)
        if ctx.incoming.kind == "callback":
            await ctx.answer(reason, alert=True)
        else:
            await ctx.reply(reason, [[Button(ctx._("📦 My orders"), OrdersCallback(page=page))]])
        return
    thanks = ctx.ngettext(
        "🎉 Thank you for your review! You earned {points} point.",
        "🎉 Thank you for your review! You earned {points} points.",
        review.points,
    ).format(points=ctx.number(review.points))
    await ctx.answer(ctx._("Thank you!"))
    await show_order(ctx, order_id, page, notice=thanks)

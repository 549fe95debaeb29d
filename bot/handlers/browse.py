"""/shop: the catalog, two levels of categories and then a page of products.

Every product line shows what *this* member pays next to the base price, which the
shop quotes per product (`shop.orders.quote`): the handler never works a price out.
A product the member's tier may not buy carries a 🔒 and the tier that opens it, so
the catalog also tells them what climbing the ladder is worth.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, escape
from bot.handlers.start import menu_button
from bot.i18n import N_
from core.catalog import CategoryView, ProductView
from core.errors import ErrorCode, ShopError
from core.pricing import Quote

conversation = Conversation("browse")

#: Products on one page of a category; small enough that the buttons fit one screen.
PAGE_SIZE = 5


class ShopCallback(Callback):
    """A catalog screen: the top level (`category` None) or one category at `page`."""

    prefix = "shop"
    category: int | None = None
    page: int = 1


class ProductCallback(Callback):
    """Open one product; `page` is the category page to go back to."""

    prefix = "prod"
    product: int
    page: int = 1


@dataclass(frozen=True, slots=True)
class Offer:
    """A product as this member sees it: their quote, or why they cannot buy it."""

    product: ProductView
    quote: Quote | None
    #: Name of the tier that opens a product the member's tier may not buy.
    locked_until: str | None
    sold_out: bool


async def offer(ctx: Context, product: ProductView) -> Offer:
    """Quote one unit for the member; a tier lock or an empty stock is shown, not raised."""
    try:
        quote = await ctx.shop.orders.quote(ctx.member.id, product.id, 1)
    except ShopError as refusal:
        if refusal.code == ErrorCode.NOT_ALLOWED_FOR_TIER:
            opener = ctx.shop.ladder.lowest_with(product.pool)
            name = opener.name(ctx.locale) if opener else ctx._("a higher level")
            return Offer(product, None, locked_until=name, sold_out=False)
        if refusal.code == ErrorCode.OUT_OF_STOCK:
            return Offer(product, None, locked_until=None, sold_out=True)
        raise
    return Offer(product, quote, locked_until=None, sold_out=False)


def price_text(ctx: Context, offer: Offer) -> str:
    """ "¥9.50 <s>¥10.00</s>": the member's price, with the base price struck when lower."""
    base = ctx.money(offer.product.base_price)
    if offer.quote is None or offer.quote.unit_price == offer.product.base_price:
        return base
    return f"{ctx.money(offer.quote.unit_price)} <s>{base}</s>"


def offer_line(ctx: Context, number: int, offer: Offer) -> str:
    head = f"{number}. <b>{escape(offer.product.name(ctx.locale))}</b>"
    if offer.locked_until is not None:
        detail = ctx._("🔒 {price} · from {tier} up").format(
            price=price_text(ctx, offer), tier=escape(offer.locked_until)
        )
    elif offer.sold_out:
        detail = ctx._("{price} · sold out").format(price=price_text(ctx, offer))
    else:
        detail = ctx._("{price} · {stock} left").format(
            price=price_text(ctx, offer), stock=ctx.number(offer.product.stock)
        )
    return f"{head}\n    {detail}"


def offer_button(ctx: Context, offer: Offer, page: int) -> Button:
    name = offer.product.name(ctx.locale)
    if offer.locked_until is not None:
        label = f"🔒 {name}"
    elif offer.quote is not None:
        label = f"{name} · {ctx.money(offer.quote.unit_price)}"
    else:
        label = name
    return Button(label, ProductCallback(product=offer.product.id, page=page))


def back_from(category: CategoryView) -> ShopCallback:
    return ShopCallback(category=category.parent_id, page=1)


CATALOG_TITLE = N_("🛒 <b>Shop</b>")


@conversation.command("shop", description=N_("Browse the shop"))
async def shop_command(ctx: Context) -> None:
    await top_level(ctx)


@conversation.menu("shop")
async def top_level(ctx: Context) -> None:
    ctx.state.clear()
    categories = await ctx.shop.catalog.categories()
    if not categories:
        text = ctx._("The shop has nothing on sale yet. Please come back soon.")
        await ctx.reply(text, [[menu_button(ctx)]])
        return
    text = "{title}\n{hint}".format(title=ctx._(CATALOG_TITLE), hint=ctx._("Choose a category:"))
    keyboard: list[list[Button]] = [
        [Button(category.name(ctx.locale), ShopCallback(category=category.id))]
        for category in categories
    ]
    keyboard.append([menu_button(ctx)])
    await ctx.reply(text, keyboard)


@conversation.callback(ShopCallback)
async def open_category(ctx: Context, data: ShopCallback) -> None:
    if data.category is None:
        await top_level(ctx)
        return
    ctx.state.clear()
    category = await ctx.shop.catalog.category(data.category)
    if category.children:
        await subcategories(ctx, category)
    else:
        await products(ctx, category, data.page)


async def subcategories(ctx: Context, category: CategoryView) -> None:
    children = await ctx.shop.catalog.categories(category.id)
    text = "{title}\n<b>{name}</b>\n{hint}".format(
        title=ctx._(CATALOG_TITLE),
        name=escape(category.name(ctx.locale)),
        hint=ctx._("Choose a category:"),
    )
    keyboard: list[list[Button]] = [
        [Button(child.name(ctx.locale), ShopCallback(category=child.id))] for child in children
    ]
    keyboard.append([Button(ctx._("« Back"), back_from(category)), menu_button(ctx)])
    await ctx.reply(text, keyboard)


async def products(ctx: Context, category: CategoryView, page: int) -> None:
    found = await ctx.shop.catalog.products(category.id, page=page, page_size=PAGE_SIZE)
    if page > found.pages:
        # A stale page button after products were removed: show the last page instead.
        found = await ctx.shop.catalog.products(category.id, page=found.pages, page_size=PAGE_SIZE)
    lines = [ctx._(CATALOG_TITLE), f"<b>{escape(category.name(ctx.locale))}</b>"]
    keyboard: list[list[Button]] = []
    if not found.items:
        lines.append(ctx._("Nothing on sale here right now."))
    else:
        if found.pages > 1:
            lines.append(
                ctx._("Page {page} of {pages}").format(
                    page=ctx.number(found.page), pages=ctx.number(found.pages)
                )
            )
        lines.append("")
        first = (found.page - 1) * found.page_size + 1
        for number, product in enumerate(found.items, start=first):
            shown = await offer(ctx, product)
            lines.append(offer_line(ctx, number, shown))
            keyboard.append([offer_button(ctx, shown, found.page)])
        lines += ["", ctx._("Tap a product to buy it.")]
    keyboard += paging(ctx, category, found.page, found.has_next)
    keyboard.append([Button(ctx._("« Back"), back_from(category)), menu_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


def paging(ctx: Context, category: CategoryView, page: int, has_next: bool) -> list[list[Button]]:
    row: list[Button] = []
    if page > 1:
        row.append(Button(ctx._("‹ Previous"), ShopCallback(category=category.id, page=page - 1)))
    if has_next:
        row.append(Button(ctx._("Next ›"), ShopCallback(category=category.id, page=page + 1)))
    return [row] if row else []

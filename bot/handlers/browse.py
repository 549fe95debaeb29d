"""/shop: the catalog, two levels of categories and then a page of products.

Every product line shows what *this* member pays next to the base price, as the shop
quotes it: each screen is one call (`shop.catalog.browse`), and the handler never works
a price out. A product the member's tier may not buy carries a 🔒 and the tier that
opens it, so the catalog also tells them what climbing the ladder is worth.
"""

from __future__ import annotations

import re

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, escape
from bot.handlers.start import menu_button
from bot.i18n import N_
from bot.paging import page_line, paging_row
from core.catalog import CategoryPage, CategoryView, Offer, Page

conversation = Conversation("browse")

#: Products on one page of a category; small enough that the buttons fit one screen.
PAGE_SIZE = 5
#: Categories on one page of a list of them: a big shop's hundreds would not fit one
#: screen (nor Telegram's 100 buttons), and drawing them all costs every visit.
CATEGORY_PAGE_SIZE = 10


#: A quantity as a member types it: digits only (any script's), and few enough that no
#: absurd number is ever turned into an int (the shop refuses 0 or merely too many).
_QUANTITY_TEXT = re.compile(r"\d{1,7}")


def typed_quantity(text: str) -> int | None:
    """The quantity a member typed where one is asked for, or None when it is none."""
    text = text.strip()
    return int(text) if _QUANTITY_TEXT.fullmatch(text) else None


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


def locked_until(ctx: Context, offer: Offer) -> str:
    """The name of the tier that opens a locked product, in the member's language."""
    opener = offer.opener
    return ctx.shop.ladder.tier(opener).name(ctx.locale) if opener else ctx._("a higher level")


def price_text(ctx: Context, offer: Offer) -> str:
    """ "¥9.50 <s>¥10.00</s>": the member's price, with the base price struck when lower."""
    base = ctx.money(offer.product.base_price)
    if offer.quote is None or offer.quote.unit_price == offer.product.base_price:
        return base
    return f"{ctx.money(offer.quote.unit_price)} <s>{base}</s>"


def offer_line(ctx: Context, number: int, offer: Offer) -> str:
    head = f"{number}. <b>{escape(offer.product.name(ctx.locale))}</b>"
    if offer.locked:
        detail = ctx._("🔒 {price} · from {tier} up").format(
            price=price_text(ctx, offer), tier=escape(locked_until(ctx, offer))
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
    if offer.locked:
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
async def top_level(ctx: Context, page: int = 1) -> None:
    ctx.state.clear()
    shown = await ctx.shop.catalog.browse(ctx.member.id, None, page_size=PAGE_SIZE)
    if not shown.children:
        text = ctx._("The shop has nothing on sale yet. Please come back soon.")
        await ctx.reply(text, [[menu_button(ctx)]])
        return
    lines = [ctx._(CATALOG_TITLE)]
    keyboard = category_buttons(ctx, None, shown.children, page, lines)
    keyboard.append([menu_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


@conversation.callback(ShopCallback)
async def open_category(ctx: Context, data: ShopCallback) -> None:
    if data.category is None:
        await top_level(ctx, data.page)
        return
    ctx.state.clear()
    shown = await ctx.shop.catalog.browse(
        ctx.member.id, data.category, page=data.page, page_size=PAGE_SIZE
    )
    assert shown.category is not None
    if shown.children:
        await subcategories(ctx, shown.category, shown.children, data.page)
    else:
        await products(ctx, shown.category, shown)


async def subcategories(
    ctx: Context, category: CategoryView, children: tuple[CategoryView, ...], page: int
) -> None:
    lines = [ctx._(CATALOG_TITLE), f"<b>{escape(category.name(ctx.locale))}</b>"]
    keyboard = category_buttons(ctx, category, children, page, lines)
    keyboard.append([Button(ctx._("« Back"), back_from(category)), menu_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


def category_buttons(
    ctx: Context,
    parent: CategoryView | None,
    children: tuple[CategoryView, ...],
    page: int,
    lines: list[str],
) -> list[list[Button]]:
    """One page of a list of categories (the last page when `page` is past it), its
    "Page n of m" and hint added to `lines`."""
    shown = Page.of(children, page, CATEGORY_PAGE_SIZE)
    lines += page_line(ctx, shown)
    lines.append(ctx._("Choose a category:"))
    keyboard: list[list[Button]] = [
        [Button(child.name(ctx.locale), ShopCallback(category=child.id))] for child in shown.items
    ]
    return keyboard + paging(ctx, parent, shown.page, shown.has_next)


async def products(ctx: Context, category: CategoryView, shown: CategoryPage) -> None:
    """A page of the category's offers; a page past the end (products were removed since
    its button was drawn) comes back as the last page."""
    found = shown.offers
    lines = [ctx._(CATALOG_TITLE), f"<b>{escape(category.name(ctx.locale))}</b>"]
    keyboard: list[list[Button]] = []
    if not found.items:
        lines.append(ctx._("Nothing on sale here right now."))
    else:
        lines += page_line(ctx, found)
        lines.append("")
        first = (found.page - 1) * found.page_size + 1
        for number, offer in enumerate(found.items, start=first):
            lines.append(offer_line(ctx, number, offer))
            keyboard.append([offer_button(ctx, offer, found.page)])
        lines += ["", ctx._("Tap a product to buy it.")]
    keyboard += paging(ctx, category, found.page, found.has_next)
    keyboard.append([Button(ctx._("« Back"), back_from(category)), menu_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


def paging(
    ctx: Context, category: CategoryView | None, page: int, has_next: bool
) -> list[list[Button]]:
    """‹ Previous / Next › for a page of a category (None: the top level)."""
    at = category.id if category is not None else None
    return paging_row(ctx, page, has_next, lambda n: ShopCallback(category=at, page=n))

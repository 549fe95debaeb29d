"""Admin: the stock of codes per product, and importing codes.

Codes come as a `.txt`/`.csv` file or pasted lines and go through
`AdminActions.import_codes`, which reports how many were added, already known or not
codes at all. The product list lives here too, in a catalog view (each product opens
its card, see `admin_products`) and a stock view (each opens the import).
"""

from __future__ import annotations

import csv
import io
from typing import Literal

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, escape
from bot.handlers.admin import (
    AdminCallback,
    actor,
    admin_only,
    admins_only,
    home_button,
    operations,
    section,
)
from bot.paging import paging_row
from core.catalog import ProductView
from core.stock import ImportReport

conversation = Conversation("admin_stock", button_guard=admins_only)

PAGE_SIZE = 8
#: Biggest code file accepted (a million short codes fit comfortably).
MAX_FILE_BYTES = 20 * 1024 * 1024
FILE_SUFFIXES = (".txt", ".csv")
#: Duplicate lines named in the import reply; the rest are counted.
DUPLICATES_SHOWN = 20
IMPORT_STATE = "adm_import"


class ProductListCallback(Callback):
    """A page of products: the catalog view or the stock view."""

    prefix = "admpl"
    view: Literal["products", "stock"]
    page: int


class AdminProductCallback(Callback):
    """One product's card (see `admin_products`), or taking it on or off sale."""

    prefix = "admpc"
    product: int
    action: Literal["view", "toggle"]


class ImportCallback(Callback):
    prefix = "admpi"
    product: int


class NewProductCallback(Callback):
    """Start the new-product form (see `admin_products`)."""

    prefix = "admpn"


def stock_mark(product: ProductView) -> str:
    if not product.active:
        return "⏸"
    return "⚠️" if product.stock < product.low_stock_threshold else "✅"


async def show_list(ctx: Context, view: Literal["products", "stock"], page: int) -> None:
    listing = await ctx.shop.catalog.products(
        None, page=page, page_size=PAGE_SIZE, include_inactive=True
    )
    if view == "stock":
        title = ctx._("🗃 <b>Stock</b> (⚠️ below its restock threshold, ⏸ off sale)")
    else:
        title = ctx._("📦 <b>Products</b>")
    lines = [title]
    keyboard: list[list[Button]] = []
    for product in listing.items:
        lines.append(
            ctx._("{mark} {name} (<code>{sku}</code>): {stock} in stock").format(
                mark=stock_mark(product),
                name=escape(product.name(ctx.locale)),
                sku=escape(product.sku),
                stock=ctx.number(product.stock),
            )
        )
        label = f"{stock_mark(product)} {product.sku}"
        target: Callback = (
            ImportCallback(product=product.id)
            if view == "stock"
            else AdminProductCallback(product=product.id, action="view")
        )
        keyboard.append([Button(label, target)])
    if not listing.items:
        lines.append(ctx._("No products yet."))
    keyboard += paging_row(
        ctx, page, listing.has_next, lambda n: ProductListCallback(view=view, page=n)
    )
    if view == "products":
        keyboard.append([Button(ctx._("➕ New product"), NewProductCallback())])
    keyboard.append([home_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


@section("stock")
async def stock_section(ctx: Context) -> None:
    ctx.state.clear()
    await show_list(ctx, "stock", 1)


@conversation.callback(ProductListCallback)
async def list_page(ctx: Context, data: ProductListCallback) -> None:
    await show_list(ctx, data.view, max(1, data.page))


@conversation.callback(ImportCallback)
async def start_import(ctx: Context, data: ImportCallback) -> None:
    product = await ctx.shop.catalog.product(data.product)
    ctx.state.set(IMPORT_STATE, product=product.id)
    text = ctx._(
        "📥 Codes for <b>{name}</b> (<code>{sku}</code>), {stock} in stock now.\n"
        "Send a .txt or .csv file with one code per line, or paste the codes here."
    ).format(
        name=escape(product.name(ctx.locale)),
        sku=escape(product.sku),
        stock=ctx.number(product.stock),
    )
    back = Button(ctx._("« Back"), AdminProductCallback(product=product.id, action="view"))
    await ctx.reply(text, [[back]])


# --- importing codes ----------------------------------------------------------------------


def code_lines(data: bytes, filename: str) -> list[str]:
    """The codes in a file: one per line; in a CSV the first cell of each row."""
    text = data.decode("utf-8-sig")
    if filename.lower().endswith(".csv"):
        return [row[0] for row in csv.reader(io.StringIO(text)) if row]
    return text.splitlines()


@conversation.state(IMPORT_STATE)
@admin_only
async def import_input(ctx: Context) -> None:
    product = await ctx.shop.catalog.product(int(ctx.state.get("product")))
    back = [[Button(ctx._("« Back"), AdminProductCallback(product=product.id, action="view"))]]
    document = ctx.incoming.document
    if document is not None:
        name = document.filename or ""
        if not name.lower().endswith(FILE_SUFFIXES):
            await ctx.reply(ctx._("Please send a .txt or .csv file."), back)
            return
        if document.size is not None and document.size > MAX_FILE_BYTES:
            await ctx.reply(ctx._("That file is too big. Please split it."), back)
            return
        try:
            lines = code_lines(await ctx.download(document), name)
        except UnicodeDecodeError:
            await ctx.reply(ctx._("That file is not UTF-8 text. Please save it as UTF-8."), back)
            return
    else:
        lines = ctx.incoming.text.splitlines()
    report = await operations(ctx).admin.import_codes(actor(ctx), product.sku, lines)
    duplicates = ctx.ngettext("{count} duplicate", "{count} duplicates", report.duplicate).format(
        count=ctx.number(report.duplicate)
    )
    text = ctx._(
        "📥 <b>{sku}</b>: {added} added, {duplicates}, {rejected} rejected."
        "\n{stock} in stock now. Send more, or go back."
    ).format(
        sku=escape(product.sku),
        added=ctx.number(report.added),
        duplicates=duplicates,
        rejected=ctx.number(report.rejected),
        stock=ctx.number(report.stock_after),
    )
    text += duplicate_lines(ctx, report)
    await ctx.reply(text, [*back, [Button(ctx._("🗃 Stock"), AdminCallback(section="stock"))]])


def duplicate_lines(ctx: Context, report: ImportReport) -> str:
    """Which line repeated which code's holder, the first few (a message has a limit)."""
    lines = [
        ctx._("Line {line}: already stocked under {sku}").format(
            line=duplicate.line, sku=escape(duplicate.held_by)
        )
        if duplicate.held_by is not None
        else ctx._("Line {line}: repeats an earlier line").format(line=duplicate.line)
        for duplicate in report.duplicates[:DUPLICATES_SHOWN]
    ]
    hidden = len(report.duplicates) - DUPLICATES_SHOWN
    if hidden > 0:
        lines.append(
            ctx.ngettext("…and {count} more", "…and {count} more", hidden).format(
                count=ctx.number(hidden)
            )
        )
    return "".join("\n" + line for line in lines)

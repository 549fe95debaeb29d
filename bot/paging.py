"""A list shown a page at a time: the "Page n of m" line and the ‹ Previous / Next › row,
the same on every screen that pages (the catalog, orders, stock, the admin's lists)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.callbacks import Callback
from bot.conversation import Button, Context
from core.catalog import Page


def page_line(ctx: Context, page: Page[Any]) -> list[str]:
    """The line saying which page this is of how many; none when all fits on one."""
    if page.pages == 1:
        return []
    return [
        ctx._("Page {page} of {pages}").format(
            page=ctx.number(page.page), pages=ctx.number(page.pages)
        )
    ]


def paging_row(
    ctx: Context, page: int, has_next: bool, to: Callable[[int], Callback]
) -> list[list[Button]]:
    """‹ Previous / Next › as a keyboard row, `to(n)` the button data for page n; no row
    when there is neither."""
    row: list[Button] = []
    if page > 1:
        row.append(Button(ctx._("‹ Previous"), to(page - 1)))
    if has_next:
        row.append(Button(ctx._("Next ›"), to(page + 1)))
    return [row] if row else []

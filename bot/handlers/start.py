"""/start: the greeting and the main menu every other conversation hangs off.

Each menu button carries `MenuCallback(item=...)`; the conversation that owns an item
hooks it with `@conversation.menu("item")`, so this module never imports them. An item
nobody has hooked yet says so politely.
"""

from __future__ import annotations

from typing import Literal

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.i18n import N_, Translator

conversation = Conversation("start")

MenuItem = Literal[
    "home",
    "shop",
    "orders",
    "topup",
    "balance",
    "level",
    "checkin",
    "referrals",
    "api",
    "ticket",
    "manager",
    "language",
]


class MenuCallback(Callback):
    prefix = "menu"
    item: MenuItem


#: Main menu buttons, two per row: shopping, then money, then the member's own pages;
#: the language, set once, alone at the bottom.
MENU_ROWS: tuple[tuple[tuple[MenuItem, str], ...], ...] = (
    (("shop", N_("🛒 Shop")), ("orders", N_("📦 My orders"))),
    (("topup", N_("💰 Top up")), ("balance", N_("👛 Balance"))),
    (("level", N_("⭐ My level")), ("checkin", N_("📅 Check in"))),
    (("ticket", N_("💬 Support")), ("manager", N_("👤 My manager"))),
    (("language", N_("🌐 Language")),),
)


def offers_api(ctx: Context) -> bool:
    """The member's tier has reseller API access (a tier with `api` names its limits)."""
    return ctx.shop.ladder.tier(ctx.member.tier_key).capabilities.api


def api_button(ctx: Context) -> Button:
    return Button(ctx._("🔑 API"), MenuCallback(item="api"))


def main_menu(ctx: Context) -> Keyboard:
    """`MENU_ROWS`, plus 🔑 API above the language for the tiers that have it."""
    rows = [
        [Button(ctx._(label), MenuCallback(item=item)) for item, label in row] for row in MENU_ROWS
    ]
    if offers_api(ctx):
        rows.insert(len(rows) - 1, [api_button(ctx)])
    return rows


def menu_button(t: Translator) -> Button:
    """A "back to the main menu" button for other conversations' keyboards."""
    return Button(t._("« Main menu"), MenuCallback(item="home"))


def greeting(ctx: Context) -> str:
    name = escape(ctx.member.display_name or ctx.member.username or "")
    title = ctx._("Welcome, {name}!").format(name=name) if name else ctx._("Welcome!")
    return "<b>{title}</b>\n{body}".format(
        title=title,
        body=ctx._(
            "Game cards, phone top-ups and software keys: your code arrives the moment you pay."
            "\nWhat would you like to do?"
        ),
    )


@conversation.command("start", description=N_("Main menu"))
async def start(ctx: Context) -> None:
    await ctx.reply(greeting(ctx), main_menu(ctx))


@conversation.menu("home")
async def home(ctx: Context) -> None:
    await ctx.reply(greeting(ctx), main_menu(ctx))


@conversation.callback(MenuCallback)
async def open_item(ctx: Context, data: MenuCallback) -> None:
    if not await ctx.open_menu(data.item):
        await ctx.answer(ctx._("This part of the shop opens soon."), alert=True)

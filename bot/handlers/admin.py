"""/admin: running the shop from the chat, for the ids in ADMIN_IDS only.

This module holds what every admin screen shares: the entry menu, the guard in front
of every admin command, button and typed input, and the acting admin's name in the
audit log (`bot.names.actor_for`). The screens live in `admin_*` modules and hook into
the menu with `@section`. Every change goes through `core.admin.AdminActions`, so it
is audited the same way as from the shell; a non-admin gets a plain refusal, changes
nothing, and the attempt is written to the audit log.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, Handler, Keyboard
from bot.i18n import N_
from bot.names import actor_for
from core.admin import Operations

Section = Literal[
    "home",
    "products",
    "stock",
    "members",
    "tickets",
    "broadcast",
    "stats",
    "export",
    "payments",
    "referrals",
    "reservations",
]


class AdminCallback(Callback):
    """Open one section of the admin menu."""

    prefix = "adm"
    section: Section


#: The admin menu, two buttons per row.
MENU_ROWS: tuple[tuple[tuple[Section, str], ...], ...] = (
    (("products", N_("📦 Products")), ("stock", N_("🗃 Stock"))),
    (("members", N_("👥 Members")), ("tickets", N_("🎫 Tickets"))),
    (("broadcast", N_("📣 Broadcast")), ("stats", N_("📊 Stats"))),
    (("export", N_("📄 Export")), ("payments", N_("💳 Payments"))),
    (("referrals", N_("👥 Referrals")), ("reservations", N_("📌 Reservations"))),
)

SECTIONS: dict[Section, Handler] = {}


def actor(ctx: Context) -> str:
    return actor_for(ctx.incoming.user_id)


def operations(ctx: Context) -> Operations:
    """The audited admin services over this shop (cheap to build: no state of their own)."""
    return ctx.shop.operations


def section(name: Section) -> Callable[[Handler], Handler]:
    """What the admin menu's `name` button opens."""

    def register(handler: Handler) -> Handler:
        SECTIONS[name] = handler
        return handler

    return register


def home_button(ctx: Context) -> Button:
    return Button(ctx._("« Admin menu"), AdminCallback(section="home"))


def back_to(ctx: Context, name: Section, label: str) -> Keyboard:
    return [[Button(label, AdminCallback(section=name))], [home_button(ctx)]]


async def refuse(ctx: Context) -> None:
    """A non-admin tried an admin command, button or input: say no and log the attempt."""
    incoming = ctx.incoming
    if incoming.kind == "callback":
        attempt = incoming.callback_data or ""
    elif incoming.kind == "command":
        attempt = "/" + (incoming.command or "")
    else:
        attempt = f"input:{ctx.state.name or ''}"
        ctx.state.clear()
    await operations(ctx).admin.denied(actor(ctx), attempt)
    text = ctx._("Sorry, this is only for the shop's admins.")
    if incoming.kind == "callback":
        await ctx.answer(text, alert=True)
    else:
        await ctx.reply(text)


async def admins_only(ctx: Context) -> bool:
    """Every admin conversation's button guard: a non-admin's press is refused and audited.

    It runs before the button's data is parsed, so even data no admin button could carry
    (a forged id, a NUL byte) is refused as an admin-only attempt and lands in the log.
    """
    if ctx.is_admin:
        return True
    await refuse(ctx)
    return False


conversation = Conversation("admin", button_guard=admins_only)


def admin_only(handler: Handler) -> Handler:
    """Guard a command or typed-input handler."""

    @functools.wraps(handler)
    async def guarded(ctx: Context) -> None:
        if not ctx.is_admin:
            await refuse(ctx)
            return
        await handler(ctx)

    return guarded


def menu_text(ctx: Context) -> str:
    return "<b>{title}</b>\n{body}".format(
        title=ctx._("🛠 Shop admin"), body=ctx._("What would you like to do?")
    )


def menu_keyboard(ctx: Context) -> Keyboard:
    return [
        [Button(ctx._(label), AdminCallback(section=name)) for name, label in row]
        for row in MENU_ROWS
    ]


@conversation.command("admin")
@admin_only
async def admin_command(ctx: Context) -> None:
    await ctx.reply(menu_text(ctx), menu_keyboard(ctx))


@section("home")
async def home(ctx: Context) -> None:
    ctx.state.clear()
    await ctx.reply(menu_text(ctx), menu_keyboard(ctx))


@conversation.callback(AdminCallback)
async def open_section(ctx: Context, data: AdminCallback) -> None:
    await SECTIONS[data.section](ctx)

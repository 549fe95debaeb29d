"""Admin: open stock reservations (库存预留), and cancelling one.

The list is core's (`AdminActions.reservations`: every open hold, ending soonest first),
a page at a time; each opens a card with the holder and the codes still held. Cancel
asks first, then ends the hold through `AdminActions.cancel_reservation`, audited in the
same transaction with the acting admin's name, its unsold codes back on sale. The holder
is told in their own language; one who blocked the bot is marked unreachable and the
admin is told they could not be reached. A hold that ended meanwhile (bought, released,
expired, cancelled by another admin) reads as "ended already" and changes nothing.
"""

from __future__ import annotations

from typing import Literal

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, Keyboard, UnreachableError, escape
from bot.handlers.admin import actor, admins_only, home_button, operations, section
from bot.handlers.delivery import MemberChat
from bot.paging import page_line, paging_row
from core.catalog import Page
from core.errors import ErrorCode, ShopError
from core.reservations import ReservationView

conversation = Conversation("admin_reservations", button_guard=admins_only)

#: Reservations listed on one page, ending soonest first.
PAGE_SIZE = 10


class ReservationsListCallback(Callback):
    """A page of the open reservations."""

    prefix = "admrsl"
    page: int


class ReservationAdminCallback(Callback):
    """One reservation: its card, the cancel's confirmation, or the cancel itself."""

    prefix = "admrsv"
    reservation: int
    action: Literal["view", "cancel", "confirm"]
    page: int


def line(ctx: Context, hold: ReservationView) -> str:
    return ctx._("#{id} · {sku} · {remaining}/{quantity} · member #{member} · until {time}").format(
        id=hold.id,
        sku=escape(hold.sku),
        remaining=ctx.number(hold.remaining),
        quantity=ctx.number(hold.quantity),
        member=hold.member_id,
        time=ctx.datetime(hold.expires_at),
    )


async def show_list(ctx: Context, page: int, *, notice: str | None = None) -> None:
    shown = Page.of(await operations(ctx).admin.reservations(), page, PAGE_SIZE)
    page = shown.page
    lines = [notice, ""] if notice else []
    lines.append(ctx._("📌 <b>Open reservations</b>"))
    lines += page_line(ctx, shown)
    lines += [line(ctx, hold) for hold in shown.items] or [ctx._("No open reservations.")]
    opens = [
        Button(
            f"#{hold.id}",
            ReservationAdminCallback(reservation=hold.id, action="view", page=page),
        )
        for hold in shown.items
    ]
    keyboard: list[list[Button]] = [opens[i : i + 5] for i in range(0, len(opens), 5)]
    keyboard += paging_row(ctx, page, shown.has_next, lambda n: ReservationsListCallback(page=n))
    keyboard.append([home_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


def back(ctx: Context, page: int) -> list[Button]:
    return [Button(ctx._("« Reservations"), ReservationsListCallback(page=page))]


async def open_hold(ctx: Context, reservation_id: int) -> ReservationView:
    """The open reservation, or RESERVATION_NOT_FOUND (ended already, or never was)."""
    for hold in await operations(ctx).admin.reservations():
        if hold.id == reservation_id:
            return hold
    raise ShopError(ErrorCode.RESERVATION_NOT_FOUND, reservation=reservation_id)


async def card_text(ctx: Context, hold: ReservationView) -> str:
    member = await ctx.shop.members.get(hold.member_id)
    name = escape(member.display_name) or ctx._("(no name)")
    if member.username:
        name += " @" + escape(member.username)
    return "\n".join(
        (
            ctx._("📌 <b>Reservation #{id}</b>").format(id=hold.id),
            ctx._("Member: {name} · #{id}").format(name=name, id=member.id),
            ctx._("Product: {name} ({sku})").format(
                name=escape(hold.product_name(ctx.locale)), sku=escape(hold.sku)
            ),
            ctx.ngettext(
                "Held: {remaining} of {quantity} code still unbought",
                "Held: {remaining} of {quantity} codes still unbought",
                hold.quantity,
            ).format(remaining=ctx.number(hold.remaining), quantity=ctx.number(hold.quantity)),
            ctx._("Reserved {start}, until {end}").format(
                start=ctx.datetime(hold.created_at), end=ctx.datetime(hold.expires_at)
            ),
        )
    )


@section("reservations")
async def reservations_section(ctx: Context) -> None:
    await show_list(ctx, 1)


@conversation.callback(ReservationsListCallback)
async def list_page(ctx: Context, data: ReservationsListCallback) -> None:
    await show_list(ctx, data.page)


@conversation.callback(ReservationAdminCallback)
async def reservation_action(ctx: Context, data: ReservationAdminCallback) -> None:
    match data.action:
        case "view":
            hold = await open_hold(ctx, data.reservation)
            cancel = ReservationAdminCallback(reservation=hold.id, action="cancel", page=data.page)
            keyboard: Keyboard = [
                [Button(ctx._("✖ Cancel reservation"), cancel)],
                back(ctx, data.page),
            ]
            await ctx.reply(await card_text(ctx, hold), keyboard)
        case "cancel":
            hold = await open_hold(ctx, data.reservation)
            text = ctx.ngettext(
                "Cancel reservation #{id}? Its {count} unbought code goes back on sale,"
                " and the member is told.",
                "Cancel reservation #{id}? Its {count} unbought codes go back on sale,"
                " and the member is told.",
                hold.remaining,
            ).format(id=hold.id, count=ctx.number(hold.remaining))
            confirm = ReservationAdminCallback(
                reservation=hold.id, action="confirm", page=data.page
            )
            view = ReservationAdminCallback(reservation=hold.id, action="view", page=data.page)
            await ctx.reply(
                text,
                [[Button(ctx._("✅ Yes, cancel"), confirm)], [Button(ctx._("« Back"), view)]],
            )
        case "confirm":
            await cancel_hold(ctx, data.reservation, data.page)


async def cancel_hold(ctx: Context, reservation_id: int, page: int) -> None:
    """Cancel (audited), tell the holder, then show the list with what happened on top."""
    hold = await open_hold(ctx, reservation_id)
    released = await operations(ctx).admin.cancel_reservation(actor(ctx), hold.id)
    notice = ctx.ngettext(
        "Reservation #{id} cancelled: {count} code back on sale.",
        "Reservation #{id} cancelled: {count} codes back on sale.",
        released,
    ).format(id=hold.id, count=ctx.number(released))
    if not await tell_holder(ctx, hold, released):
        notice += "\n" + ctx._("The member could not be reached (they blocked the bot).")
    await show_list(ctx, page, notice=notice)


async def tell_holder(ctx: Context, hold: ReservationView, released: int) -> bool:
    """The holder learns, in their language, that an admin ended the hold; False when
    their chat refuses the bot (they are then marked unreachable)."""
    if hold.telegram_id is None:
        return False
    chat = MemberChat(ctx.shop, ctx.transport, hold.telegram_id, hold.locale)
    text = chat.ngettext(
        "📌 A shop admin cancelled your reservation of <b>{name}</b>: {count} unbought code"
        " went back on sale.",
        "📌 A shop admin cancelled your reservation of <b>{name}</b>: {count} unbought codes"
        " went back on sale.",
        released,
    ).format(name=escape(hold.product_name(chat.locale)), count=chat.number(released))
    try:
        await chat.reply(text)
    except UnreachableError:
        await ctx.shop.members.set_reachable(hold.member_id, False)
        return False
    return True

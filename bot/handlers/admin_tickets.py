"""Admin: the ticket queue, answering, resolving and closing from the chat.

The queue is core's (`shop.tickets.queue`: unanswered first, by deadline); each line
counts down to its deadline. Answers go through the same core calls and the same
relay to the member as a reply in the staff chat (`bot.handlers.ticket`), so the member
reads them in their own language and a member who blocked the bot pauses the ticket.
"""

from __future__ import annotations

from typing import Literal

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.handlers.admin import (
    AdminCallback,
    admin_only,
    admins_only,
    home_button,
    section,
)
from bot.handlers.ticket import (
    clip,
    deadline_reason,
    deliver_to_member,
    member_translator,
    order_label,
    rating_keyboard,
    resolve,
    staff_status,
    ticket_keyboard,
    urgent_window,
)
from bot.names import category_name
from core.tickets import TicketStatus, TicketView

conversation = Conversation("admin_tickets", button_guard=admins_only)

REPLY_STATE = "adm_ticket_reply"
QUEUE_SIZE = 10
#: Messages of a ticket shown on its card, newest last.
SHOWN_MESSAGES = 5


class TicketAdminCallback(Callback):
    prefix = "admt"
    ticket: int
    action: Literal["view", "reply", "resolve", "close"]


def awaiting_first_reply(ticket: TicketView) -> bool:
    """The first-response clock is running: open, unanswered and not paused."""
    return (
        ticket.status is TicketStatus.OPEN
        and ticket.first_response_at is None
        and ticket.paused_at is None
    )


def countdown(ctx: Context, ticket: TicketView) -> str:
    """Time left to the first-response deadline (or how late it is), in minutes."""
    minutes = int((ticket.first_response_due - ctx.shop.clock.now()).total_seconds() // 60)
    if minutes < 0:
        return ctx.ngettext("⛔ {count} minute late", "⛔ {count} minutes late", -minutes).format(
            count=ctx.number(-minutes)
        )
    return ctx.ngettext("⏳ {count} minute left", "⏳ {count} minutes left", minutes).format(
        count=ctx.number(minutes)
    )


def headline(ctx: Context, ticket: TicketView) -> str:
    tier = escape(ctx.shop.ladder.tier(ticket.tier_key).name(ctx.locale))
    return f"#{ticket.id} · {category_name(ctx, ticket.category)} · {tier}"


def line(ctx: Context, ticket: TicketView, last_author: str | None) -> str:
    """A queue line: the countdown while the first reply is due, else whose turn it is."""
    state = (
        countdown(ctx, ticket)
        if awaiting_first_reply(ticket)
        else staff_status(ctx, ticket, last_author)
    )
    return f"{headline(ctx, ticket)} · {state}"


@section("tickets")
async def queue(ctx: Context) -> None:
    ctx.state.clear()
    tickets = await ctx.shop.tickets.queue(limit=QUEUE_SIZE)
    last = await ctx.shop.tickets.last_authors([ticket.id for ticket in tickets])
    lines = [ctx._("🎫 <b>Open tickets</b>, soonest deadline first")]
    lines += [line(ctx, ticket, last.get(ticket.id)) for ticket in tickets] or [
        ctx._("No open tickets. 🎉")
    ]
    keyboard: list[list[Button]] = [
        [Button(f"#{ticket.id}", TicketAdminCallback(ticket=ticket.id, action="view"))]
        for ticket in tickets
    ]
    keyboard.append([home_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


def card_keyboard(ctx: Context, ticket: TicketView) -> Keyboard:
    def button(label: str, action: Literal["reply", "resolve", "close"]) -> Button:
        return Button(label, TicketAdminCallback(ticket=ticket.id, action=action))

    rows: list[list[Button]] = []
    if ticket.status is not TicketStatus.CLOSED:
        rows.append([button(ctx._("✍️ Take and reply"), "reply")])
        finish = [button(ctx._("🔒 Close"), "close")]
        if ticket.status is not TicketStatus.RESOLVED:
            finish.insert(0, button(ctx._("✅ Resolve"), "resolve"))
        rows.append(finish)
    rows += [[Button(ctx._("« Queue"), AdminCallback(section="tickets"))], [home_button(ctx)]]
    return rows


async def show_ticket(ctx: Context, ticket_id: int, notice: str | None = None) -> None:
    ticket = await ctx.shop.tickets.get(ticket_id)
    member = await ctx.shop.members.get(ticket.member_id)
    messages = await ctx.shop.tickets.messages(ticket.id)
    last_author = messages[-1].author if messages else None
    lines = [notice, ""] if notice else []
    lines += [
        f"<b>{headline(ctx, ticket)}</b>",
        ctx._("Status: {status}").format(status=staff_status(ctx, ticket, last_author)),
    ]
    if awaiting_first_reply(ticket):
        lines.append(
            ctx._("Reply by: {time}").format(time=ctx.datetime(ticket.first_response_due))
            + f" · {countdown(ctx, ticket)}"
        )
        if urgent_window(ctx, ticket) is not None:
            # The tier in the headline would promise its own SLA: say why it is sooner.
            lines.append(deadline_reason(ctx, ctx, ticket))
    lines.append(
        ctx._("Member: {name} (id {telegram_id})").format(
            name=escape(member.display_name or member.username or ""),
            telegram_id=member.telegram_id,
        )
    )
    if ticket.order_id is not None:
        order = await ctx.shop.orders.get(ticket.member_id, ticket.order_id)
        lines.append(ctx._("Order: {order}").format(order=escape(order_label(ctx, order))))
    lines.append("")
    for message in messages[-SHOWN_MESSAGES:]:
        who = ctx._("Member") if message.author == "member" else ctx._("Support")
        lines.append(f"<b>{who}</b> · {ctx.datetime(message.created_at)}\n{clip(message.text)}")
    ctx.state.clear()
    await ctx.reply("\n".join(lines), card_keyboard(ctx, ticket))


@conversation.callback(TicketAdminCallback)
async def ticket_action(ctx: Context, data: TicketAdminCallback) -> None:
    ticket = await ctx.shop.tickets.get(data.ticket)
    match data.action:
        case "view":
            await show_ticket(ctx, ticket.id)
        case "reply":
            ctx.state.set(REPLY_STATE, ticket=ticket.id)
            back = Button(ctx._("« Back"), TicketAdminCallback(ticket=ticket.id, action="view"))
            await ctx.reply(
                ctx._("✍️ Ticket #{id}: send your answer; it goes to the member.").format(
                    id=ticket.id
                ),
                [[back]],
            )
        case "resolve":
            said = await resolve(ctx, ticket.id)
            resolved_now = ticket.status is not TicketStatus.RESOLVED
            await show_ticket(
                ctx,
                ticket.id,
                ctx._("✅ Resolved; the member was asked to rate.") if resolved_now else said,
            )
        case "close":
            closed = await ctx.shop.tickets.close(ticket.id)
            if ticket.status is not TicketStatus.CLOSED:
                t = await member_translator(ctx, closed.member_id)
                text = t._("🔒 <b>Ticket #{id}</b> has been closed. How did we do?").format(
                    id=closed.id
                )
                keyboard = rating_keyboard(t, closed.id, reopen=False)
                await deliver_to_member(ctx, closed, text, keyboard, None)
            await show_ticket(ctx, ticket.id, ctx._("🔒 Closed."))


@conversation.state(REPLY_STATE)
@admin_only
async def reply_input(ctx: Context) -> None:
    ticket_id = int(ctx.state.get("ticket"))
    text = ctx.incoming.text.strip()
    if ctx.incoming.kind != "text" or not text:
        await ctx.reply(ctx._("Only text reaches the member. Please answer in words."))
        return
    ticket = await ctx.shop.tickets.get(ticket_id)
    message = await ctx.shop.tickets.staff_reply(ticket.id, ctx.incoming.user_id, text)
    t = await member_translator(ctx, ticket.member_id)
    relay = "{header}\n{text}".format(
        header=t._("💬 <b>Ticket #{id}</b> · support replies:").format(id=ticket.id),
        text=clip(text),
    )
    delivered = await deliver_to_member(
        ctx, ticket, relay, ticket_keyboard(t, ticket.id), message.id
    )
    notice = (
        ctx._("✅ Sent to the member.")
        if delivered
        else ctx._("⚠️ The member has blocked the bot and did not get this.")
    )
    await show_ticket(ctx, ticket.id, notice)

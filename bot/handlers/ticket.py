"""/ticket (工单): a member asks for help, staff answer from the staff chat, the member rates.

The member picks a topic, optionally one of their orders, and writes; `shop.tickets`
opens the ticket with its tier deadline. Each member message is posted to the staff
chat and the id of that post is stored, so a staff reply-to finds its ticket by stored
id, never by parsing text (the lesson of the best support bots). Every relay back is
awaited and recorded; a member who blocked the bot pauses the ticket and staff are told.
"""

from __future__ import annotations

import logging
from typing import Literal

from bot.callbacks import BadCallbackError, Callback
from bot.conversation import (
    Button,
    Context,
    Conversation,
    Keyboard,
    UnreachableError,
    escape,
)
from bot.errors import render_error
from bot.handlers.start import MenuCallback, menu_button
from bot.i18n import N_, Translator
from bot.names import category_name
from core.errors import ErrorCode, ShopError
from core.members import MemberView
from core.orders import OrderView
from core.tickets import TicketStatus, TicketView

log = logging.getLogger(__name__)

conversation = Conversation("ticket")

#: How many of the member's latest orders are offered to attach to a ticket.
RECENT_ORDERS = 5
#: Tickets still open that /ticket lists with their buttons.
LISTED_TICKETS = 3
#: Longest member or staff text quoted in one relay (Telegram allows 4096 per message).
QUOTE_LIMIT = 3500
RATINGS = range(1, 6)

#: A ticket's state as its member reads it; an open one depends on who wrote last.
MEMBER_STATUS: dict[TicketStatus, str] = {
    TicketStatus.OPEN: N_("waiting for support"),
    TicketStatus.WAITING: N_("waiting for your answer"),
    TicketStatus.RESOLVED: N_("resolved"),
    TicketStatus.CLOSED: N_("closed"),
}
#: The same for staff, whose "waiting" is the member's turn.
STAFF_STATUS: dict[TicketStatus, str] = {
    TicketStatus.OPEN: N_("waiting for support"),
    TicketStatus.WAITING: N_("waiting for the member (deadline paused)"),
    TicketStatus.RESOLVED: N_("resolved"),
    TicketStatus.CLOSED: N_("closed"),
}


class TicketTopicCallback(Callback):
    prefix = "tktopic"
    category: str


class TicketOrderCallback(Callback):
    """The order the ticket is about; None: not about an order."""

    prefix = "tkorder"
    order: int | None


class TicketActionCallback(Callback):
    prefix = "tkact"
    action: Literal["write", "close"]
    ticket: int


class TicketRateCallback(Callback):
    prefix = "tkrate"
    ticket: int
    score: int


class TicketResolveCallback(Callback):
    """Staff's "resolve" button under a ticket in the staff chat."""

    prefix = "tkresolve"
    ticket: int


# --- wording ------------------------------------------------------------------------------


def member_status(t: Translator, ticket: TicketView, last_author: str | None) -> str:
    """What the member reads: an open ticket last answered by staff is not "waiting"."""
    if ticket.status is TicketStatus.OPEN and last_author == "staff":
        return t._("support has replied")
    return t._(MEMBER_STATUS[ticket.status])


def staff_status(t: Translator, ticket: TicketView, last_author: str | None) -> str:
    """What staff read: whose turn it is, so an answered ticket never says "waiting for support"."""
    answered = ticket.first_response_at is not None
    if ticket.status is TicketStatus.OPEN and answered:
        if last_author == "staff":
            return t._("answered, waiting for the member")
        if last_author == "member":
            return t._("the member wrote again, waiting for support")
    if ticket.status is TicketStatus.WAITING and answered:
        # The deadline was met already; only the member's turn is left to say.
        return t._("answered, waiting for the member")
    return t._(STAFF_STATUS[ticket.status])


def urgent_window(ctx: Context, ticket: TicketView) -> int | None:
    """Minutes of the urgent window when it, not the tier's SLA, set the deadline."""
    tier_minutes = ctx.shop.ladder.tier(ticket.tier_key).capabilities.sla_minutes
    window = ctx.shop.tickets.window(ticket.tier_key, ticket.category)
    minutes = int(window.total_seconds() // 60)
    return minutes if minutes < tier_minutes else None


def deadline_reason(t: Translator, ctx: Context, ticket: TicketView) -> str:
    """Why the first reply is due when it is, in the words /level uses for the tier's SLA."""
    urgent = urgent_window(ctx, ticket)
    if urgent is not None:
        return t._(
            "⚡ Urgent: tickets about “{category}” get a first reply within {window}."
        ).format(category=category_name(t, ticket.category), window=t.duration(urgent))
    tier = ctx.shop.ladder.tier(ticket.tier_key)
    return t._("At your level ({tier}), the first reply comes within {window}.").format(
        tier=escape(tier.name(t.locale)), window=t.duration(tier.capabilities.sla_minutes)
    )


def clip(text: str) -> str:
    """Text typed by a person, escaped and cut to fit one Telegram message with its header."""
    if len(text) > QUOTE_LIMIT:
        text = text[:QUOTE_LIMIT] + "…"
    return escape(text)


def staff_locale(ctx: Context) -> Translator:
    """The staff chat is shared, so it speaks the shop's default language."""
    return ctx.for_locale(ctx.shop.settings.default_locale)


def member_label(t: Translator, ctx: Context, member: MemberView) -> str:
    name = escape(member.display_name) or t._("(no name)")
    if member.username:
        name += " @" + escape(member.username)
    tier = escape(ctx.shop.ladder.tier(member.tier_key).name(t.locale))
    return t._("{name} (id {telegram_id}) · {tier}").format(
        name=name, telegram_id=member.telegram_id, tier=tier
    )


def order_label(t: Translator, order: OrderView) -> str:
    return f"#{order.id} {order.product_name(t.locale)} ×{order.quantity} · {t.money(order.total)}"


def ticket_keyboard(t: Translator, ticket_id: int) -> Keyboard:
    """What a member can do with an open ticket."""
    return [
        [
            Button(t._("✍️ Write more"), TicketActionCallback(action="write", ticket=ticket_id)),
            Button(t._("✅ Close ticket"), TicketActionCallback(action="close", ticket=ticket_id)),
        ],
        [Button(t._("« Main menu"), MenuCallback(item="home"))],
    ]


def rating_keyboard(t: Translator, ticket_id: int, *, reopen: bool) -> Keyboard:
    rows: list[list[Button]] = [
        [
            Button(f"{score}⭐", TicketRateCallback(ticket=ticket_id, score=score))
            for score in RATINGS
        ]
    ]
    if reopen:
        rows.append(
            [
                Button(
                    t._("✍️ I still need help"),
                    TicketActionCallback(action="write", ticket=ticket_id),
                )
            ]
        )
    rows.append([Button(t._("« Main menu"), MenuCallback(item="home"))])
    return rows


# --- the staff chat -----------------------------------------------------------------------


async def post_to_staff(ctx: Context, text: str, keyboard: Keyboard | None = None) -> int | None:
    """Post in the staff chat; None when there is none or the bot was removed from it.

    The ticket is already stored and stays in the staff queue either way, so a staff
    chat that cannot be reached never costs the member their ticket.
    """
    chat_id = ctx.shop.settings.staff_chat_id
    if chat_id is None:
        return None
    try:
        return await ctx.send(chat_id, text, keyboard)
    except UnreachableError:
        log.warning("the staff chat %s refuses the bot; tickets wait in the queue", chat_id)
        return None


async def relay_member_message(
    ctx: Context, ticket: TicketView, message_id: int, text: str, *, opened: bool
) -> None:
    """Show a member's message to staff and remember where, for their reply-to."""
    t = staff_locale(ctx)
    header = (
        t._("🆕 <b>Ticket #{id}</b> · {category}")
        if opened
        else t._("💬 <b>Ticket #{id}</b> · {category} · the member writes")
    )
    lines = [
        header.format(id=ticket.id, category=category_name(t, ticket.category)),
        t._("Member: {member}").format(member=member_label(t, ctx, ctx.member)),
    ]
    if ticket.order_id is not None:
        order = await ctx.shop.orders.get(ticket.member_id, ticket.order_id)
        lines.append(t._("Order: {order}").format(order=escape(order_label(t, order))))
    if ticket.first_response_at is None:
        lines.append(t._("Reply by: {time}").format(time=t.datetime(ticket.first_response_due)))
        if urgent_window(ctx, ticket) is not None:
            lines.append(deadline_reason(t, ctx, ticket))
    lines += [
        "",
        clip(text),
        "",
        t._("↩️ Reply to this message to answer; reply /resolve when done."),
    ]
    keyboard = [[Button(t._("✅ Resolve"), TicketResolveCallback(ticket=ticket.id))]]
    posted = await post_to_staff(ctx, "\n".join(lines), keyboard)
    if posted is not None:
        await ctx.shop.tickets.attach_staff_message(message_id, posted)


async def deliver_to_member(
    ctx: Context, ticket: TicketView, text: str, keyboard: Keyboard, message_id: int | None
) -> bool:
    """Send to the ticket's member from the staff chat; on a 403 pause it and tell staff."""
    delivered = False
    if ticket.member_telegram_id is not None:
        try:
            await ctx.send(ticket.member_telegram_id, text, keyboard)
            delivered = True
        except UnreachableError:
            await ctx.shop.members.set_reachable(ticket.member_id, False)
    if message_id is not None:
        await ctx.shop.tickets.mark_delivered(message_id, delivered)
    if not delivered:
        paused = await ctx.shop.tickets.member_unreachable(ticket.id)
        t = staff_locale(ctx)
        lines = [
            t._("⚠️ Ticket #{id}: the member has blocked the bot and did not get this.").format(
                id=ticket.id
            )
        ]
        if paused.status is TicketStatus.WAITING:
            lines.append(t._("The ticket waits for them, with its deadline paused."))
        await post_to_staff(ctx, "\n".join(lines))
    return delivered


async def member_translator(ctx: Context, member_id: int) -> Translator:
    member = await ctx.shop.members.get(member_id)
    return ctx.for_locale(member.locale or ctx.shop.settings.default_locale)


async def resolve(ctx: Context, ticket_id: int) -> str:
    """Resolve for staff, ask the member for a rating; the line to tell staff."""
    staff = staff_locale(ctx)
    if (await ctx.shop.tickets.get(ticket_id)).status is TicketStatus.RESOLVED:
        # A second press of the staff post's button: the member was asked to rate already.
        return staff._("Ticket #{id} is already resolved.").format(id=ticket_id)
    try:
        ticket = await ctx.shop.tickets.resolve(ticket_id, ctx.incoming.user_id)
    except ShopError as error:
        if error.code is not ErrorCode.TICKET_CLOSED:
            raise
        return staff._("Ticket #{id} is already closed.").format(id=ticket_id)
    t = await member_translator(ctx, ticket.member_id)
    text = t._("✅ <b>Ticket #{id}</b> has been resolved. How did we do?").format(id=ticket.id)
    await deliver_to_member(ctx, ticket, text, rating_keyboard(t, ticket.id, reopen=True), None)
    return staff._("✅ Ticket #{id} resolved.").format(id=ticket.id)


@conversation.staff_reply()
async def staff_answer(ctx: Context) -> bool:
    """A reply-to on a ticket post in the staff chat: an answer, or /resolve."""
    reply_to = ctx.incoming.reply_to_message_id
    if reply_to is None:
        return False
    ticket = await ctx.shop.tickets.by_staff_message(reply_to)
    if ticket is None:
        return False
    staff = staff_locale(ctx)
    if ctx.incoming.kind == "command":
        if ctx.incoming.command != "resolve":
            return False
        await post_to_staff(ctx, await resolve(ctx, ticket.id))
        return True
    text = ctx.incoming.text.strip()
    if ctx.incoming.kind != "text" or not text:
        await post_to_staff(ctx, staff._("Only text reaches the member. Please answer in words."))
        return True
    try:
        message = await ctx.shop.tickets.staff_reply(ticket.id, ctx.incoming.user_id, text)
    except ShopError as error:
        if error.code is not ErrorCode.TICKET_CLOSED:
            raise
        await post_to_staff(
            ctx,
            staff._("Ticket #{id} is closed; the member did not get this.").format(id=ticket.id),
        )
        return True
    if ctx.incoming.message_id is not None:
        await ctx.shop.tickets.attach_staff_message(message.id, ctx.incoming.message_id)
    t = await member_translator(ctx, ticket.member_id)
    relay = "{header}\n{text}".format(
        header=t._("💬 <b>Ticket #{id}</b> · support replies:").format(id=ticket.id),
        text=clip(text),
    )
    await deliver_to_member(ctx, ticket, relay, ticket_keyboard(t, ticket.id), message.id)
    return True


@conversation.callback(TicketResolveCallback)
async def resolve_button(ctx: Context, data: TicketResolveCallback) -> None:
    if ctx.chat_id != ctx.shop.settings.staff_chat_id:
        raise BadCallbackError("resolve pressed outside the staff chat")
    await ctx.answer(await resolve(ctx, data.ticket))


# --- the member's side --------------------------------------------------------------------


@conversation.command("ticket", description=N_("Contact support"))
@conversation.menu("ticket")
async def choose_topic(ctx: Context) -> None:
    ctx.state.clear()
    tickets = await ctx.shop.tickets.for_member(ctx.member.id)
    still_open = [t for t in tickets if t.status is not TicketStatus.CLOSED][:LISTED_TICKETS]
    last = await ctx.shop.tickets.last_authors([ticket.id for ticket in still_open])
    lines = [ctx._("💬 <b>Support</b>")]
    keyboard: list[list[Button]] = []
    if still_open:
        lines.append(ctx._("Your open tickets:"))
        for ticket in still_open:
            topic = category_name(ctx, ticket.category)
            status = member_status(ctx, ticket, last.get(ticket.id))
            lines.append(f"#{ticket.id} · {topic} · {status}")
            keyboard.append(
                [
                    Button(
                        ctx._("✍️ Write to #{id}").format(id=ticket.id),
                        TicketActionCallback(action="write", ticket=ticket.id),
                    ),
                    Button(
                        ctx._("✅ Close #{id}").format(id=ticket.id),
                        TicketActionCallback(action="close", ticket=ticket.id),
                    ),
                ]
            )
        lines.append("")
    lines.append(ctx._("What do you need help with? Pick a topic:"))
    topics = [
        Button(category_name(ctx, category), TicketTopicCallback(category=category))
        for category in ctx.shop.ladder.support.categories
    ]
    keyboard += [topics[i : i + 2] for i in range(0, len(topics), 2)]
    keyboard.append([menu_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


def cancel_button(ctx: Context) -> Button:
    return Button(ctx._("✖️ Cancel"), MenuCallback(item="ticket"))


def cancel_keyboard(ctx: Context) -> Keyboard:
    return [[cancel_button(ctx)]]


@conversation.callback(TicketTopicCallback)
async def topic_chosen(ctx: Context, data: TicketTopicCallback) -> None:
    if data.category not in ctx.shop.ladder.support.categories:
        raise BadCallbackError(f"unknown support category {data.category!r}")
    ctx.state.set("ticket:text", category=data.category, order_id=None)
    topic = ctx._("Topic: {topic}").format(topic=category_name(ctx, data.category))
    orders = await ctx.shop.orders.recent(ctx.member.id, limit=RECENT_ORDERS)
    if not orders:
        await ctx.reply(
            "{topic}\n{ask}".format(
                topic=topic, ask=ctx._("Please describe the problem in one message.")
            ),
            cancel_keyboard(ctx),
        )
        return
    keyboard: list[list[Button]] = [
        [Button(order_label(ctx, order), TicketOrderCallback(order=order.id))] for order in orders
    ]
    keyboard.append([Button(ctx._("Not about an order"), TicketOrderCallback(order=None))])
    keyboard.append([cancel_button(ctx)])
    ask = ctx._("Is it about one of these orders? Pick it, or just write your message now.")
    await ctx.reply(f"{topic}\n{ask}", keyboard)


@conversation.callback(TicketOrderCallback)
async def order_chosen(ctx: Context, data: TicketOrderCallback) -> None:
    if ctx.state.name != "ticket:text":
        raise BadCallbackError("an order picked outside a new ticket")
    lines = []
    if data.order is not None:
        order = await ctx.shop.orders.get(ctx.member.id, data.order)
        lines.append(ctx._("Order: {order}").format(order=escape(order_label(ctx, order))))
    ctx.state.update(order_id=data.order)
    lines.append(ctx._("Please describe the problem in one message."))
    await ctx.reply("\n".join(lines), cancel_keyboard(ctx))


@conversation.state("ticket:text")
async def ticket_text(ctx: Context) -> None:
    text = ctx.incoming.text.strip()
    if ctx.incoming.kind != "text" or not text:
        await ctx.reply(
            ctx._("Please describe the problem in a text message."), cancel_keyboard(ctx)
        )
        return
    category, order_id = ctx.state.get("category"), ctx.state.get("order_id")
    if not isinstance(category, str) or not (order_id is None or isinstance(order_id, int)):
        ctx.state.clear()
        await choose_topic(ctx)
        return
    ticket = await ctx.shop.tickets.open(ctx.member.id, category, text, order_id)
    ctx.state.set("ticket:followup", ticket=ticket.id)
    first = (await ctx.shop.tickets.messages(ticket.id))[0]
    await relay_member_message(ctx, ticket, first.id, text, opened=True)
    lines = [
        ctx._("✅ <b>Ticket #{id}</b> is open.").format(id=ticket.id),
        deadline_reason(ctx, ctx, ticket),
        ctx._("First reply by {time}.").format(time=ctx.datetime(ticket.first_response_due)),
        ctx._(
            "The answer arrives in this chat. Anything else you write now is added to the ticket."
        ),
    ]
    await ctx.reply("\n".join(lines), ticket_keyboard(ctx, ticket.id))


@conversation.state("ticket:followup")
async def follow_up(ctx: Context) -> None:
    ticket_id = ctx.state.get("ticket")
    text = ctx.incoming.text.strip()
    if not isinstance(ticket_id, int):
        ctx.state.clear()
        await choose_topic(ctx)
        return
    if ctx.incoming.kind != "text" or not text:
        await ctx.reply(
            ctx._("Please write your message as text."), ticket_keyboard(ctx, ticket_id)
        )
        return
    try:
        message = await ctx.shop.tickets.member_message(ticket_id, ctx.member.id, text)
    except ShopError as error:
        if error.code not in (ErrorCode.TICKET_CLOSED, ErrorCode.TICKET_NOT_FOUND):
            raise
        ctx.state.clear()
        await ctx.reply(render_error(error, ctx, ctx.shop.ladder), [[menu_button(ctx)]])
        return
    ticket = await ctx.shop.tickets.get(ticket_id, ctx.member.id)
    await relay_member_message(ctx, ticket, message.id, text, opened=False)
    await ctx.reply(
        ctx._("✉️ Added to ticket #{id}. We will answer here.").format(id=ticket_id),
        ticket_keyboard(ctx, ticket_id),
    )


@conversation.callback(TicketActionCallback)
async def ticket_action(ctx: Context, data: TicketActionCallback) -> None:
    if data.action == "write":
        ticket = await ctx.shop.tickets.get(data.ticket, ctx.member.id)
        if ticket.status is TicketStatus.CLOSED:
            await ctx.answer(ctx._("This ticket is closed. Please open a new one."), alert=True)
            return
        ctx.state.set("ticket:followup", ticket=ticket.id)
        await ctx.send(
            ctx.chat_id,
            ctx._("Write your message for ticket #{id}:").format(id=ticket.id),
            cancel_keyboard(ctx),
        )
        return
    ticket = await ctx.shop.tickets.close(data.ticket, member_id=ctx.member.id)
    if ctx.state.get("ticket") == ticket.id:
        ctx.state.clear()
    closed = ctx._("🔒 <b>Ticket #{id}</b> is closed.").format(id=ticket.id)
    # A new message: the button may sit under a staff answer, which must stay readable.
    if ticket.csat is None:
        ask = ctx._("How did we do? Rate us from 1 to 5:")
        await ctx.send(
            ctx.chat_id,
            f"{closed}\n{ask}",
            rating_keyboard(ctx, ticket.id, reopen=False),
        )
    else:
        await ctx.send(ctx.chat_id, closed, [[menu_button(ctx)]])
    staff = staff_locale(ctx)
    await post_to_staff(
        ctx, staff._("🔒 Ticket #{id} was closed by the member.").format(id=ticket.id)
    )


@conversation.callback(TicketRateCallback)
async def rate(ctx: Context, data: TicketRateCallback) -> None:
    ticket = await ctx.shop.tickets.rate(data.ticket, ctx.member.id, data.score)
    score = ticket.csat or data.score
    await ctx.reply(
        ctx._("Thank you! You rated ticket #{id}: {stars} ({score}/5).").format(
            id=ticket.id, stars="⭐" * score, score=score
        ),
        [[menu_button(ctx)]],
    )

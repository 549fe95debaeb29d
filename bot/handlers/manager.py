"""/manager (专属客户经理): "manager mode" for the top tiers, relayed both ways by stored ids.

While a diamond-or-above member is in manager mode, each text is recorded by
`shop.manager` and relayed to their assigned manager's private chat (or the staff
chat while none is assigned); the id of the relayed copy is stored, so the answer
finds its member by that id. Answers are signed with the manager's display name from
the database, so the member sees the shop and a name, never a staff account.

The framework routes reply-to messages only in the staff chat; in a manager's private
chat a reply-to falls through to the fallback. There the relayed message carries a
"Reply" button instead: it looks the member up by the tapped message's stored id in
that chat, and the manager's next texts go to that member.
"""

from __future__ import annotations

from typing import Literal

from bot.callbacks import BadCallbackError, Callback
from bot.conversation import Button, Context, Conversation, Keyboard, UnreachableError, escape
from bot.handlers.level import progress_bar
from bot.handlers.start import MenuCallback, menu_button
from bot.handlers.ticket import clip, member_label, post_to_staff, staff_locale
from bot.i18n import N_, Translator
from core.errors import ErrorCode, ShopError
from core.manager import ThreadRef

conversation = Conversation("manager")


class ManagerCallback(Callback):
    """`leave`: the member ends manager mode; `answer` / `done`: a manager starts or ends
    answering the member behind the relayed message the button sits under."""

    prefix = "mgr"
    action: Literal["leave", "answer", "done"]


def chat_keyboard(ctx: Context) -> Keyboard:
    return [[Button(ctx._("🚪 Leave manager mode"), ManagerCallback(action="leave"))]]


async def locale_of(ctx: Context, telegram_id: int | None) -> Translator:
    """Whoever receives a relay reads it in their own language, else the shop's."""
    person = await ctx.shop.members.by_telegram(telegram_id) if telegram_id is not None else None
    locale = person.locale if person and person.locale else ctx.shop.settings.default_locale
    return ctx.for_locale(locale)


# --- the member's side --------------------------------------------------------------------


@conversation.command("manager", description=N_("My dedicated manager"))
@conversation.menu("manager")
async def open_manager(ctx: Context) -> None:
    access = await ctx.shop.manager.access(ctx.member.id)
    if not access.allowed:
        await refuse(ctx, access.required_tier)
        return
    if access.manager is None and ctx.shop.settings.staff_chat_id is None:
        await ctx.reply(
            ctx._("Your dedicated manager is not assigned yet. Please open a support ticket."),
            [[Button(ctx._("💬 Support"), MenuCallback(item="ticket"))], [menu_button(ctx)]],
        )
        return
    ctx.state.set("manager:chat")
    if access.manager is not None:
        who = ctx._("Your dedicated manager {name} is here for you.").format(
            name=escape(access.manager.display_name)
        )
    else:
        who = ctx._("Our service team answers for you until your manager is assigned.")
    lines = [
        ctx._("👤 <b>Manager mode</b>"),
        who,
        ctx._("Everything you write now goes to them, and their answers arrive here."),
    ]
    await ctx.reply("\n".join(lines), [*chat_keyboard(ctx), [menu_button(ctx)]])


async def refuse(ctx: Context, required: str | None) -> None:
    """Which tier opens the manager channel, and how far the member is on the way."""
    ladder = ctx.shop.ladder
    if required is None:
        await ctx.reply(
            ctx._("A dedicated manager comes with the higher member levels."),
            [[menu_button(ctx)]],
        )
        return
    evaluation = await ctx.shop.tiers.evaluate(ctx.member.id)
    lines = [
        ctx._("👤 A dedicated manager comes with <b>{tier}</b> and above.").format(
            tier=escape(ladder.tier(required).name(ctx.locale))
        ),
        ctx._("Your level is {tier}.").format(
            tier=escape(ladder.tier(evaluation.tier).name(ctx.locale))
        ),
    ]
    if evaluation.next_tier is not None and evaluation.progress is not None:
        steps = ladder.index(required) - ladder.index(evaluation.tier)
        lines.append(
            ctx._("Next step: {tier} {bar}").format(
                tier=escape(ladder.tier(evaluation.next_tier).name(ctx.locale)),
                bar=progress_bar(evaluation.progress.percent),
            )
        )
        if steps > 1:
            lines.append(
                ctx.ngettext(
                    "{count} level to go to {tier}.", "{count} levels to go to {tier}.", steps
                ).format(count=steps, tier=escape(ladder.tier(required).name(ctx.locale)))
            )
    keyboard = [
        [Button(ctx._("⭐ My level"), MenuCallback(item="level"))],
        [Button(ctx._("💬 Support"), MenuCallback(item="ticket"))],
        [menu_button(ctx)],
    ]
    await ctx.reply("\n".join(lines), keyboard)


@conversation.state("manager:chat")
async def to_manager(ctx: Context) -> None:
    text = ctx.incoming.text.strip()
    if ctx.incoming.kind != "text" or not text:
        await ctx.reply(ctx._("Please write your message as text."), chat_keyboard(ctx))
        return
    try:
        target = await ctx.shop.manager.from_member(ctx.member.id, text)
    except ShopError as error:
        if error.code is not ErrorCode.NO_MANAGER_ACCESS:
            raise
        ctx.state.clear()
        await refuse(ctx, error.params.get("required"))
        return
    private = target.staff_telegram_id is not None
    chat_id = target.staff_telegram_id if private else ctx.shop.settings.staff_chat_id
    delivered = False
    if chat_id is not None:
        t = await locale_of(ctx, target.staff_telegram_id) if private else staff_locale(ctx)
        relay = "\n".join(
            [
                t._("👤 <b>Manager message</b> from {member}").format(
                    member=member_label(t, ctx, ctx.member)
                ),
                clip(text),
                "",
                t._("↩️ Tap Reply to answer.")
                if private
                else t._("↩️ Reply to this message to answer."),
            ]
        )
        keyboard = [[Button(t._("↩️ Reply"), ManagerCallback(action="answer"))]] if private else None
        try:
            relay_id = await ctx.send(chat_id, relay, keyboard)
        except UnreachableError:
            pass
        else:
            await ctx.shop.manager.attach_relay(target.message_id, relay_id)
            delivered = True
    await ctx.shop.manager.mark_delivered(target.message_id, delivered)
    if delivered:
        sent = ctx._("✓ Sent to {name}.").format(
            name=escape(target.manager_name) if target.manager_name else ctx._("our service team")
        )
        await ctx.reply(sent, chat_keyboard(ctx))
    else:
        await ctx.reply(
            ctx._(
                "Your manager cannot be reached right now. Your message is saved and we will"
                " get back to you."
            ),
            chat_keyboard(ctx),
        )


# --- the manager's side -------------------------------------------------------------------


async def answer_member(ctx: Context, thread: ThreadRef, t: Translator) -> str | None:
    """Send the manager's text to the member, signed; what to tell the manager, if anything."""
    text = ctx.incoming.text.strip()
    if ctx.incoming.kind != "text" or not text:
        return t._("Only text reaches the member. Please answer in words.")
    try:
        reply = await ctx.shop.manager.from_manager(thread.member_id, ctx.incoming.user_id, text)
    except ShopError as error:
        if error.code is not ErrorCode.STAFF_NOT_FOUND:
            raise
        return t._("You are not on the staff list, so the member did not get this.")
    delivered = False
    if thread.member_telegram_id is not None:
        member_t = await locale_of(ctx, thread.member_telegram_id)
        signed = "{header}\n{text}".format(
            header=member_t._("👤 <b>Your dedicated manager {name}:</b>").format(
                name=escape(reply.manager_name or "")
            ),
            text=clip(text),
        )
        keyboard = [[Button(member_t._("↩️ Reply"), MenuCallback(item="manager"))]]
        try:
            await ctx.send(thread.member_telegram_id, signed, keyboard)
            delivered = True
        except UnreachableError:
            await ctx.shop.members.set_reachable(thread.member_id, False)
    await ctx.shop.manager.mark_delivered(reply.id, delivered)
    if not delivered:
        return t._("⚠️ The member has blocked the bot and did not get this.")
    return None


@conversation.staff_reply()
async def staff_chat_answer(ctx: Context) -> bool:
    """A reply-to in the staff chat on a message relayed there (no manager assigned)."""
    reply_to = ctx.incoming.reply_to_message_id
    if reply_to is None or ctx.incoming.kind == "command":
        return False
    thread = await ctx.shop.manager.by_relay_message(reply_to, chat_id=None)
    if thread is None:
        return False
    note = await answer_member(ctx, thread, staff_locale(ctx))
    if note is not None:
        await post_to_staff(ctx, note)
    return True


@conversation.callback(ManagerCallback)
async def manager_button(ctx: Context, data: ManagerCallback) -> None:
    if data.action == "leave":
        if ctx.state.name == "manager:chat":
            ctx.state.clear()
        await ctx.reply(ctx._("You left manager mode."), [[menu_button(ctx)]])
        return
    if data.action == "done":
        if ctx.state.name == "manager:answer":
            ctx.state.clear()
        await ctx.reply(ctx._("Done. Tap Reply under a message to answer again."))
        return
    relay_id = ctx.incoming.callback_message_id
    thread = (
        await ctx.shop.manager.by_relay_message(relay_id, chat_id=ctx.chat_id)
        if relay_id is not None
        else None
    )
    if thread is None:
        raise BadCallbackError("no relayed manager message for this chat")
    ctx.state.set("manager:answer", relay=relay_id)
    member = await ctx.shop.members.get(thread.member_id)
    await ctx.send(
        ctx.chat_id,
        ctx._("Write your answer to {member}; every text goes to them until you tap Done.").format(
            member=escape(member.display_name) or member.telegram_id
        ),
        [[Button(ctx._("✔️ Done"), ManagerCallback(action="done"))]],
    )


@conversation.state("manager:answer")
async def manager_answers(ctx: Context) -> None:
    relay_id = ctx.state.get("relay")
    thread = (
        await ctx.shop.manager.by_relay_message(relay_id, chat_id=ctx.chat_id)
        if isinstance(relay_id, int)
        else None
    )
    if thread is None:
        ctx.state.clear()
        await ctx.reply(ctx._("That conversation can no longer be answered here."))
        return
    done = [[Button(ctx._("✔️ Done"), ManagerCallback(action="done"))]]
    note = await answer_member(ctx, thread, ctx)
    await ctx.reply(note or ctx._("✓ Delivered."), done)

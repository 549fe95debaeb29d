"""Admin: a broadcast to every member or one tier, with an optional link button.

The admin picks the audience, sends the text, optionally a button, sees a preview and
confirms. `AdminActions.start_broadcast` then stores the broadcast with its audience
(and its audit row); the bot's broadcaster (`bot.notifier.Broadcaster`) picks it up,
sends it at the shared pace and keeps the admin posted, and carries on after a restart.
"""

from __future__ import annotations

from bot.callbacks import BadCallbackError, Callback
from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.handlers.admin import (
    actor,
    admin_only,
    admins_only,
    home_button,
    operations,
    section,
)
from core.broadcast import AUDIENCE_ALL, BUTTON_TEXT_MAX, TEXT_MAX, URL_MAX, URL_SCHEMES
from core.broadcast import Button as LinkButton

conversation = Conversation("admin_broadcast", button_guard=admins_only)

TEXT_STATE = "adm_broadcast_text"
BUTTON_STATE = "adm_broadcast_button"
CONFIRM_STATE = "adm_broadcast_confirm"


class AudienceCallback(Callback):
    prefix = "admba"
    audience: str


class BroadcastCallback(Callback):
    """No button, send, or cancel, for the broadcast being written."""

    prefix = "admbs"
    action: str


def cancel_keyboard(ctx: Context) -> Keyboard:
    return [[Button(ctx._("✖️ Cancel"), BroadcastCallback(action="cancel"))]]


def audience_name(ctx: Context, audience: str) -> str:
    if audience == AUDIENCE_ALL:
        return ctx._("every member")
    return escape(ctx.shop.ladder.tier(audience).name(ctx.locale))


@section("broadcast")
async def choose_audience(ctx: Context) -> None:
    ctx.state.clear()
    buttons = [Button(ctx._("Everyone"), AudienceCallback(audience=AUDIENCE_ALL))]
    buttons += [
        Button(tier.name(ctx.locale), AudienceCallback(audience=tier.key))
        for tier in ctx.shop.ladder.tiers
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    await ctx.reply(ctx._("📣 <b>Broadcast</b>: who should get it?"), [*rows, [home_button(ctx)]])


@conversation.callback(AudienceCallback)
async def audience_chosen(ctx: Context, data: AudienceCallback) -> None:
    if data.audience != AUDIENCE_ALL:
        ctx.shop.ladder.tier(data.audience)
    ctx.state.set(TEXT_STATE, audience=data.audience)
    await ctx.reply(
        ctx._("📣 To {audience}. Send the message text (plain text).").format(
            audience=audience_name(ctx, data.audience)
        ),
        cancel_keyboard(ctx),
    )


@conversation.state(TEXT_STATE)
@admin_only
async def text_input(ctx: Context) -> None:
    text = ctx.incoming.text.strip()
    if ctx.incoming.kind != "text" or not text:
        await ctx.reply(ctx._("Please send the message as text."), cancel_keyboard(ctx))
        return
    if len(escape(text)) > TEXT_MAX:
        await ctx.reply(
            ctx._("That is too long for one message. Please shorten it."), cancel_keyboard(ctx)
        )
        return
    ctx.state.set(BUTTON_STATE, audience=ctx.state.get("audience"), text=text)
    keyboard = [[Button(ctx._("No button"), BroadcastCallback(action="nobutton"))]]
    await ctx.reply(
        ctx._(
            "Add a link button? Send its label and link, e.g."
            " <code>Shop now https://example.com</code>, or tap No button."
        ),
        [*keyboard, *cancel_keyboard(ctx)],
    )


def parse_button(text: str) -> LinkButton | None:
    """`Label words https://link` → the button; None when it is not that shape."""
    label, _, url = text.strip().rpartition(" ")
    label = label.strip()
    if not label or len(label) > BUTTON_TEXT_MAX:
        return None
    if not url.startswith(URL_SCHEMES) or len(url) > URL_MAX:
        return None
    return LinkButton(label, url)


@conversation.state(BUTTON_STATE)
@admin_only
async def button_input(ctx: Context) -> None:
    button = parse_button(ctx.incoming.text)
    if button is None:
        await ctx.reply(
            ctx.ngettext(
                "Please send the label, a space, then a link starting with https://"
                " (label up to {max} character), or tap No button.",
                "Please send the label, a space, then a link starting with https://"
                " (label up to {max} characters), or tap No button.",
                BUTTON_TEXT_MAX,
            ).format(max=BUTTON_TEXT_MAX),
            [
                [Button(ctx._("No button"), BroadcastCallback(action="nobutton"))],
                *cancel_keyboard(ctx),
            ],
        )
        return
    await preview(ctx, button)


async def preview(ctx: Context, button: LinkButton | None) -> None:
    audience = str(ctx.state.get("audience"))
    text = str(ctx.state.get("text"))
    ctx.state.set(
        CONFIRM_STATE,
        audience=audience,
        text=text,
        button=[button.text, button.url] if button else None,
    )
    lines = [
        ctx._("📣 <b>Preview</b> · to {audience}").format(audience=audience_name(ctx, audience)),
        "",
        escape(text),
    ]
    if button is not None:
        lines += [
            "",
            f"🔗 [{escape(button.text)}] {escape(button.url)}",
        ]
    keyboard = [[Button(ctx._("✅ Send now"), BroadcastCallback(action="send"))]]
    await ctx.reply("\n".join(lines), [*keyboard, *cancel_keyboard(ctx)])


@conversation.callback(BroadcastCallback)
async def broadcast_action(ctx: Context, data: BroadcastCallback) -> None:
    if data.action == "cancel":
        ctx.state.clear()
        await ctx.answer(ctx._("Cancelled."))
        await choose_audience(ctx)
    elif data.action == "nobutton" and ctx.state.name == BUTTON_STATE:
        await preview(ctx, None)
    elif data.action == "send" and ctx.state.name == CONFIRM_STATE:
        stored = ctx.state.get("button")
        button = LinkButton(stored[0], stored[1]) if stored else None
        broadcast, recipients = await operations(ctx).admin.start_broadcast(
            actor(ctx), str(ctx.state.get("audience")), str(ctx.state.get("text")), button
        )
        ctx.state.clear()
        await ctx.reply(
            ctx.ngettext(
                "📣 Broadcast #{id} is on its way to {count} member. Progress follows here.",
                "📣 Broadcast #{id} is on its way to {count} members. Progress follows here.",
                recipients,
            ).format(id=broadcast.id, count=ctx.number(recipients)),
            [[home_button(ctx)]],
        )
    else:
        raise BadCallbackError(f"{data.action!r} does not fit state {ctx.state.name!r}")

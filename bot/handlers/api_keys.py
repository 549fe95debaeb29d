"""🔑 API (API接口对接): a reseller's own keys for the signed HTTP API, in chat.

Reached from the main menu and /level (only for tiers with `api`) and /api. The list
shows each key's public id, label, when it was made and last used, never its secret.
A new key takes an optional label typed as text (or Skip), and its secret is shown in
that one message only: the shop keeps it encrypted and never prints it again, and the
"I have saved it" button turns the message back into the list, so the secret does not
stay in the chat either. Revoking asks first, since programs using the key stop at once.

Every button of this screen is refused, before its data is read, for a member whose
tier lacks `api` (`API_NOT_ALLOWED`, said like any refusal): a forged or stale button
changes nothing. A downgraded member keeps their keys (they answer 403 until the tier
returns) and sees this screen again with it.
"""

from __future__ import annotations

from typing import Literal

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.errors import render_error
from bot.handlers.start import MenuCallback, menu_button, offers_api
from bot.i18n import N_
from core.api_keys import LABEL_MAX, ApiKeyView
from core.errors import ErrorCode, ShopError

#: Where the HTTP server serves the human docs page, under PUBLIC_URL or HTTP_LISTEN.
DOCS_PATH = "/api/v1/docs"
#: Typing the new key's label.
LABEL = "api:label"


class ApiKeysCallback(Callback):
    """The key list, starting a new key, or issuing it without a label."""

    prefix = "apikeys"
    action: Literal["list", "new", "skip"]


class ApiKeyCallback(Callback):
    """Revoking one key: the confirmation, then the revoke."""

    prefix = "apikey"
    key: str
    action: Literal["revoke", "confirm"]


def require_api(ctx: Context) -> None:
    """Refuse a member whose tier has no API access ("your level does not include it")."""
    if not offers_api(ctx):
        raise ShopError(ErrorCode.API_NOT_ALLOWED)


async def api_members_only(ctx: Context) -> bool:
    """Every button's guard: runs before the data is parsed, so any forged press by a
    member without API access gets the same refusal and changes nothing."""
    require_api(ctx)
    return True


conversation = Conversation("api_keys", button_guard=api_members_only)


def docs_line(ctx: Context) -> str:
    """Where the API is documented: the public address when the shop has one."""
    root = ctx.shop.settings.public_url
    if root:
        return ctx._("API documentation: {url}").format(url=escape(root + DOCS_PATH))
    return ctx._("The API documentation is at {path} on the shop's HTTP address.").format(
        path=DOCS_PATH
    )


def key_line(ctx: Context, key: ApiKeyView) -> str:
    label = escape(key.label) if key.label else ctx._("(no label)")
    used = ctx._("never") if key.last_used_at is None else ctx.datetime(key.last_used_at)
    return ctx._("<code>{key_id}</code> {label}\n    created {created} · last used {used}").format(
        key_id=key.key_id, label=label, created=ctx.datetime(key.created_at), used=used
    )


def back_to_keys(ctx: Context) -> Button:
    return Button(ctx._("« My API keys"), ApiKeysCallback(action="list"))


async def show_keys(ctx: Context, *, notice: str | None = None) -> None:
    """The member's live keys, a button to add one and one to revoke each."""
    caps = ctx.shop.ladder.tier(ctx.member.tier_key).capabilities
    keys = await ctx.shop.api_keys.list(ctx.member.id)
    lines = [notice, ""] if notice else []
    lines += [
        ctx._("🔑 <b>API keys</b>"),
        ctx.ngettext(
            "Your level allows {count} key at a time, {rate} requests a minute each.",
            "Your level allows {count} keys at a time, {rate} requests a minute each.",
            caps.api_keys_max,
        ).format(
            count=ctx.number(caps.api_keys_max), rate=ctx.number(caps.api_requests_per_minute)
        ),
        docs_line(ctx),
        "",
    ]
    lines += [key_line(ctx, key) for key in keys] or [ctx._("You have no API keys yet.")]
    keyboard: list[list[Button]] = [[Button(ctx._("➕ New key"), ApiKeysCallback(action="new"))]]
    keyboard += [
        [
            Button(
                ctx._("🗑 Revoke {key_id}").format(key_id=key.key_id),
                ApiKeyCallback(key=key.key_id, action="revoke"),
            )
        ]
        for key in keys
    ]
    keyboard.append([Button(ctx._("⭐ My level"), MenuCallback(item="level")), menu_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


@conversation.command("api", description=N_("My API keys"))
@conversation.menu("api")
async def open_keys(ctx: Context) -> None:
    require_api(ctx)
    await show_keys(ctx)


@conversation.callback(ApiKeysCallback)
async def keys_action(ctx: Context, data: ApiKeysCallback) -> None:
    match data.action:
        case "list":
            ctx.state.clear()
            await show_keys(ctx)
        case "new":
            await ask_label(ctx)
        case "skip":
            # A second tap of Skip finds the label step over: the key was issued once.
            if ctx.state.name != LABEL:
                await show_keys(ctx)
                return
            await issue(ctx, None)


def label_keyboard(ctx: Context) -> Keyboard:
    return [
        [Button(ctx._("Skip »"), ApiKeysCallback(action="skip"))],
        [back_to_keys(ctx)],
    ]


def label_prompt(ctx: Context) -> str:
    return ctx.ngettext(
        "Send a label for the new key (up to {max} character), e.g. the site that will use"
        " it, or tap Skip.",
        "Send a label for the new key (up to {max} characters), e.g. the site that will use"
        " it, or tap Skip.",
        LABEL_MAX,
    ).format(max=ctx.number(LABEL_MAX))


async def ask_label(ctx: Context) -> None:
    """Start a new key, unless the member already holds as many as the tier allows."""
    cap = ctx.shop.ladder.tier(ctx.member.tier_key).capabilities.api_keys_max
    if len(await ctx.shop.api_keys.list(ctx.member.id)) >= cap:
        refusal = ShopError(ErrorCode.API_KEY_LIMIT, max=cap)
        await show_keys(ctx, notice=render_error(refusal, ctx, ctx.shop.ladder))
        return
    ctx.state.set(LABEL)
    await ctx.reply(label_prompt(ctx), label_keyboard(ctx))


@conversation.state(LABEL)
async def label_typed(ctx: Context) -> None:
    label = ctx.incoming.text.strip()
    if not label or len(label) > LABEL_MAX or not label.isprintable():
        await ctx.reply(label_prompt(ctx), label_keyboard(ctx))
        return
    await issue(ctx, label)


async def issue(ctx: Context, label: str | None) -> None:
    """Issue the key and show its secret this once; a refusal (the cap reached from
    another device, the tier lost meanwhile) ends the step and shows the list."""
    ctx.state.clear()
    try:
        issued = await ctx.shop.api_keys.issue(ctx.member.id, label=label)
    except ShopError as refusal:
        await show_keys(ctx, notice=render_error(refusal, ctx, ctx.shop.ladder))
        return
    lines = [
        ctx._("✅ <b>New API key</b>"),
        ctx._("Key id: <code>{key_id}</code>").format(key_id=issued.key.key_id),
        ctx._("Secret: <code>{secret}</code>").format(secret=escape(issued.secret)),
        "",
        ctx._(
            "⚠️ Copy the secret now and keep it safe: it is shown only this once, and anyone"
            " holding it can buy with your balance. If it leaks, revoke the key."
        ),
        ctx._("Sign each request with it as the documentation shows."),
        docs_line(ctx),
    ]
    saved = Button(ctx._("✅ I have saved it"), ApiKeysCallback(action="list"))
    await ctx.reply("\n".join(lines), [[saved]])


async def owned_key(ctx: Context, key_id: str) -> ApiKeyView:
    """One of the member's live keys; API_KEY_NOT_FOUND for anything else."""
    for key in await ctx.shop.api_keys.list(ctx.member.id):
        if key.key_id == key_id:
            return key
    raise ShopError(ErrorCode.API_KEY_NOT_FOUND, key=key_id)


@conversation.callback(ApiKeyCallback)
async def key_action(ctx: Context, data: ApiKeyCallback) -> None:
    ctx.state.clear()
    match data.action:
        case "revoke":
            key = await owned_key(ctx, data.key)
            label = escape(key.label) if key.label else ctx._("(no label)")
            text = ctx._(
                "Revoke the key <code>{key_id}</code> {label}? Programs using it stop"
                " working at once; this cannot be undone."
            ).format(key_id=key.key_id, label=label)
            confirm = ApiKeyCallback(key=key.key_id, action="confirm")
            await ctx.reply(
                text,
                [[Button(ctx._("✅ Yes, revoke"), confirm)], [back_to_keys(ctx)]],
            )
        case "confirm":
            # Revoking twice (a double tap) changes nothing the second time.
            revoked = await ctx.shop.api_keys.revoke(ctx.member.id, data.key)
            notice = ctx._("🗑 The key <code>{key_id}</code> is revoked.").format(
                key_id=revoked.key_id
            )
            await show_keys(ctx, notice=notice)

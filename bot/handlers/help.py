"""/help, and the hint for anything the bot does not understand."""

from __future__ import annotations

from bot.conversation import Context, Conversation, escape
from bot.handlers.start import menu_button
from bot.i18n import N_

conversation = Conversation("help")


@conversation.command("help", description=N_("What I can do"))
async def help_command(ctx: Context) -> None:
    lines = [ctx._("<b>Commands</b>")]
    lines += [f"/{name} — {text}" for name, text in ctx.registry.command_menu(ctx)]
    lines.append(ctx._("Or just tap the buttons under my messages."))
    await ctx.reply("\n".join(lines), [[menu_button(ctx)]])


@conversation.fallback()
async def unknown(ctx: Context) -> None:
    if ctx.incoming.kind == "command":
        text = ctx._("I don't know the command /{command}. Send /help to see what I can do.")
        text = text.format(command=escape(ctx.incoming.command or ""))
    else:
        text = ctx._("Please use the buttons below, or send /help to see what I can do.")
    await ctx.reply(text, [[menu_button(ctx)]])

"""What the bot says about what it does not read: edits, media, commands in groups.

The runtime decides when these are said (`Runtime.dispatch`); they only say it. An
edit or a photo, sticker, voice message… while the member is asked for something is
answered, so the member is not left waiting for a reply that will not come; outside, an
edit is dropped and media gets the usual hint. A command in a group is answered with a
link to the private chat, where the shop is: a group's members would see each other's
balances and orders there.
"""

from __future__ import annotations

from bot.conversation import Button, Context, Conversation

conversation = Conversation("elsewhere")


@conversation.notice("edited")
async def edited(ctx: Context) -> None:
    await ctx.reply(ctx._("I do not read edited messages. Please send it again as a new message."))


@conversation.notice("media")
async def media(ctx: Context) -> None:
    await ctx.reply(
        ctx._(
            "Please type your answer as a text message: I cannot read photos, stickers,"
            " voice messages or other media here."
        )
    )


@conversation.notice("group_command")
async def group_command(ctx: Context) -> None:
    text = ctx._("Please talk to me in a private chat: your orders and balance stay between us.")
    username = ctx.incoming.bot_username
    if username is None:
        await ctx.reply(text)
    else:
        await ctx.reply(
            text, [[Button(ctx._("Open a private chat"), url=f"https://t.me/{username}")]]
        )

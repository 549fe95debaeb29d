"""/lang: switch between 简体中文 and English; remembered on the member."""

from __future__ import annotations

from typing import Literal, get_args

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation
from bot.handlers.start import greeting, main_menu
from bot.i18n import N_

conversation = Conversation("language")

Locale = Literal["zh_CN", "en"]

#: Each language named in itself, so anyone can find their own.
LANGUAGE_NAMES: dict[Locale, str] = {"zh_CN": "简体中文", "en": "English"}


class LanguageCallback(Callback):
    prefix = "lang"
    locale: Locale


@conversation.command("lang", "language", description=N_("Change language"))
async def lang(ctx: Context) -> None:
    """`/lang` offers the choice; `/lang en` or `/lang zh_CN` switches at once."""
    wanted = ctx.incoming.args.strip()
    if wanted in get_args(Locale):
        await switch_to(ctx, wanted)
    else:
        await choose(ctx)


@conversation.menu("language")
async def choose(ctx: Context) -> None:
    current = next((n for code, n in LANGUAGE_NAMES.items() if code == ctx.locale), ctx.locale)
    keyboard = [
        [Button(name, LanguageCallback(locale=code)) for code, name in LANGUAGE_NAMES.items()]
    ]
    await ctx.reply(
        ctx._("Current language: {language}\nChoose a language:").format(language=current),
        keyboard,
    )


@conversation.callback(LanguageCallback)
async def chosen(ctx: Context, data: LanguageCallback) -> None:
    await switch_to(ctx, data.locale)


async def switch_to(ctx: Context, locale: str) -> None:
    await ctx.shop.members.set_locale(ctx.member.id, locale)
    ctx.use_locale(locale)
    await ctx.answer(ctx._("Language set to English."))
    await ctx.reply(greeting(ctx), main_menu(ctx))

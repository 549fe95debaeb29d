"""👥 Referrals (推广): the member's invite link, who joined and bought, commission earned.

Reached from /level and the /referrals command (the main menu is full). The link is the
bot's deep link `?start=ref_CODE` that /start already reads; where the bot has no
username (the terminal chat) the code alone is shown, since a link would be wrong. Names
of referred members are masked: the referrer learns that someone bought, not who.
"""

from __future__ import annotations

from bot.conversation import Button, Context, Conversation, escape
from bot.handlers.start import MenuCallback, menu_button
from bot.i18n import N_
from core.commission import ReferralSummary

conversation = Conversation("referrals")


def invite_line(ctx: Context, code: str) -> str:
    """The deep link when the bot has a username, else the code to type after /start."""
    username = ctx.incoming.bot_username
    if username:
        link = f"https://t.me/{username}?start=ref_{code}"
        return ctx._("Your invite link: {link}").format(link=escape(link))
    return ctx._(
        "Your referral code: <code>{code}</code> (new members send /start ref_{code})"
    ).format(code=escape(code))


def referrals_text(ctx: Context, summary: ReferralSummary, percent: int) -> str:
    lines = [ctx._("👥 <b>Referrals</b>"), invite_line(ctx, summary.code), ""]
    if percent:
        lines.append(
            ctx._("Your tier earns {percent} of what the members you brought buy.").format(
                percent=f"{percent}%"
            )
        )
    else:
        lines.append(ctx._("Your tier earns no commission yet; a higher tier does."))
    lines += [
        ctx.ngettext(
            "{count} member joined with your code",
            "{count} members joined with your code",
            summary.joined,
        ).format(count=ctx.number(summary.joined)),
        ctx.ngettext(
            "{count} of them bought in the past year",
            "{count} of them bought in the past year",
            summary.bought,
        ).format(count=ctx.number(summary.bought)),
        ctx._("Commission earned: {amount}").format(amount=ctx.money(summary.earned)),
    ]
    if summary.recent:
        lines += ["", ctx._("<b>Latest commission</b>")]
        lines += [
            ctx._("{date} {name} +{amount}").format(
                date=ctx.datetime(line.at),
                name=escape(line.buyer_name),
                amount=ctx.money(line.amount),
            )
            for line in summary.recent
        ]
    return "\n".join(lines)


@conversation.command("referrals", description=N_("My referrals and commission"))
@conversation.menu("referrals")
async def show_referrals(ctx: Context) -> None:
    summary = await ctx.shop.referrals.summary(ctx.member.id)
    capabilities = ctx.shop.ladder.tier(ctx.member.tier_key).capabilities
    percent = capabilities.commission_percent if capabilities.referral_commission else 0
    keyboard = [
        [Button(ctx._("⭐ My level"), MenuCallback(item="level"))],
        [menu_button(ctx)],
    ]
    await ctx.reply(referrals_text(ctx, summary, percent), keyboard)

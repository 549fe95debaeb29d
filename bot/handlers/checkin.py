"""/checkin (签到): today's points, the streak, what tomorrow brings, and any new tier.

`shop.checkins` decides everything (one per shop-local day, points by streak and tier);
a second try the same day is answered with when the next one opens rather than an
error, because "come back tomorrow at 00:00" is what the member wants to know.
"""

from __future__ import annotations

from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.handlers.level import reward_lines
from bot.handlers.start import MenuCallback, menu_button
from bot.i18n import N_
from core.errors import ErrorCode, ShopError

conversation = Conversation("checkin")


def checkin_keyboard(ctx: Context) -> Keyboard:
    return [
        [Button(ctx._("⭐ My level"), MenuCallback(item="level"))],
        [menu_button(ctx)],
    ]


def streak_text(ctx: Context, days: int) -> str:
    return ctx.ngettext(
        "Streak: {count} day in a row", "Streak: {count} days in a row", days
    ).format(count=ctx.number(days))


def tomorrow_text(ctx: Context, points: int) -> str:
    return ctx.ngettext(
        "Come back tomorrow for +{points} point.",
        "Come back tomorrow for +{points} points.",
        points,
    ).format(points=ctx.number(points))


@conversation.command("checkin", description=N_("Daily check-in for points"))
@conversation.menu("checkin")
async def check_in(ctx: Context) -> None:
    before = ctx.member.tier_key
    try:
        result = await ctx.shop.checkins.check_in(ctx.member.id)
    except ShopError as error:
        if error.code is not ErrorCode.ALREADY_CHECKED_IN:
            raise
        await already_checked_in(ctx)
        return
    lines = [
        ctx.ngettext(
            "✅ <b>Checked in!</b> +{points} point",
            "✅ <b>Checked in!</b> +{points} points",
            result.points,
        ).format(points=ctx.number(result.points)),
        streak_text(ctx, result.streak),
        tomorrow_text(ctx, result.tomorrow_points),
        ctx._("Points balance: {points}").format(points=ctx.number(result.available)),
    ]
    after = (await ctx.shop.members.get(ctx.member.id)).tier_key
    if after != before:
        ladder = ctx.shop.ladder
        name = escape(ladder.tier(after).name(ctx.locale))
        if ladder.index(after) > ladder.index(before):
            lines.append(ctx._("🎉 Congratulations! Your level is now {tier}.").format(tier=name))
        else:
            lines.append(ctx._("Your level is now {tier}.").format(tier=name))
    lines += reward_lines(ctx, ctx.shop.ladder, result.rewards)
    await ctx.reply("\n".join(lines), checkin_keyboard(ctx))


async def already_checked_in(ctx: Context) -> None:
    status = await ctx.shop.checkins.status(ctx.member.id)
    lines = [
        ctx._("You have already checked in today. Come back after {time}.").format(
            time=ctx.datetime(status.next_at)
        ),
        streak_text(ctx, status.streak),
        tomorrow_text(ctx, status.tomorrow_points),
    ]
    await ctx.reply("\n".join(lines), checkin_keyboard(ctx))

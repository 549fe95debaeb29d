"""Admin: the referral report (分销), one line per referrer, a page at a time.

The numbers are core's (`Referrals.report`, the same the `cardshop referrals` command
prints): members who joined with the referrer's code, how many of them bought in the
last 365 days, the commission kept (net of refunds) and what refunds took back. The
admin sees referrers by name and id, unmasked, unlike the referrer's own screen.
"""

from __future__ import annotations

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, escape
from bot.handlers.admin import admins_only, home_button, section
from core.commission import ACTIVE_DAYS, ReferrerRow

conversation = Conversation("admin_referrals", button_guard=admins_only)

#: Referrers on one page, most commission first.
PAGE_SIZE = 10


class ReferralReportCallback(Callback):
    """A page of the referral report."""

    prefix = "admref"
    page: int


def row_text(ctx: Context, row: ReferrerRow) -> str:
    name = escape(row.name) or ctx._("(no name)")
    return "\n".join(
        (
            ctx._("<b>{name}</b> · member #{id}").format(name=name, id=row.member_id),
            "    "
            + ctx.ngettext(
                "{joined} joined, {bought} bought in the last {days} day",
                "{joined} joined, {bought} bought in the last {days} days",
                ACTIVE_DAYS,
            ).format(
                joined=ctx.number(row.joined),
                bought=ctx.number(row.bought),
                days=ctx.number(ACTIVE_DAYS),
            ),
            "    "
            + ctx._("Commission {earned} net, {reversed} taken back on refunds").format(
                earned=ctx.money(row.earned), reversed=ctx.money(row.reversed)
            ),
        )
    )


async def show_page(ctx: Context, page: int) -> None:
    rows = await ctx.shop.referrals.report()
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    lines = [ctx._("👥 <b>Referrals</b>")]
    if pages > 1:
        lines.append(
            ctx._("Page {page} of {pages}").format(page=ctx.number(page), pages=ctx.number(pages))
        )
    lines.append("")
    lines += [row_text(ctx, row) for row in shown] or [ctx._("Nobody has referred a member yet.")]
    paging: list[Button] = []
    if page > 1:
        paging.append(Button(ctx._("‹ Previous"), ReferralReportCallback(page=page - 1)))
    if page < pages:
        paging.append(Button(ctx._("Next ›"), ReferralReportCallback(page=page + 1)))
    keyboard = [paging] if paging else []
    keyboard.append([home_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


@section("referrals")
async def referrals_section(ctx: Context) -> None:
    await show_page(ctx, 1)


@conversation.callback(ReferralReportCallback)
async def report_page(ctx: Context, data: ReferralReportCallback) -> None:
    await show_page(ctx, data.page)

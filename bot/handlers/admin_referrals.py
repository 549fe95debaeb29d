"""Admin: the referral report (分销), one line per referrer, a page at a time.

The numbers are core's (`Referrals.report`, the same the `cardshop referrals` command
prints): members who joined with the referrer's code, how many of them bought in the
last 365 days, the commission kept (net of refunds) and what refunds took back. The
admin sees referrers by name and id, unmasked, unlike the referrer's own screen.
"""

from __future__ import annotations

from bot.callbacks import Callback
from bot.conversation import Context, Conversation, escape
from bot.handlers.admin import admins_only, home_button, section
from bot.paging import page_line, paging_row
from core.catalog import Page
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
    shown = Page.of(await ctx.shop.referrals.report(), page, PAGE_SIZE)
    lines = [ctx._("👥 <b>Referral report</b>"), *page_line(ctx, shown), ""]
    lines += [row_text(ctx, row) for row in shown.items] or [
        ctx._("Nobody has referred a member yet.")
    ]
    keyboard = paging_row(ctx, shown.page, shown.has_next, lambda n: ReferralReportCallback(page=n))
    keyboard.append([home_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


@section("referrals")
async def referrals_section(ctx: Context) -> None:
    await show_page(ctx, 1)


@conversation.callback(ReferralReportCallback)
async def report_page(ctx: Context, data: ReferralReportCallback) -> None:
    await show_page(ctx, data.page)

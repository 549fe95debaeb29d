"""Admin: shop statistics with a chart, and CSV exports of orders and the ledger.

Numbers come from `core.stats.Stats` for the shop's calendar days; the chart is
`core.chart.render_chart` (drawn in a thread, since drawing is CPU work). Exports are
core's CSV bytes sent as a document, each written to the audit log like the shell's.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Literal

from bot.callbacks import BadCallbackError, Callback
from bot.conversation import Button, Context, Conversation, Keyboard
from bot.handlers.admin import (
    AdminCallback,
    actor,
    admin_only,
    admins_only,
    home_button,
    operations,
    section,
)
from bot.i18n import N_
from bot.payments import method_name
from core.chart import render_chart
from core.stats import StatsSummary

conversation = Conversation("admin_stats", button_guard=admins_only)

#: The windows offered: today, a week, a month.
WINDOWS = (1, 7, 30)
EXPORT_STATE = "adm_export"
Kind = Literal["orders", "ledger"]
KIND_NAMES: dict[Kind, str] = {"orders": N_("Orders"), "ledger": N_("Wallet ledger")}


class StatsCallback(Callback):
    prefix = "admst"
    days: int


class StatsExportCallback(Callback):
    """Export `kind`; without `days` choose the range first."""

    prefix = "admex"
    kind: Kind
    days: int | None


def window_label(ctx: Context, days: int) -> str:
    if days == 1:
        return ctx._("Today")
    return ctx.ngettext("{count} day", "{count} days", days).format(count=days)


def windows_row(ctx: Context, make: type[StatsCallback]) -> list[Button]:
    return [Button(window_label(ctx, days), make(days=days)) for days in WINDOWS]


def percent(ctx: Context, value: float | None) -> str:
    return "—" if value is None else f"{ctx.number(round(value))}%"


def money_in_line(ctx: Context, summary: StatsSummary) -> str:
    """Top-ups credited in the window and kept, in all and by payment method (most first)."""
    total = sum(each.amount for each in summary.top_ups.values())
    methods = ctx._(", ").join(
        ctx._("{method} {amount} ×{count}").format(
            method=method_name(ctx, method),
            amount=ctx.money(each.amount),
            count=ctx.number(each.count),
        )
        for method, each in sorted(
            summary.top_ups.items(), key=lambda item: (-item[1].amount, item[0])
        )
    )
    return ctx._("Money in: {amount} ({methods})").format(
        amount=ctx.money(total), methods=methods or "—"
    )


def summary_text(ctx: Context, summary: StatsSummary) -> str:
    tickets = summary.tickets
    tiers = ctx._(", ").join(
        f"{ctx.shop.ladder.tier(key).name(ctx.locale)} {ctx.number(count)}"
        for key, count in summary.tier_distribution.items()
    )
    lines = [
        ctx._("📊 <b>{window}</b> ({start} – {end})").format(
            window=window_label(ctx, summary.days), start=summary.date_from, end=summary.date_to
        ),
        ctx._("Revenue: {amount} from {orders} ({codes})").format(
            amount=ctx.money(summary.revenue),
            orders=ctx.ngettext("{count} order", "{count} orders", summary.orders).format(
                count=ctx.number(summary.orders)
            ),
            codes=ctx.ngettext("{count} code", "{count} codes", summary.codes_sold).format(
                count=ctx.number(summary.codes_sold)
            ),
        ),
        ctx._("Refunds: {count}, {amount}").format(
            count=ctx.number(summary.refunds), amount=ctx.money(summary.refunded)
        ),
        money_in_line(ctx, summary),
        ctx._("New members: {members} · check-ins: {checkins}").format(
            members=ctx.number(summary.new_members), checkins=ctx.number(summary.checkins)
        ),
        ctx._("Tickets: {opened} opened, {answered} answered, SLA met {sla}, CSAT {csat}").format(
            opened=ctx.number(tickets.opened),
            answered=ctx.number(tickets.answered),
            sla=percent(ctx, tickets.sla_met_percent),
            csat="—" if tickets.mean_csat is None else f"{tickets.mean_csat:.1f}",
        ),
        ctx._("Members by level: {tiers}").format(tiers=tiers or "—"),
    ]
    return "\n".join(lines)


@section("stats")
async def stats_section(ctx: Context) -> None:
    await ctx.reply(
        ctx._("📊 <b>Stats</b>: which period?"),
        [windows_row(ctx, StatsCallback), [home_button(ctx)]],
    )


@conversation.callback(StatsCallback)
async def show_stats(ctx: Context, data: StatsCallback) -> None:
    if data.days not in WINDOWS:
        raise BadCallbackError(f"no {data.days}-day window")
    stats = operations(ctx).stats
    summary = await stats.summary(data.days)
    keyboard: Keyboard = [windows_row(ctx, StatsCallback), [home_button(ctx)]]
    await ctx.reply(summary_text(ctx, summary), keyboard)
    points = await stats.daily(data.days)
    title = ctx._("Revenue and orders: {window}").format(window=window_label(ctx, data.days))
    png = await asyncio.to_thread(
        render_chart,
        points,
        title,
        revenue_label=ctx._("Revenue (yuan)"),
        orders_label=ctx._("Orders"),
    )
    await ctx.transport.send_photo(ctx.chat_id, png, title)


# --- exports ------------------------------------------------------------------------------


@section("export")
async def export_section(ctx: Context) -> None:
    ctx.state.clear()
    keyboard = [
        [Button(ctx._(name), StatsExportCallback(kind=kind, days=None))]
        for kind, name in KIND_NAMES.items()
    ]
    await ctx.reply(ctx._("📄 <b>Export</b>: which records?"), [*keyboard, [home_button(ctx)]])


def range_keyboard(ctx: Context, kind: Kind) -> Keyboard:
    return [
        [
            Button(window_label(ctx, days), StatsExportCallback(kind=kind, days=days))
            for days in WINDOWS[1:]
        ],
        [Button(ctx._("« Back"), AdminCallback(section="export"))],
    ]


@conversation.callback(StatsExportCallback)
async def export_button(ctx: Context, data: StatsExportCallback) -> None:
    if data.days is None:
        ctx.state.set(EXPORT_STATE, kind=data.kind)
        await ctx.reply(
            ctx._(
                "📄 {kind}: choose a period, or send two dates like"
                " <code>2026-11-01 2026-11-22</code>."
            ).format(kind=ctx._(KIND_NAMES[data.kind])),
            range_keyboard(ctx, data.kind),
        )
        return
    if data.days not in WINDOWS[1:]:
        raise BadCallbackError(f"no {data.days}-day export")
    window = operations(ctx).stats.window(data.days)
    await ctx.answer(ctx._("Your file is on its way."))
    await send_export(ctx, data.kind, window.date_from, window.date_to)


def parse_range(text: str) -> tuple[date, date] | None:
    """`2026-11-01 2026-11-22` → both days; None unless two ISO dates in order."""
    parts = text.split()
    if len(parts) != 2:
        return None
    try:
        start, end = date.fromisoformat(parts[0]), date.fromisoformat(parts[1])
    except ValueError:
        return None
    return (start, end) if start <= end else None


@conversation.state(EXPORT_STATE)
@admin_only
async def export_dates(ctx: Context) -> None:
    kind: Kind = "ledger" if ctx.state.get("kind") == "ledger" else "orders"
    dates = parse_range(ctx.incoming.text)
    if dates is None:
        await ctx.reply(
            ctx._(
                "Please send two dates, the first not after the second:"
                " <code>2026-11-01 2026-11-22</code>."
            ),
            range_keyboard(ctx, kind),
        )
        return
    await send_export(ctx, kind, *dates)


async def send_export(ctx: Context, kind: Kind, start: date, end: date) -> None:
    ops = operations(ctx)
    export = ops.exports.orders_csv if kind == "orders" else ops.exports.ledger_csv
    data = await export(start, end)
    await ops.audit.log(
        actor(ctx), "export", kind, None, {"from": start, "to": end, "bytes": len(data)}
    )
    caption = ctx._("{kind}, {start} – {end}").format(
        kind=ctx._(KIND_NAMES[kind]), start=start, end=end
    )
    await ctx.transport.send_document(ctx.chat_id, f"{kind}-{start}-{end}.csv", data, caption)

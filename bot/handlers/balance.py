"""/balance: the wallet balance, its latest ledger rows, and the member's points.

The ledger is shown as the shop keeps it (kind, signed amount, balance after), so a
member can check every debit against an order; the points statement names where each
award came from (check-in, purchase, review, progress reward), so no point is a
mystery; points that expire soon are called out with their date, since a warning is
worth more than a lapsed balance.
"""

from __future__ import annotations

from bot.conversation import Button, Context, Conversation, escape
from bot.handlers.start import MenuCallback, menu_button
from bot.i18n import N_
from core.money import FEN_PER_POINT
from core.points import PointsEntry
from core.wallet import LedgerEntry

conversation = Conversation("balance")

#: Ledger rows shown, newest first.
HISTORY_ROWS = 10
#: Points statement lines shown, newest first.
POINTS_ROWS = 5

#: Ledger kinds as the member reads them.
KIND_NAMES = {
    "topup": N_("Top-up"),
    "purchase": N_("Purchase"),
    "refund": N_("Refund"),
    "adjustment": N_("Adjustment"),
    "topup_refund": N_("Top-up refunded"),
    "commission": N_("Referral commission"),
    "commission_rev": N_("Commission taken back (refund)"),
}


#: Where awarded points came from (`point_lots.source`), as the member reads it.
POINT_SOURCES = {
    "checkin": N_("Check-in"),
    "purchase": N_("Purchase"),
    "review": N_("Review"),
    "reward": N_("Progress reward"),
}

#: What took points away or gave them back (`point_spends.reason`).
POINT_SPENDS = {
    "redeem": N_("Used at checkout"),
    "expire": N_("Expired"),
    "reverse": N_("Taken back (refund)"),
    "restore": N_("Given back (refund)"),
}


def points_line(ctx: Context, entry: PointsEntry) -> str:
    """`date what ±points`; an award names its source, a spend what it was for."""
    table = POINT_SOURCES if entry.kind == "earn" else POINT_SPENDS
    label = table.get(entry.source if entry.kind == "earn" else entry.kind)
    what = ctx._(label) if label else escape(entry.source)
    amount = ctx.number(abs(entry.amount))
    line = ctx._("{date} {what} {amount}").format(
        date=ctx.datetime(entry.at),
        what=what,
        amount=f"+{amount}" if entry.amount > 0 else f"−{amount}",
    )
    if entry.order_id is not None:
        line += " " + ctx._("(order #{order})").format(order=entry.order_id)
    return line


def kind_name(ctx: Context, kind: str) -> str:
    label = KIND_NAMES.get(kind)
    return ctx._(label) if label else escape(kind)


def signed(ctx: Context, amount: int) -> str:
    return f"+{ctx.money(amount)}" if amount > 0 else f"−{ctx.money(-amount)}"


def ledger_line(ctx: Context, entry: LedgerEntry) -> str:
    line = ctx._("{date} {kind} {amount} → {balance}").format(
        date=ctx.datetime(entry.created_at),
        kind=kind_name(ctx, entry.kind),
        amount=signed(ctx, entry.amount),
        balance=ctx.money(entry.balance_after),
    )
    if entry.order_id is not None:
        line += " " + ctx._("(order #{order})").format(order=entry.order_id)
    return line


@conversation.command("balance", description=N_("My balance and points"))
async def balance_command(ctx: Context) -> None:
    await show_balance(ctx)


@conversation.menu("balance")
async def show_balance(ctx: Context) -> None:
    member_id = ctx.member.id
    balance = await ctx.shop.wallet.balance(member_id)
    entries = await ctx.shop.wallet.history(member_id, limit=HISTORY_ROWS)
    points = await ctx.shop.points.balance(member_id)
    statement = await ctx.shop.points.history(member_id, limit=POINTS_ROWS)
    lines = [
        ctx._("💰 <b>Balance: {balance}</b>").format(balance=ctx.money(balance)),
        ctx._("Points: {points} (worth {value} at checkout)").format(
            points=ctx.number(points.available), value=ctx.money(points.available * FEN_PER_POINT)
        ),
    ]
    if points.expiring and points.expiring_at is not None:
        lines.append(
            ctx.ngettext(
                "⚠️ {points} point expires on {date}. Use it at checkout before then!",
                "⚠️ {points} points expire on {date}. Use them at checkout before then!",
                points.expiring,
            ).format(points=ctx.number(points.expiring), date=ctx.datetime(points.expiring_at))
        )
    if statement:
        lines += ["", ctx._("<b>Latest points</b>")]
        lines += [points_line(ctx, entry) for entry in statement]
    lines.append("")
    if entries:
        lines.append(ctx._("<b>Latest transactions</b>"))
        lines += [ledger_line(ctx, entry) for entry in entries]
    else:
        lines.append(ctx._("No transactions yet."))
    keyboard = [
        [
            Button(ctx._("💰 Top up"), MenuCallback(item="topup")),
            Button(ctx._("🛒 Shop"), MenuCallback(item="shop")),
        ],
        [menu_button(ctx)],
    ]
    await ctx.reply("\n".join(lines), keyboard)

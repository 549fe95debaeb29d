"""Admin: find a member and act on their account.

A member is found by Telegram id or @username (`shop.members.find`); their card shows
their tier and the way to the next one, balance, recent orders and tickets. Money,
tiers, the dedicated manager and violations all change through `AdminActions`, so each
change lands in the audit log with the state before and after. Typed input (an amount,
a reason, a staff id) is asked one thing at a time.
"""

from __future__ import annotations

from typing import Literal

from bot.callbacks import Callback
from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.handlers.admin import (
    AdminCallback,
    actor,
    admin_only,
    admins_only,
    home_button,
    operations,
    section,
)
from bot.handlers.orders import status_name
from bot.handlers.ticket import staff_status
from bot.names import category_name
from core.errors import ErrorCode, ShopError
from core.members import MemberView
from core.models import Staff, max_length
from core.money import parse_yuan
from core.text import BIGINT_MAX, whole_number

conversation = Conversation("admin_members", button_guard=admins_only)

FIND_STATE = "adm_member_find"
AMOUNT_STATE = "adm_member_amount"
REASON_STATE = "adm_member_reason"
MANAGER_STATE = "adm_member_manager"
VIOLATION_STATE = "adm_member_violation"
RECENT = 5
STAFF_NAME_MAX = max_length(Staff.display_name)

Action = Literal["view", "topup", "adjust", "tier", "partner", "trial", "manager", "violation"]


class MemberCallback(Callback):
    prefix = "admm"
    member: int
    action: Action


class SetTierCallback(Callback):
    prefix = "admmt"
    member: int
    tier: str


def member_title(ctx: Context, member: MemberView) -> str:
    name = escape(member.display_name) or ctx._("(no name)")
    if member.username:
        name += " @" + escape(member.username)
    return ctx._("👤 <b>{name}</b> · Telegram id <code>{telegram_id}</code> · #{id}").format(
        name=name, telegram_id=member.telegram_id, id=member.id
    )


def tier_name(ctx: Context, key: str) -> str:
    return escape(ctx.shop.ladder.tier(key).name(ctx.locale))


async def card_text(ctx: Context, member: MemberView) -> str:
    evaluation = await ctx.shop.tiers.evaluate(member.id)
    lines = [
        member_title(ctx, member),
        ctx._("Level: {tier} ({source})").format(
            tier=tier_name(ctx, member.tier_key), source=escape(member.tier_source)
        ),
    ]
    if member.trial_until is not None:
        lines.append(ctx._("On trial until {time}").format(time=ctx.datetime(member.trial_until)))
    if evaluation.progress is not None:
        lines.append(
            ctx._("Towards {tier}: {percent}%").format(
                tier=tier_name(ctx, evaluation.progress.tier), percent=evaluation.progress.percent
            )
        )
    lines += [
        ctx._("Balance: {balance} · spent in total: {spent}").format(
            balance=ctx.money(member.balance), spent=ctx.money(member.total_spent)
        ),
    ]
    if member.unreachable:
        lines.append(ctx._("⚠️ Has blocked the bot."))
    manager = (await ctx.shop.manager.access(member.id)).manager
    if manager is not None:
        lines.append(ctx._("Manager: {name}").format(name=escape(manager.display_name)))
    orders = await ctx.shop.orders.recent(member.id, limit=RECENT)
    lines += ["", ctx._("<b>Recent orders</b>")]
    lines += [
        " · ".join(
            (
                f"#{order.id} {escape(order.product_name(ctx.locale))} ×{order.quantity}",
                ctx.money(order.total),
                status_name(ctx, order.status),
            )
        )
        for order in orders
    ] or [ctx._("none")]
    tickets = (await ctx.shop.tickets.for_member(member.id))[:RECENT]
    last = await ctx.shop.tickets.last_authors([ticket.id for ticket in tickets])
    lines += ["", ctx._("<b>Tickets</b>")]
    lines += [
        f"#{ticket.id} {category_name(ctx, ticket.category)}"
        f" · {staff_status(ctx, ticket, last.get(ticket.id))}"
        for ticket in tickets
    ] or [ctx._("none")]
    return "\n".join(lines)


def card_keyboard(ctx: Context, member_id: int) -> Keyboard:
    def button(label: str, action: Action) -> Button:
        return Button(label, MemberCallback(member=member_id, action=action))

    return [
        [button(ctx._("💰 Top up"), "topup"), button(ctx._("± Adjust balance"), "adjust")],
        [button(ctx._("⭐ Set level"), "tier"), button(ctx._("🤝 Invite as partner"), "partner")],
        [button(ctx._("⚡ Trial of next level"), "trial"), button(ctx._("👤 Manager"), "manager")],
        [button(ctx._("🚩 Flag violation"), "violation")],
        [Button(ctx._("🔎 Another member"), AdminCallback(section="members"))],
        [home_button(ctx)],
    ]


async def show_card(ctx: Context, member_id: int, notice: str | None = None) -> None:
    member = await ctx.shop.members.get(member_id)
    text = await card_text(ctx, member)
    if notice:
        text = f"{notice}\n\n{text}"
    ctx.state.clear()
    await ctx.reply(text, card_keyboard(ctx, member_id))


def back_keyboard(ctx: Context, member_id: int) -> Keyboard:
    return [[Button(ctx._("« Back"), MemberCallback(member=member_id, action="view"))]]


@section("members")
async def members_section(ctx: Context) -> None:
    ctx.state.set(FIND_STATE)
    await ctx.reply(ctx._("🔎 Send the member's Telegram id or @username."), [[home_button(ctx)]])


@conversation.state(FIND_STATE)
@admin_only
async def find_member(ctx: Context) -> None:
    try:
        member = await ctx.shop.members.find(ctx.incoming.text)
    except ShopError as error:
        if error.code is not ErrorCode.MEMBER_NOT_FOUND:
            raise
        await ctx.reply(
            ctx._("No member {query}. Send a Telegram id or @username.").format(
                query=escape(ctx.incoming.text.strip())
            ),
            [[home_button(ctx)]],
        )
        return
    await show_card(ctx, member.id)


@conversation.callback(MemberCallback)
async def member_action(ctx: Context, data: MemberCallback) -> None:
    member = await ctx.shop.members.get(data.member)
    admin = operations(ctx).admin
    back = back_keyboard(ctx, member.id)
    match data.action:
        case "view":
            await show_card(ctx, member.id)
        case "topup" | "adjust":
            ctx.state.set(AMOUNT_STATE, member=member.id, kind=data.action)
            prompt = (
                ctx._("💰 How much to add, in yuan? e.g. 100")
                if data.action == "topup"
                else ctx._("± How much to add or take off, in yuan? e.g. 20 or -20")
            )
            await ctx.reply(prompt, back)
        case "tier":
            buttons = [
                Button(tier.name(ctx.locale), SetTierCallback(member=member.id, tier=tier.key))
                for tier in ctx.shop.ladder.tiers
            ]
            rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
            await ctx.reply(ctx._("⭐ Which level?"), [*rows, *back])
        case "partner":
            change = await admin.invite_partner(actor(ctx), member.id)
            await show_card(ctx, member.id, level_changed(ctx, change.to_tier))
        case "trial":
            change = await admin.grant_trial(actor(ctx), member.id)
            await show_card(ctx, member.id, level_changed(ctx, change.to_tier))
        case "manager":
            ctx.state.set(MANAGER_STATE, member=member.id)
            await ctx.reply(
                ctx._(
                    "👤 Send the manager's Telegram id and the name members see,"
                    " e.g. <code>7700001 Amy</code>."
                ),
                back,
            )
        case "violation":
            ctx.state.set(VIOLATION_STATE, member=member.id)
            await ctx.reply(ctx._("🚩 What did the member do? Send the reason."), back)


def level_changed(ctx: Context, tier: str) -> str:
    return ctx._("✅ Level is now {tier}.").format(tier=tier_name(ctx, tier))


@conversation.callback(SetTierCallback)
async def set_tier(ctx: Context, data: SetTierCallback) -> None:
    change = await operations(ctx).admin.set_tier(actor(ctx), data.member, data.tier)
    await show_card(ctx, data.member, level_changed(ctx, change.to_tier))


@conversation.state(AMOUNT_STATE)
@admin_only
async def amount_input(ctx: Context) -> None:
    member_id = int(ctx.state.get("member"))
    try:
        amount = parse_yuan(ctx.incoming.text)
    except ShopError:
        amount = 0
    if amount == 0 or (amount < 0 and ctx.state.get("kind") == "topup"):
        await ctx.reply(
            ctx._("Please send an amount in yuan, such as 100 or 12.50."),
            back_keyboard(ctx, member_id),
        )
        return
    ctx.state.set(REASON_STATE, member=member_id, kind=ctx.state.get("kind"), amount=amount)
    await ctx.reply(
        ctx._("{amount}: and the reason? It is kept in the ledger and the audit log.").format(
            amount=ctx.money(amount)
        ),
        back_keyboard(ctx, member_id),
    )


@conversation.state(REASON_STATE)
@admin_only
async def reason_input(ctx: Context) -> None:
    member_id = int(ctx.state.get("member"))
    reason = ctx.incoming.text.strip()
    if not reason:
        await ctx.reply(ctx._("Please send the reason as text."), back_keyboard(ctx, member_id))
        return
    admin = operations(ctx).admin
    amount = int(ctx.state.get("amount"))
    if ctx.state.get("kind") == "topup":
        change = await admin.top_up(actor(ctx), member_id, amount, reason=reason)
    else:
        change = await admin.adjust(actor(ctx), member_id, amount, reason=reason)
    notice = ctx._("✅ Balance {before} → {after}").format(
        before=ctx.money(change.balance_before), after=ctx.money(change.balance_after)
    )
    await show_card(ctx, member_id, notice)


@conversation.state(MANAGER_STATE)
@admin_only
async def manager_input(ctx: Context) -> None:
    member_id = int(ctx.state.get("member"))
    typed_id, _, name = ctx.incoming.text.strip().partition(" ")
    staff_id, name = whole_number(typed_id, BIGINT_MAX), name.strip()
    if staff_id is None or staff_id <= 0 or not name:
        await ctx.reply(
            ctx._("Please send the Telegram id, a space, then the name: 7700001 Amy"),
            back_keyboard(ctx, member_id),
        )
        return
    if len(name) > STAFF_NAME_MAX:
        await ctx.reply(
            ctx.ngettext(
                "That name is too long: at most {max} character.",
                "That name is too long: at most {max} characters.",
                STAFF_NAME_MAX,
            ).format(max=STAFF_NAME_MAX),
            back_keyboard(ctx, member_id),
        )
        return
    staff = await operations(ctx).admin.assign_manager(
        actor(ctx), member_id, staff_id, display_name=name
    )
    notice = ctx._("✅ {name} is now their manager.").format(name=escape(staff.display_name))
    await show_card(ctx, member_id, notice)


@conversation.state(VIOLATION_STATE)
@admin_only
async def violation_input(ctx: Context) -> None:
    member_id = int(ctx.state.get("member"))
    reason = ctx.incoming.text.strip()
    if not reason:
        await ctx.reply(ctx._("Please send the reason as text."), back_keyboard(ctx, member_id))
        return
    await operations(ctx).admin.flag_violation(actor(ctx), member_id, reason=reason)
    await show_card(ctx, member_id, ctx._("🚩 Violation recorded."))

"""/level: the member's tier, what it gives, and exactly what is left to the next one.

Transparency is the point (domain: "距离下一级还需消费 ¥X"): every number comes from
`shop.tiers.evaluate`, which already counts growth points toward spend; this module
only puts the numbers into words, a progress bar and the next tier's extras.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.handlers.start import MenuCallback, api_button, menu_button, offers_api
from bot.i18n import N_, Translator
from core.ladder import SERVED_CAPABILITIES, Capabilities, Ladder, Metric, Tier
from core.tiers.metrics import VIOLATION_WINDOW
from core.tiers.moves import Evaluation, ProgressReward
from core.tiers.rules import ConditionProgress, TierSource

conversation = Conversation("level")

#: Cells of the text progress bar (▓ done, ░ to go).
BAR_CELLS = 10

#: What each metric of a tier rule is called on the level page.
METRIC_LABELS: dict[Metric, str] = {
    Metric.TOTAL_SPENT: N_("Total spend"),
    Metric.SPEND_365D: N_("Spend in the last 12 months"),
    Metric.PURCHASES_6M: N_("Purchases in the last 6 months"),
    Metric.VIOLATIONS_90D: N_("Serious violations (last 3 months)"),
    Metric.FULFILMENT_RATE: N_("Order fulfilment rate"),
    Metric.REFERRALS_ACTIVE: N_("Active members you referred"),
    Metric.JOINT_CAMPAIGNS: N_("Joint campaigns"),
    Metric.GROWTH_POINTS: N_("Growth points"),
}

#: A met "at most 0" rule said as the fact it is ("近三个月无严重违规"), not as "0 (at most 0)".
NONE_LABELS: dict[Metric, str] = {
    Metric.VIOLATIONS_90D: N_("No serious violations in the last 3 months"),
}

#: Product pools as members know them.
POOL_NAMES: dict[str, str] = {
    "basic": N_("standard items"),
    "selected": N_("selected items"),
    "exclusive": N_("exclusive items"),
}


def tier_name(ctx: Context, key: str) -> str:
    return escape(ctx.shop.ladder.tier(key).name(ctx.locale))


def progress_bar(percent: int) -> str:
    """`▓▓▓▓░░░░░░ 40%`: whole cells only, so 99% never looks complete."""
    done = max(0, min(BAR_CELLS, percent * BAR_CELLS // 100))
    return "{bar} {percent}%".format(bar="▓" * done + "░" * (BAR_CELLS - done), percent=percent)


def discount(ctx: Context, rate: int) -> str:
    """The price rate as the locale says it: 9折 / 95折 in Chinese, "10% off" in English.

    Both forms are offered to the translation, which picks `{off}` (the share taken
    off, with its % sign) or `{zhe}` (the 折 digits: 90 → 9, 95 → 95).
    """
    if rate >= 100:
        return ctx._("Prices: list price")
    zhe = str(rate // 10) if rate % 10 == 0 else str(rate)
    return ctx._("Prices: {off} off").format(off=f"{100 - rate}%", zhe=zhe)


def _multiplier(ctx: Context, caps: Capabilities) -> str | None:
    multiplier = Decimal(str(caps.checkin_multiplier)).normalize()
    if multiplier == 1:
        return None
    return ctx._("Check-in points ×{multiplier}").format(multiplier=multiplier)


def _pools(ctx: Context, caps: Capabilities) -> str:
    separator = ctx._(", ")
    pools = separator.join(ctx._(POOL_NAMES.get(pool, pool)) for pool in caps.pools)
    return ctx._("Products: {pools}").format(pools=pools)


def _batch(ctx: Context, caps: Capabilities) -> str:
    return ctx.ngettext(
        "Up to {count} code per order", "Up to {count} codes per order", caps.batch_max
    ).format(count=ctx.number(caps.batch_max))


def _sla(ctx: Context, caps: Capabilities) -> str:
    return ctx._("Support answers within {time}").format(time=ctx.duration(caps.sla_minutes))


def _export(ctx: Context, caps: Capabilities) -> str | None:
    return ctx._("Export your orders (CSV)") if caps.export else None


def _manager(ctx: Context, caps: Capabilities) -> str | None:
    return ctx._("A dedicated manager") if caps.manager else None


def _commission(ctx: Context, caps: Capabilities) -> str | None:
    if not caps.referral_commission or not caps.commission_percent:
        return None
    return ctx._("Referral commission: {percent} of what the members you brought buy").format(
        percent=f"{caps.commission_percent}%"
    )


def _reservation(ctx: Context, caps: Capabilities) -> str | None:
    if not caps.reservation or caps.reservation_max == 0:
        return None
    return ctx.ngettext(
        "Reserve up to {count} code of a product",
        "Reserve up to {count} codes of a product",
        caps.reservation_max,
    ).format(count=ctx.number(caps.reservation_max))


def _api(ctx: Context, caps: Capabilities) -> str | None:
    if not caps.api or caps.api_keys_max == 0:
        return None
    return ctx.ngettext(
        "API access for your own site or bot: up to {count} key, rate limit {rate}/min",
        "API access for your own site or bot: up to {count} keys, rate limit {rate}/min each",
        caps.api_keys_max,
    ).format(count=ctx.number(caps.api_keys_max), rate=ctx.number(caps.api_requests_per_minute))


def _folded(_ctx: Context, _caps: Capabilities) -> None:
    """A capability said within another's line: the reservation cap in `_reservation`,
    the commission rate in `_commission`, the API's limits in `_api`."""
    return


#: How the card words each served capability. The card renders from
#: `SERVED_CAPABILITIES` (in its order), so a capability no code serves is never shown.
CAPABILITY_LINES: dict[str, Callable[[Context, Capabilities], str | None]] = {
    "pools": _pools,
    "batch_max": _batch,
    "sla_minutes": _sla,
    "checkin_multiplier": _multiplier,
    "export": _export,
    "manager": _manager,
    "referral_commission": _commission,
    "commission_percent": _folded,
    "reservation": _reservation,
    "reservation_max": _folded,
    "api": _api,
    "api_keys_max": _folded,
    "api_requests_per_minute": _folded,
}


def benefits(ctx: Context, tier: Tier) -> list[str]:
    """One line per thing the tier gives, read from its capabilities in the ladder."""
    lines = [discount(ctx, tier.rate)]
    for capability in SERVED_CAPABILITIES:
        shown = CAPABILITY_LINES[capability](ctx, tier.capabilities)
        if shown is not None:
            lines.append(shown)
    return lines


def reward_lines(t: Translator, ladder: Ladder, rewards: tuple[ProgressReward, ...]) -> list[str]:
    """One line per progress reward just paid, for the reply to what earned it (which may
    be no update at all: a top-up that landed and bought)."""
    return [
        t.ngettext(
            "🎁 +{points} point: your progress to {tier} reached {percent}%!",
            "🎁 +{points} points: your progress to {tier} reached {percent}%!",
            reward.points,
        ).format(
            points=t.number(reward.points),
            percent=reward.percent,
            tier=escape(ladder.tier(reward.tier).name(t.locale)),
        )
        for reward in rewards
    ]


def left_text(ctx: Context, condition: ConditionProgress) -> str:
    """What is still missing for one unmet condition, in the member's words."""
    left = condition.left
    match condition.metric:
        case Metric.TOTAL_SPENT | Metric.SPEND_365D:
            return ctx._("spend {amount} more").format(amount=ctx.money(left))
        case Metric.PURCHASES_6M:
            return ctx.ngettext("buy {count} more time", "buy {count} more times", left).format(
                count=ctx.number(left)
            )
        case Metric.VIOLATIONS_90D:
            return ctx.ngettext(
                "each violation stops counting {days} day after it happened",
                "each violation stops counting {days} days after it happened",
                VIOLATION_WINDOW.days,
            ).format(days=VIOLATION_WINDOW.days)
        case Metric.FULFILMENT_RATE:
            return ctx.ngettext(
                "{count} percentage point to go", "{count} percentage points to go", left
            ).format(count=ctx.number(left))
        case Metric.REFERRALS_ACTIVE:
            return ctx.ngettext(
                "refer {count} more active member", "refer {count} more active members", left
            ).format(count=ctx.number(left))
        case Metric.JOINT_CAMPAIGNS:
            return ctx.ngettext(
                "{count} more joint campaign (arranged with our staff)",
                "{count} more joint campaigns (arranged with our staff)",
                left,
            ).format(count=ctx.number(left))
        case Metric.GROWTH_POINTS:
            return ctx.ngettext(
                "earn {count} more growth point", "earn {count} more growth points", left
            ).format(count=ctx.number(left))


def amount(ctx: Context, condition: ConditionProgress, value: int) -> str:
    if condition.metric in (Metric.TOTAL_SPENT, Metric.SPEND_365D):
        return ctx.money(value)
    if condition.metric is Metric.FULFILMENT_RATE:
        return f"{value}%"
    return ctx.number(value)


def condition_line(ctx: Context, condition: ConditionProgress) -> str:
    none_label = NONE_LABELS.get(condition.metric)
    if none_label and condition.bound == "max" and condition.required == 0 and condition.met:
        return "✅ " + ctx._(none_label)
    label = ctx._(METRIC_LABELS.get(condition.metric, condition.metric.value))
    if condition.bound == "max":
        shown = ctx._("{label}: {current} (at most {required})")
    else:
        shown = ctx._("{label}: {current} / {required}")
    line = shown.format(
        label=label,
        current=amount(ctx, condition, condition.current),
        required=amount(ctx, condition, condition.required),
    )
    if condition.met:
        return "✅ " + line
    line = f"▫️ {line} — {left_text(ctx, condition)}"
    if condition.growth_credit:
        line += "\n    " + ctx._("(your growth points already count for {amount})").format(
            amount=ctx.money(condition.growth_credit)
        )
    return line


def level_text(ctx: Context, evaluation: Evaluation) -> str:
    ladder = ctx.shop.ladder
    tier = ladder.tier(evaluation.tier)
    parts = [
        ctx._("⭐ <b>Your level: {tier}</b>").format(tier=tier_name(ctx, tier.key)),
        "\n".join("• " + line for line in benefits(ctx, tier)),
    ]
    if evaluation.tier_source == TierSource.TRIAL and evaluation.trial_until is not None:
        parts.append(
            ctx._(
                "🕒 You are trying {tier} until {time}. Meet its conditions by then to keep it."
            ).format(tier=tier_name(ctx, tier.key), time=ctx.datetime(evaluation.trial_until))
        )
    if evaluation.in_protection and evaluation.protected_until is not None:
        parts.append(
            ctx._(
                "⚠️ Downgrade protection until {time}: you are below what {tier} needs to be"
                " kept. Meet it again by then, or you will move down one level."
            ).format(time=ctx.datetime(evaluation.protected_until), tier=tier_name(ctx, tier.key))
        )
    progress = evaluation.progress
    if evaluation.next_tier is None or progress is None:
        parts.append(ctx._("🏆 You are at the top of the ladder. Thank you!"))
        return "\n\n".join(parts)
    following = ladder.tier(evaluation.next_tier)
    way = [
        ctx._("<b>Next level: {tier}</b>").format(tier=tier_name(ctx, following.key)),
        progress_bar(progress.percent),
    ]
    way += [condition_line(ctx, condition) for condition in progress.conditions]
    if progress.met:
        way.append(ctx._("You qualify! The upgrade comes with your next purchase or check-in."))
    parts.append("\n".join(way))
    current = set(benefits(ctx, tier))
    extras = [line for line in benefits(ctx, following) if line not in current]
    if extras:
        parts.append(
            "\n".join(
                [ctx._("<b>{tier} adds:</b>").format(tier=tier_name(ctx, following.key))]
                + ["• " + line for line in extras]
            )
        )
    return "\n\n".join(parts)


def level_keyboard(ctx: Context) -> Keyboard:
    """Check-in and referrals for everyone, 🔑 API for the tiers that have it."""
    rows = [
        [
            Button(ctx._("📅 Check in"), MenuCallback(item="checkin")),
            Button(ctx._("👥 Referrals"), MenuCallback(item="referrals")),
        ]
    ]
    if offers_api(ctx):
        rows.append([api_button(ctx)])
    rows.append([menu_button(ctx)])
    return rows


@conversation.command("level", description=N_("My member level"))
@conversation.menu("level")
async def show_level(ctx: Context) -> None:
    evaluation = await ctx.shop.tiers.evaluate(ctx.member.id)
    await ctx.reply(level_text(ctx, evaluation), level_keyboard(ctx))

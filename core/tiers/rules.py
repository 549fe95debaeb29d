"""The tier rules as pure functions: the ladder and a member's numbers in, a decision out.

Nothing here reads the database or the clock, so every rule can be tested on its own
(tests/test_tier_properties.py) and the services in `moves` and `review` only load the
numbers, call these and write down what they decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from core.clock import add_months
from core.ladder import SPEND_METRICS, Condition, Ladder, Metric, Rule, Tier


class TierSource(StrEnum):
    """Why a member holds their tier; only `rules` and `trial` tiers move by themselves."""

    RULES = "rules"
    ADMIN = "admin"
    TRIAL = "trial"
    INVITE = "invite"


class ReviewResult(StrEnum):
    KEPT = "kept"
    WARNED = "warned"
    PROTECTED = "protected"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Metrics:
    """One member's numbers, field for field the `Metric` names the rules use."""

    total_spent: int
    spend_365d: int
    purchases_6m: int
    violations_90d: int
    fulfilment_rate: int
    referrals_active: int
    joint_campaigns: int
    growth_points: int

    def value(self, metric: Metric) -> int:
        return int(getattr(self, metric.value))


#: The fulfilment rate of a member with no settled order yet: nothing has failed.
FULFILMENT_WITHOUT_ORDERS = 100

#: The numbers of a member who has done nothing yet. A condition these meet (no
#: violations, fulfilment with no orders) is met by default: it is no distance covered.
NO_ACTIVITY = Metrics(
    total_spent=0,
    spend_365d=0,
    purchases_6m=0,
    violations_90d=0,
    fulfilment_rate=FULFILMENT_WITHOUT_ORDERS,
    referrals_active=0,
    joint_campaigns=0,
    growth_points=0,
)


@dataclass(frozen=True, slots=True)
class ConditionProgress:
    """One condition measured: for spend, `current` already includes the growth credit."""

    metric: Metric
    #: `min` (reach at least `required`) or `max` (stay at most `required`).
    bound: str
    current: int
    required: int
    #: What is still missing (分, orders, members...); for a `max` condition, the excess.
    left: int
    percent: int
    met: bool
    #: The part of `current` that growth points stand in for (分), 0 when none.
    growth_credit: int


@dataclass(frozen=True, slots=True)
class Progress:
    """The way to one tier along its alternative that is closest to done."""

    tier: str
    conditions: tuple[ConditionProgress, ...]
    percent: int
    met: bool


def measure(ladder: Ladder, condition: Condition, metrics: Metrics) -> ConditionProgress:
    """One condition against the numbers; growth points stand in for part of a spend."""
    value = metrics.value(condition.metric)
    if condition.max is not None:
        met = value <= condition.max
        return ConditionProgress(
            metric=condition.metric,
            bound="max",
            current=value,
            required=condition.max,
            left=max(0, value - condition.max),
            percent=100 if met else 0,
            met=met,
            growth_credit=0,
        )
    required = condition.min if condition.min is not None else 0
    credit = 0
    if condition.metric in SPEND_METRICS:
        growth = ladder.growth
        credit = min(
            metrics.growth_points * growth.fen_per_growth_point,
            required * growth.max_share_percent // 100,
        )
    current = value + credit
    return ConditionProgress(
        metric=condition.metric,
        bound="min",
        current=current,
        required=required,
        left=max(0, required - current),
        percent=100 if required <= 0 else min(100, max(0, current) * 100 // required),
        met=current >= required,
        growth_credit=credit,
    )


def progress(ladder: Ladder, tier_key: str, rule: Rule, metrics: Metrics) -> Progress:
    """The alternative closest to done (the first on a tie); an empty rule is never met.

    The percent measures distance covered: a condition met by default (no
    violations, fulfilment with no orders yet) counts only while it is unmet, so a
    member who has done nothing stands at 0%, not halfway.
    """
    best: Progress | None = None
    for alternative in rule:
        conditions = tuple(measure(ladder, c, metrics) for c in alternative)
        counted = [
            measured
            for condition, measured in zip(alternative, conditions, strict=True)
            if not (measured.met and measure(ladder, condition, NO_ACTIVITY).met)
        ]
        percent = min(100, sum(c.percent for c in counted) // len(counted)) if counted else 100
        candidate = Progress(
            tier=tier_key,
            conditions=conditions,
            percent=percent,
            met=all(c.met for c in conditions),
        )
        if best is None or (candidate.met, candidate.percent) > (best.met, best.percent):
            best = candidate
    return best or Progress(tier=tier_key, conditions=(), percent=0, met=False)


def earned_tier(ladder: Ladder, metrics: Metrics) -> Tier:
    """The highest tier the numbers earn; invite-only tiers are never earned."""
    earned = ladder.entry
    for tier in ladder.tiers[1:]:
        if not tier.invite_only and progress(ladder, tier.key, tier.upgrade, metrics).met:
            earned = tier
    return earned


def higher(ladder: Ladder, first: str, second: str) -> str:
    return first if ladder.index(first) >= ladder.index(second) else second


@dataclass(frozen=True, slots=True)
class ReviewVerdict:
    """What a quarterly review does to one member who holds a tier by the rules."""

    result: ReviewResult
    to_tier: str
    quarters_below: int
    protected_until: datetime | None


def review_verdict(
    ladder: Ladder,
    tier_key: str,
    *,
    met: bool,
    quarters_below: int,
    protected_until: datetime | None,
    ended: datetime,
    zone: ZoneInfo,
) -> ReviewVerdict:
    """Keep, warn, protect or drop, judged as of `ended` (the reviewed quarter's end).

    A member below the maintenance rule for `consecutive_quarters` in a row is not
    dropped but protected (降级保护) for `protection_months`, counted in shop-local
    months from the quarter's end; only a review after that protection has ended drops
    them, one tier. Meeting the rule at any review clears the count and the protection.
    """
    if met:
        return ReviewVerdict(ReviewResult.KEPT, tier_key, 0, None)
    if protected_until is not None and protected_until <= ended:
        below = ladder.below(tier_key)
        return ReviewVerdict(ReviewResult.DROPPED, below.key if below else tier_key, 0, None)
    slipped = quarters_below + 1
    rules = ladder.review
    if protected_until is None and slipped >= rules.consecutive_quarters:
        local_end = ended.astimezone(zone)
        until = add_months(local_end, rules.protection_months).astimezone(UTC)
        return ReviewVerdict(ReviewResult.PROTECTED, tier_key, slipped, until)
    return ReviewVerdict(ReviewResult.WARNED, tier_key, slipped, protected_until)

"""The tier rules as pure functions: the ladder and a member's numbers in, a decision out.

Nothing here reads the database or the clock, so every rule can be tested on its own
(tests/test_tier_properties.py) and the services in `moves` and `review` only load the
numbers, call these and write down what they decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from core.clock import add_months
from core.ladder import SPEND_METRICS, Condition, GrowthRules, Ladder, Metric, Rule, Tier


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
        # A `Metric` is the field's name itself (a StrEnum): no `.value` lookup, which
        # the quarterly review would pay a few million times.
        return int(getattr(self, metric))

    @classmethod
    def of(cls, values: Mapping[Metric, int]) -> Metrics:
        return cls(**{metric.value: values[metric] for metric in Metric})


#: The metrics the member row carries: whoever holds the row knows them exactly.
ROW_METRICS = frozenset({Metric.TOTAL_SPENT, Metric.JOINT_CAMPAIGNS, Metric.GROWTH_POINTS})


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
    return _measure(
        ladder.growth, condition, metrics.value(condition.metric), metrics.growth_points
    )


def _measure(
    growth: GrowthRules, condition: Condition, value: int, growth_points: int
) -> ConditionProgress:
    if condition.max is not None:
        met, percent = _score(growth, condition, value, growth_points)
        return ConditionProgress(
            metric=condition.metric,
            bound="max",
            current=value,
            required=condition.max,
            left=max(0, value - condition.max),
            percent=percent,
            met=met,
            growth_credit=0,
        )
    required = condition.min or 0
    credit = _growth_credit(growth, condition, growth_points)
    current = value + credit
    met, percent = _reached(current, required)
    return ConditionProgress(
        metric=condition.metric,
        bound="min",
        current=current,
        required=required,
        left=max(0, required - current),
        percent=percent,
        met=met,
        growth_credit=credit,
    )


def _score(
    growth: GrowthRules, condition: Condition, value: int, growth_points: int
) -> tuple[bool, int]:
    """Whether one condition is met, and its percent: `_measure` without building its
    result, for the tier check that every purchase and check-in runs."""
    if condition.max is not None:
        met = value <= condition.max
        return met, 100 if met else 0
    current = value + _growth_credit(growth, condition, growth_points)
    return _reached(current, condition.min or 0)


def _reached(current: int, required: int) -> tuple[bool, int]:
    """A `min` condition: whether `current` meets it, and the percent of it covered."""
    percent = 100 if required <= 0 else min(100, max(0, current) * 100 // required)
    return current >= required, percent


def _growth_credit(growth: GrowthRules, condition: Condition, growth_points: int) -> int:
    """The part of a spend condition that growth points stand in for (分), capped at a
    share of what it requires."""
    if condition.metric not in SPEND_METRICS:
        return 0
    return min(
        growth_points * growth.fen_per_growth_point,
        (condition.min or 0) * growth.max_share_percent // 100,
    )


def progress(ladder: Ladder, tier_key: str, rule: Rule, metrics: Metrics) -> Progress:
    """The alternative closest to done (the first on a tie); an empty rule is never met.

    The percent measures distance covered: a condition met by default (no
    violations, fulfilment with no orders yet) counts only while it is unmet, so a
    member who has done nothing stands at 0%, not halfway.
    """
    growth, points = ladder.growth, metrics.growth_points
    best: tuple[bool, int, tuple[ConditionProgress, ...]] | None = None
    for alternative in rule:
        conditions = tuple(
            [_measure(growth, c, metrics.value(c.metric), points) for c in alternative]
        )
        met, total, counted = True, 0, 0
        for condition, measured in zip(alternative, conditions, strict=True):
            if not measured.met:
                met = False
            elif _met_by_default(growth, condition):
                continue
            total += measured.percent
            counted += 1
        percent = min(100, total // counted) if counted else 100
        # The quarterly review measures half a million members: only the best
        # alternative becomes a `Progress`.
        if best is None or (met, percent) > best[:2]:
            best = (met, percent, conditions)
    if best is None:
        return Progress(tier=tier_key, conditions=(), percent=0, met=False)
    met, percent, conditions = best
    return Progress(tier=tier_key, conditions=conditions, percent=percent, met=met)


#: `_met_by_default`'s answers by everything they depend on, so no stale entry can be
#: read whatever ladder asks; a ladder has a handful of conditions.
_MET_BY_DEFAULT: dict[tuple[Metric, int | None, int | None, int, int], bool] = {}


def _met_by_default(growth: GrowthRules, condition: Condition) -> bool:
    """Whether the numbers of a member who did nothing meet `condition`.

    Remembered: the quarterly review asks it for every condition of every member it
    measures, and hashing the pydantic models for a cache would cost more than this.
    """
    key = (
        condition.metric,
        condition.min,
        condition.max,
        growth.fen_per_growth_point,
        growth.max_share_percent,
    )
    met = _MET_BY_DEFAULT.get(key)
    if met is None:
        value = NO_ACTIVITY.value(condition.metric)
        met = _MET_BY_DEFAULT[key] = _score(growth, condition, value, NO_ACTIVITY.growth_points)[0]
    return met


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


@dataclass(frozen=True, slots=True)
class Standing:
    """A member's tier as their row holds it, with the metrics the row carries.

    The transaction of a check-in has the (locked) row in hand already, so the tier
    check after it starts from here without reading anything.
    """

    member_id: int
    tier_key: str
    tier_source: str
    trial_until: datetime | None
    total_spent: int
    joint_campaigns: int
    growth_points: int

    @property
    def known(self) -> dict[Metric, int]:
        return {
            Metric.TOTAL_SPENT: self.total_spent,
            Metric.JOINT_CAMPAIGNS: self.joint_campaigns,
            Metric.GROWTH_POINTS: self.growth_points,
        }

    def trial_over(self, now: datetime) -> bool:
        return (
            self.tier_source == TierSource.TRIAL
            and self.trial_until is not None
            and self.trial_until <= now
        )


#: What bounds a metric from above without measuring it: spend in any window is part of
#: lifetime spend, since the wallet adds each paid order's total to `total_spent` in the
#: purchase's own statement and a refund takes it back (core/wallet.py).
_BOUNDED_BY: Mapping[Metric, Metric] = {Metric.SPEND_365D: Metric.TOTAL_SPENT}


def _bound(
    ladder: Ladder, alternative: tuple[Condition, ...], known: Mapping[Metric, int]
) -> tuple[bool, int]:
    """Whether `alternative` could be met, and the most its percent could be, from `known`.

    A metric in `known` is exact. One that is not is taken at its best: a condition on it
    could be met (a `min` on a bounded metric only if its bound meets it). For the
    percent, `progress` leaves out a condition met by default while it is met and
    counts it when unmet: an unknown `max` one then counts 0, so leaving it out is its
    best; an unknown `min` one counts below 100, so counting it at 100 is. Both answers
    are exact when every metric of the alternative is known.
    """
    growth = known[Metric.GROWTH_POINTS]
    could, total, counted = True, 0, 0
    for condition in alternative:
        by_default = _met_by_default(ladder.growth, condition)
        value = known.get(condition.metric)
        bound = _BOUNDED_BY.get(condition.metric)
        if value is None and condition.min is not None and bound is not None:
            met, percent = _score(ladder.growth, condition, known[bound], growth)
            could = could and met
            total += 100 if by_default else percent
            counted += 1
        elif value is None:
            if not (condition.max is not None and by_default):
                total += 100
                counted += 1
        else:
            met, percent = _score(ladder.growth, condition, value, growth)
            could = could and met
            if not (met and by_default):
                total += percent
                counted += 1
    return could, min(100, total // counted) if counted else 100


@dataclass(frozen=True, slots=True)
class SettlementCheck:
    """What the metrics known so far tell about settling a member (`moves.Tiers.promote`)."""

    #: A settlement is due for certain: an ended trial, or a higher tier earned.
    due: bool
    #: Unmeasured metrics that could still make it due: measure them and check again.
    unmeasured: frozenset[Metric]
    #: The tier whose progress milestones are paid, and those reached on the way to it
    #: (exact once `unmeasured` is empty); due unless their rewards were paid before.
    next_tier: str | None
    milestones: tuple[int, ...]


def settlement_check(
    ladder: Ladder, standing: Standing, measured: Mapping[Metric, int], now: datetime
) -> SettlementCheck:
    """Whether settling the member could change anything, and what to measure to know.

    Settling ends an expired trial, moves the member up to the highest tier the metrics
    earn and pays a reward at each milestone reached toward the next tier. Most
    purchases and check-ins do none of it, and the member row alone often shows so: a
    member whose lifetime spend is far from every higher tier's spend threshold earns
    none of them, whatever their other numbers. The answer equals the one the full
    metrics give (`earned_tier`, `progress`): metrics in `measured` (and the row's) are
    exact, the others are taken at their best (`_bound`), and every metric that could
    still decide is named in `unmeasured`.
    """
    known = {**standing.known, **measured}
    if standing.trial_over(now):
        return SettlementCheck(due=True, unmeasured=frozenset(), next_tier=None, milestones=())
    unmeasured: set[Metric] = set()
    for tier in ladder.tiers[ladder.index(standing.tier_key) + 1 :]:
        for alternative in () if tier.invite_only else tier.upgrade:
            if not _bound(ladder, alternative, known)[0]:
                continue
            missing = {condition.metric for condition in alternative} - known.keys()
            if not missing:
                return SettlementCheck(
                    due=True, unmeasured=frozenset(), next_tier=None, milestones=()
                )
            unmeasured |= missing
    above = ladder.above(standing.tier_key)
    rewards = ladder.progress_rewards
    if above is None or rewards.points <= 0:
        return SettlementCheck(
            due=False, unmeasured=frozenset(unmeasured), next_tier=None, milestones=()
        )
    reached = max((_bound(ladder, a, known)[1] for a in above.upgrade), default=0)
    milestones = tuple(percent for percent in rewards.at_percent if reached >= percent)
    if milestones:
        unmeasured |= {c.metric for a in above.upgrade for c in a} - known.keys()
    return SettlementCheck(
        due=False, unmeasured=frozenset(unmeasured), next_tier=above.key, milestones=milestones
    )

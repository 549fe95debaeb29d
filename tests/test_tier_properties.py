"""The tier rules over random ladders and numbers: what domain.md promises, with no database.

Pure: only `core.tiers.rules` on ladders and metrics hypothesis draws. The ladders are
random like an operator's tiers.toml may be (any metric, `min` or `max`, several
alternatives), besides the shipped one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import DEFAULT_TIERS_FILE
from core.ladder import Ladder, Metric, load_ladder
from core.tiers.rules import (
    NO_ACTIVITY,
    ROW_METRICS,
    Metrics,
    ReviewResult,
    Standing,
    TierSource,
    earned_tier,
    progress,
    review_verdict,
    settlement_check,
)

DEFAULT = load_ladder(DEFAULT_TIERS_FILE)
ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2027, 3, 1, 4, 0, tzinfo=UTC)
#: Metrics a rule bounds from above by default (the others from below).
AT_MOST = {Metric.VIOLATIONS_90D}


def numbers(threshold_scale: int) -> st.SearchStrategy[int]:
    """Small numbers, large ones and the shipped thresholds' edges, where rules flip."""
    edges = [0, 1, 3, 12, 98, 50_000, 200_000, 500_000, 2_000_000, 5_000_000, 10_000_000]
    near = [max(0, edge + delta) for edge in edges for delta in (-1, 0, 1)]
    return st.one_of(st.integers(0, threshold_scale), st.sampled_from(near))


@st.composite
def metrics(draw: st.DrawFn) -> Metrics:
    """Numbers a shop can hold: 365-day spend is part of lifetime spend (core/wallet.py)."""
    total = draw(numbers(12_000_000))
    return Metrics(
        total_spent=total,
        spend_365d=draw(st.integers(0, total) | st.just(total)),
        purchases_6m=draw(numbers(40)),
        violations_90d=draw(st.integers(0, 3)),
        fulfilment_rate=draw(st.integers(0, 100)),
        referrals_active=draw(st.integers(0, 6)),
        joint_campaigns=draw(st.integers(0, 3)),
        growth_points=draw(numbers(200_000)),
    )


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    metric = draw(st.sampled_from(list(Metric)))
    bound = "max" if metric in AT_MOST or draw(st.integers(0, 9)) == 0 else "min"
    return {"metric": metric.value, bound: draw(numbers(6_000_000))}


@st.composite
def ladders(draw: st.DrawFn) -> Ladder:
    """The shipped ladder, or a random one with the shipped tiers' capabilities."""
    if draw(st.booleans()):
        return DEFAULT
    template = DEFAULT.model_dump()
    count = draw(st.integers(2, 6))
    tiers: list[dict[str, Any]] = []
    for index in range(count):
        tier = {**template["tiers"][min(index, len(DEFAULT.tiers) - 1)], "key": f"t{index}"}
        tier["upgrade"] = (
            draw(st.lists(st.lists(conditions(), min_size=1, max_size=3), max_size=2))
            if index
            else []
        )
        tier["keep"] = None
        tier["invite_only"] = bool(index) and draw(st.integers(0, 4)) == 0
        tiers.append(tier)
    growth = {
        **template["growth"],
        "fen_per_growth_point": draw(st.integers(0, 200)),
        "max_share_percent": draw(st.integers(0, 100)),
    }
    rewards = {
        "at_percent": draw(st.lists(st.integers(1, 100), max_size=3)),
        "points": draw(st.integers(0, 50)),
    }
    return Ladder.model_validate(
        {**template, "tiers": tiers, "growth": growth, "progress_rewards": rewards}
    )


def better(first: Metrics, second: Metrics) -> Metrics:
    """For each metric the value that suits a default rule better (more, or fewer violations)."""
    values = {
        metric: (min if metric in AT_MOST else max)(first.value(metric), second.value(metric))
        for metric in Metric
    }
    return Metrics.of(values)


def rank(ladder: Ladder, metrics: Metrics) -> int:
    return ladder.index(earned_tier(ladder, metrics).key)


# --- what the numbers earn --------------------------------------------------------------


@given(metrics(), metrics())
def test_better_numbers_never_earn_a_lower_tier(first: Metrics, second: Metrics) -> None:
    assert rank(DEFAULT, better(first, second)) >= rank(DEFAULT, first)


@given(ladders(), metrics())
def test_a_tier_whose_rule_is_met_is_never_placed_below(ladder: Ladder, numbers: Metrics) -> None:
    earned = rank(ladder, numbers)
    for index, tier in enumerate(ladder.tiers):
        if not tier.invite_only and progress(ladder, tier.key, tier.upgrade, numbers).met:
            assert earned >= index
    assert not earned_tier(ladder, numbers).invite_only


@given(ladders(), metrics())
def test_progress_runs_0_to_100_and_reaches_100_only_when_met(
    ladder: Ladder, numbers: Metrics
) -> None:
    for tier in ladder.tiers:
        way = progress(ladder, tier.key, tier.upgrade, numbers)
        assert 0 <= way.percent <= 100
        assert (way.percent == 100) == way.met
        for condition in way.conditions:
            assert 0 <= condition.percent <= 100
            assert condition.left == 0 or not condition.met


@given(metrics(), st.integers(0, 10_000_000))
def test_growth_points_stand_in_for_at_most_their_share_of_a_spend(
    numbers: Metrics, growth: int
) -> None:
    rules = DEFAULT.growth
    for tier in DEFAULT.tiers:
        way = progress(DEFAULT, tier.key, tier.upgrade, replace(numbers, growth_points=growth))
        for condition in way.conditions:
            assert condition.growth_credit <= condition.required * rules.max_share_percent // 100
            assert condition.growth_credit <= growth * rules.fen_per_growth_point


def test_a_member_who_has_done_nothing_stands_at_the_entry_at_0_percent() -> None:
    assert earned_tier(DEFAULT, NO_ACTIVITY) == DEFAULT.entry
    above = DEFAULT.above(DEFAULT.entry.key)
    assert above is not None
    assert progress(DEFAULT, above.key, above.upgrade, NO_ACTIVITY).percent == 0


# --- the check after a purchase or check-in ---------------------------------------------


@st.composite
def standings(draw: st.DrawFn, ladder: Ladder, numbers: Metrics) -> Standing:
    source = draw(st.sampled_from(list(TierSource)))
    trial_until = None
    if source is TierSource.TRIAL:
        trial_until = NOW + timedelta(days=draw(st.integers(-40, 40)))
    return Standing(
        member_id=1,
        tier_key=draw(st.sampled_from([tier.key for tier in ladder.tiers])),
        tier_source=source.value,
        trial_until=trial_until,
        total_spent=numbers.total_spent,
        joint_campaigns=numbers.joint_campaigns,
        growth_points=numbers.growth_points,
    )


@settings(max_examples=300)
@given(st.data())
def test_the_quick_check_equals_the_full_one(data: st.DataObject) -> None:
    """Whatever is measured up front, measuring what the check names gives the answer the
    full metrics give: due exactly when a trial is over or a higher tier is earned, and
    the milestones reached toward the next tier otherwise."""
    ladder = data.draw(ladders())
    numbers = data.draw(metrics())
    standing = data.draw(standings(ladder, numbers))
    measurable = sorted(set(Metric) - ROW_METRICS)
    first = set(data.draw(st.lists(st.sampled_from(measurable), unique=True)))

    check = settlement_check(ladder, standing, {m: numbers.value(m) for m in first}, NOW)
    if check.unmeasured and not check.due:
        assert not check.unmeasured & first
        known = first | check.unmeasured
        check = settlement_check(ladder, standing, {m: numbers.value(m) for m in known}, NOW)
        assert not check.unmeasured

    earned = rank(ladder, numbers) > ladder.index(standing.tier_key)
    assert check.due == (standing.trial_over(NOW) or earned)
    above = ladder.above(standing.tier_key)
    if check.due or above is None or ladder.progress_rewards.points <= 0:
        assert check.milestones == ()
        return
    reached = progress(ladder, above.key, above.upgrade, numbers).percent
    assert check.next_tier == above.key
    assert check.milestones == tuple(
        percent for percent in ladder.progress_rewards.at_percent if reached >= percent
    )


def test_an_unmet_fulfilment_rate_can_carry_progress_past_a_milestone() -> None:
    """`progress` leaves a met fulfilment rate out of the average but counts an unmet one,
    so 90 % lifts a gold member at 30 % of platinum's spend past 50 %: the quick check
    cannot skip measuring it, whatever lifetime spend says."""
    numbers = Metrics(
        total_spent=600_000,
        spend_365d=600_000,
        purchases_6m=0,
        violations_90d=0,
        fulfilment_rate=90,
        referrals_active=0,
        joint_campaigns=0,
        growth_points=0,
    )
    platinum = DEFAULT.tier("platinum")
    assert progress(DEFAULT, "platinum", platinum.upgrade, numbers).percent == (30 + 91) // 2
    standing = Standing(1, "gold", TierSource.RULES.value, None, 600_000, 0, 0)
    check = settlement_check(DEFAULT, standing, {}, NOW)
    assert check.unmeasured == {Metric.SPEND_365D, Metric.FULFILMENT_RATE}
    measured = {Metric.SPEND_365D: 600_000, Metric.FULFILMENT_RATE: 90}
    assert settlement_check(DEFAULT, standing, measured, NOW).milestones == (50,)


@given(metrics())
def test_far_from_every_threshold_the_row_alone_settles_it(numbers: Metrics) -> None:
    """A silver member well short of gold's spend needs nothing measured (the common case)."""
    numbers = replace(numbers, total_spent=min(numbers.total_spent, 100_000), growth_points=0)
    standing = Standing(1, "silver", TierSource.RULES.value, None, numbers.total_spent, 0, 0)
    check = settlement_check(DEFAULT, standing, {}, NOW)
    assert check == replace(check, due=False, unmeasured=frozenset(), milestones=())


# --- the quarterly review ---------------------------------------------------------------


def quarter_ends(count: int) -> list[datetime]:
    ends, moment = [], datetime(2027, 1, 1, tzinfo=ZONE)
    for _ in range(count):
        ends.append(moment.astimezone(UTC))
        month = moment.month + 3
        moment = moment.replace(year=moment.year + (month - 1) // 12, month=(month - 1) % 12 + 1)
    return ends


@given(
    st.lists(st.booleans(), min_size=1, max_size=12),
    st.integers(1, 3),
    st.integers(0, 9),
    st.sampled_from(["silver", "gold", "platinum", "diamond", "black_diamond"]),
)
def test_reviews_protect_before_they_drop_and_drop_one_tier(
    met: list[bool], consecutive: int, protection: int, tier: str
) -> None:
    template = DEFAULT.model_dump()
    rules = {"consecutive_quarters": consecutive, "protection_months": protection}
    ladder = Ladder.model_validate({**template, "review": rules})
    quarters_below, protected_until = 0, None
    slips = 0
    for passed, ended in zip(met, quarter_ends(len(met)), strict=True):
        verdict = review_verdict(
            ladder,
            tier,
            met=passed,
            quarters_below=quarters_below,
            protected_until=protected_until,
            ended=ended,
            zone=ZONE,
        )
        slips = 0 if passed else slips + 1
        if passed:
            assert verdict.result is ReviewResult.KEPT
        if verdict.result is ReviewResult.DROPPED:
            # Only a protection that has run out drops, and only after enough slips.
            assert protected_until is not None
            assert protected_until <= ended
            assert slips >= consecutive + 1
            below = ladder.below(tier)
            assert below is not None
            assert verdict.to_tier == below.key
            return
        assert verdict.to_tier == tier
        if protected_until is not None and protected_until > ended:
            assert verdict.result is not ReviewResult.DROPPED
        if verdict.result is ReviewResult.PROTECTED:
            assert verdict.protected_until is not None
            assert verdict.protected_until >= ended
        quarters_below, protected_until = verdict.quarters_below, verdict.protected_until

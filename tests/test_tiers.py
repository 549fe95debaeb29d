"""The tier engine on real databases: rules at their edges, progress, reviews, trials."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import fields
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from core.clock import ManualClock
from core.config import DEFAULT_TIERS_FILE
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder, Metric, load_ladder
from core.models import (
    Category,
    Member,
    OrderStatus,
    PointLot,
    Product,
    TierChange,
    TierReview,
    Violation,
)
from core.tiers.moves import ProgressReward, Promotion, Tiers
from core.tiers.review import QuarterlyReview
from core.tiers.rules import ReviewResult
from core.uow import Database
from tests.conftest import SHOP_ZONE, START
from tests.factories import make_order

_serial = itertools.count(1)


@pytest.fixture
def ladder() -> Ladder:
    return load_ladder(DEFAULT_TIERS_FILE)


@pytest.fixture
def tiers(db: Database, ladder: Ladder, clock: ManualClock) -> Tiers:
    return Tiers(db, ladder, clock)


@pytest.fixture
def review(db: Database, ladder: Ladder, clock: ManualClock) -> QuarterlyReview:
    return QuarterlyReview(db, ladder, clock, SHOP_ZONE)


async def add_member(db: Database, clock: ManualClock, **values: Any) -> int:
    number = next(_serial)
    async with db.transaction() as session:
        member = Member(
            telegram_id=10_000 + number,
            referral_code=f"T{number:07d}",
            created_at=clock.now(),
            **values,
        )
        session.add(member)
        await session.flush()
        return member.id


async def add_orders(
    db: Database,
    clock: ManualClock,
    member_id: int,
    totals: list[int],
    *,
    status: OrderStatus = OrderStatus.DELIVERED,
    days_ago: float = 1,
) -> list[int]:
    at = clock.now() - timedelta(days=days_ago)
    async with db.transaction() as session:
        product_id = await session.scalar(select(Product.id).limit(1))
        if product_id is None:
            category = Category(slug="games", name_zh="点卡", name_en="Game cards")
            session.add(category)
            await session.flush()
            product = Product(
                sku="GAME-100", category_id=category.id, name_zh="点卡", name_en="Card",
                base_price=100, created_at=START,
            )  # fmt: skip
            session.add(product)
            await session.flush()
            product_id = product.id
        return [
            await make_order(session, member_id, product_id, at=at, total=total, status=status)
            for total in totals
        ]


async def add_violation(db: Database, clock: ManualClock, member_id: int, days_ago: float) -> None:
    async with db.transaction() as session:
        session.add(
            Violation(
                member_id=member_id,
                reason="chargeback",
                actor="admin:1",
                created_at=clock.now() - timedelta(days=days_ago),
            )
        )


async def member_row(db: Database, member_id: int) -> Member:
    async with db.read() as session:
        row = await session.get(Member, member_id)
        assert row is not None
        return row


async def changes(db: Database, member_id: int) -> list[tuple[str, str, str, str]]:
    async with db.read() as session:
        rows = await session.scalars(
            select(TierChange).where(TierChange.member_id == member_id).order_by(TierChange.id)
        )
        return [(r.from_tier, r.to_tier, r.reason, r.actor) for r in rows]


async def count(db: Database, model: Any) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def local(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 10, 0, tzinfo=SHOP_ZONE)


# --- metrics ----------------------------------------------------------------------------


async def test_metrics_read_every_window_from_the_database(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    me = await add_member(db, clock, total_spent=12_345, growth_points=7, joint_campaigns=2)
    await add_orders(db, clock, me, [100], days_ago=10)
    await add_orders(db, clock, me, [200], status=OrderStatus.PAID, days_ago=200)
    await add_orders(db, clock, me, [400], days_ago=400)
    await add_orders(db, clock, me, [50], status=OrderStatus.FAILED, days_ago=5)
    await add_orders(db, clock, me, [70], status=OrderStatus.REFUNDED, days_ago=20)
    await add_orders(db, clock, me, [30], status=OrderStatus.PLACED, days_ago=0)
    await add_violation(db, clock, me, days_ago=10)
    await add_violation(db, clock, me, days_ago=100)
    async with db.transaction() as session:
        session.add(
            Violation(member_id=me, serious=False, reason="late", actor="a", created_at=clock.now())
        )
    active = await add_member(db, clock, referrer_id=me)
    await add_orders(db, clock, active, [10], days_ago=30)
    await add_member(db, clock, referrer_id=me)
    lapsed = await add_member(db, clock, referrer_id=me)
    await add_orders(db, clock, lapsed, [10], days_ago=400)
    stranger = await add_member(db, clock)
    await add_orders(db, clock, stranger, [999], days_ago=1)

    metrics = await tiers.metrics(me)

    assert {f.name for f in fields(metrics)} == {m.value for m in Metric}
    assert metrics.total_spent == 12_345
    assert metrics.spend_365d == 300
    assert metrics.purchases_6m == 1
    assert metrics.violations_90d == 1
    assert metrics.fulfilment_rate == 50  # 2 of paid, delivered, failed, refunded
    assert metrics.referrals_active == 1
    assert metrics.joint_campaigns == 2
    assert metrics.growth_points == 7
    assert (await tiers.metrics(stranger)).fulfilment_rate == 100
    assert (await tiers.metrics(await add_member(db, clock))).fulfilment_rate == 100


async def test_metrics_of_an_unknown_member_refuse(tiers: Tiers) -> None:
    with pytest.raises(ShopError) as caught:
        await tiers.metrics(999)
    assert caught.value.code is ErrorCode.MEMBER_NOT_FOUND


# --- rules at their edges -----------------------------------------------------------------


async def _referrals(db: Database, clock: ManualClock, referrer: int, active: int) -> None:
    for _ in range(active):
        friend = await add_member(db, clock, referrer_id=referrer)
        await add_orders(db, clock, friend, [100], days_ago=3)


async def _setup(db: Database, clock: ManualClock, case: str, short: int) -> int:
    """A member exactly at `case`'s thresholds, or `short` under the first one."""
    if case == "silver":
        return await add_member(db, clock, total_spent=50_000 - short)
    if case == "silver_by_orders":
        me = await add_member(db, clock, total_spent=1_200)
        await add_orders(db, clock, me, [100] * (12 - short), days_ago=170)
        return me
    if case == "gold":
        return await add_member(db, clock, total_spent=500_000 - short)
    spend = {"platinum": 2_000_000, "diamond": 5_000_000, "black_diamond": 10_000_000}[case]
    me = await add_member(
        db, clock, total_spent=spend, joint_campaigns=1 if case == "black_diamond" else 0
    )
    await add_orders(db, clock, me, [spend - short], days_ago=300)
    if case != "platinum":
        await _referrals(db, clock, me, 3)
    return me


@pytest.mark.parametrize(
    ("case", "reached", "one_fen_under"),
    [
        ("silver", "silver", "member"),
        ("silver_by_orders", "silver", "member"),
        ("gold", "gold", "silver"),
        ("platinum", "platinum", "gold"),
        ("diamond", "diamond", "platinum"),
        ("black_diamond", "black_diamond", "diamond"),
    ],
)
async def test_exactly_at_a_threshold_upgrades_and_one_under_does_not(
    db: Database, clock: ManualClock, tiers: Tiers, case: str, reached: str, one_fen_under: str
) -> None:
    at = await _setup(db, clock, case, 0)
    under = await _setup(db, clock, case, 1)

    assert (await tiers.evaluate(at)).rules_tier == reached
    assert (await tiers.evaluate(under)).rules_tier == one_fen_under
    change = (await tiers.promote(at, reason="purchase")).change
    assert change is not None
    assert (change.from_tier, change.to_tier) == ("member", reached)
    assert (await member_row(db, at)).tier_key == reached
    assert await changes(db, at) == [("member", reached, "purchase", "system")]
    await tiers.promote(under, reason="purchase")
    assert (await member_row(db, under)).tier_key == one_fen_under


async def test_gold_is_blocked_by_a_violation_in_the_last_90_days_only(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    recent = await add_member(db, clock, total_spent=500_000)
    await add_violation(db, clock, recent, days_ago=89)
    old = await add_member(db, clock, total_spent=500_000)
    await add_violation(db, clock, old, days_ago=91)

    assert (await tiers.promote(recent, reason="purchase")).change is not None
    assert (await member_row(db, recent)).tier_key == "silver"
    await tiers.promote(old, reason="purchase")
    assert (await member_row(db, old)).tier_key == "gold"


@pytest.mark.parametrize(("failed", "expected"), [(1, "platinum"), (2, "gold")])
async def test_platinum_needs_a_98_percent_fulfilment_rate(
    db: Database, clock: ManualClock, tiers: Tiers, failed: int, expected: str
) -> None:
    me = await add_member(db, clock, total_spent=2_000_000)
    ok = 50 - failed
    await add_orders(db, clock, me, [2_000_000 - 100 * (ok - 1)] + [100] * (ok - 1))
    await add_orders(db, clock, me, [100] * failed, status=OrderStatus.FAILED)

    assert (await tiers.metrics(me)).fulfilment_rate == ok * 100 // 50
    await tiers.promote(me, reason="purchase")
    assert (await member_row(db, me)).tier_key == expected


async def test_diamond_needs_three_active_referrals_and_black_diamond_a_joint_campaign(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    me = await add_member(db, clock, total_spent=10_000_000)
    await add_orders(db, clock, me, [10_000_000])
    await _referrals(db, clock, me, 2)
    assert (await tiers.evaluate(me)).rules_tier == "platinum"
    await _referrals(db, clock, me, 1)
    assert (await tiers.evaluate(me)).rules_tier == "diamond"

    change = await tiers.set_joint_campaigns(me, 1, actor="admin:7")

    assert change is not None
    assert change.to_tier == "black_diamond"
    assert await changes(db, me) == [("member", "black_diamond", "joint_campaigns", "admin:7")]
    assert (await tiers.evaluate(me)).next_tier is None  # the partner tier is by invitation


async def test_growth_points_stand_in_for_at_most_a_fifth_of_spend(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    enough = await add_member(db, clock, total_spent=40_000, growth_points=100)
    one_short = await add_member(db, clock, total_spent=40_000, growth_points=99)
    capped = await add_member(db, clock, total_spent=39_999, growth_points=100_000)

    assert (await tiers.evaluate(enough)).rules_tier == "silver"
    assert (await tiers.evaluate(one_short)).rules_tier == "member"
    evaluation = await tiers.evaluate(capped)
    assert evaluation.rules_tier == "member"
    assert evaluation.progress is not None
    (spend,) = evaluation.progress.conditions
    assert (spend.current, spend.growth_credit, spend.left) == (49_999, 10_000, 1)


# --- progress and its rewards ----------------------------------------------------------


async def test_progress_shows_exactly_what_is_left(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    me = await add_member(db, clock, total_spent=30_000, growth_points=50)
    await add_orders(db, clock, me, [100] * 3)

    evaluation = await tiers.evaluate(me)

    assert (evaluation.tier, evaluation.next_tier, evaluation.rules_tier) == (
        "member",
        "silver",
        "member",
    )
    progress = evaluation.progress
    assert progress is not None
    assert (progress.tier, progress.percent, progress.met) == ("silver", 70, False)
    (spend,) = progress.conditions  # the spend alternative (70%) beats 3 of 12 orders (25%)
    assert spend.metric is Metric.TOTAL_SPENT
    assert (spend.current, spend.required, spend.left, spend.percent, spend.met) == (
        35_000,
        50_000,
        15_000,
        70,
        False,
    )
    assert spend.growth_credit == 5_000

    silver = await add_member(db, clock, tier_key="silver", total_spent=200_000)
    await add_violation(db, clock, silver, days_ago=1)
    progress = (await tiers.evaluate(silver)).progress
    assert progress is not None
    assert progress.tier == "gold"
    spent, clean = progress.conditions
    assert (spent.left, spent.percent) == (300_000, 40)
    assert (clean.metric, clean.bound, clean.left, clean.percent, clean.met) == (
        Metric.VIOLATIONS_90D,
        "max",
        1,
        0,
        False,
    )
    assert progress.percent == 20


async def _reward_keys(db: Database, member_id: int) -> list[tuple[str, int]]:
    async with db.read() as session:
        rows = await session.scalars(
            select(PointLot).where(PointLot.member_id == member_id).order_by(PointLot.source_key)
        )
        return [(row.source_key, row.amount) for row in rows]


async def test_progress_rewards_are_paid_once_at_50_and_80_percent(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    me = await add_member(db, clock, total_spent=24_999)
    await tiers.promote(me, reason="checkin")
    assert await _reward_keys(db, me) == []

    async with db.transaction() as session:
        (await session.get(Member, me)).total_spent = 25_000  # type: ignore[union-attr]
    first = await tiers.promote(me, reason="purchase")
    assert first == Promotion(rewards=(ProgressReward(tier="silver", percent=50, points=50),))
    assert await tiers.promote(me, reason="checkin") == Promotion()
    assert await _reward_keys(db, me) == [(f"progress:{me}:silver:50", 50)]

    async with db.transaction() as session:
        (await session.get(Member, me)).total_spent = 40_000  # type: ignore[union-attr]
    results = await asyncio.gather(*(tiers.promote(me, reason="purchase") for _ in range(5)))

    assert sorted(results, key=lambda r: len(r.rewards)) == [Promotion()] * 4 + [
        Promotion(rewards=(ProgressReward(tier="silver", percent=80, points=50),))
    ]
    assert await _reward_keys(db, me) == [
        (f"progress:{me}:silver:50", 50),
        (f"progress:{me}:silver:80", 50),
    ]
    assert await changes(db, me) == []


@pytest.mark.parametrize("tier", ["silver", "gold"])
async def test_a_condition_met_by_default_is_no_progress_and_earns_no_reward(
    db: Database, clock: ManualClock, tiers: Tiers, tier: str
) -> None:
    """A new 白银 member has no violations and no orders to fail: 0% toward 黄金, not 50%;
    likewise 黄金 toward 铂金 (fulfilment ≥ 98% with no orders)."""
    me = await add_member(db, clock, tier_key=tier)

    progress = (await tiers.evaluate(me)).progress
    assert progress is not None
    assert all(c.met for c in progress.conditions if c.bound == "max")
    assert progress.percent == 0
    assert await tiers.promote(me, reason="checkin") == Promotion()
    assert await _reward_keys(db, me) == []


async def test_real_progress_counts_and_an_unmet_default_condition_holds_it_back(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    me = await add_member(db, clock, tier_key="silver", total_spent=250_000)

    progress = (await tiers.evaluate(me)).progress
    assert progress is not None
    assert progress.percent == 50
    promotion = await tiers.promote(me, reason="purchase")
    assert promotion.rewards == (ProgressReward(tier="gold", percent=50, points=50),)

    await add_violation(db, clock, me, days_ago=1)
    progress = (await tiers.evaluate(me)).progress
    assert progress is not None
    assert progress.percent == 25  # half the spend, the violation still to wait out


async def test_concurrent_promotions_record_one_tier_change(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    me = await add_member(db, clock, total_spent=50_000)

    results = await asyncio.gather(*(tiers.promote(me, reason="purchase") for _ in range(10)))

    assert sum(result.change is not None for result in results) == 1
    assert await changes(db, me) == [("member", "silver", "purchase", "system")]
    assert (await member_row(db, me)).tier_key == "silver"


async def test_promote_never_moves_down_and_keeps_admin_tiers_unless_up(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    admin_gold = await add_member(db, clock, tier_key="gold", tier_source="admin")
    assert (await tiers.promote(admin_gold, reason="purchase")).change is None
    assert (await member_row(db, admin_gold)).tier_key == "gold"

    async with db.transaction() as session:
        (await session.get(Member, admin_gold)).total_spent = 2_000_000  # type: ignore[union-attr]
    await add_orders(db, clock, admin_gold, [2_000_000])
    change = (await tiers.promote(admin_gold, reason="purchase")).change
    assert change is not None
    assert change.to_tier == "platinum"
    assert (await member_row(db, admin_gold)).tier_source == "rules"


# --- quarterly review -------------------------------------------------------------------


async def test_two_quarters_below_protect_then_drop_one_tier(
    db: Database, clock: ManualClock, tiers: Tiers, review: QuarterlyReview
) -> None:
    slipping = await add_member(db, clock, tier_key="silver")
    steady = await add_member(db, clock, tier_key="silver")
    await add_orders(db, clock, steady, [20_000], days_ago=60)  # in 2026Q3
    admin_gold = await add_member(db, clock, tier_key="gold", tier_source="admin")
    await add_member(db, clock)

    first = await review.run()
    assert [(o.member_id, o.quarter, o.outcome) for o in first] == [
        (slipping, "2026Q3", ReviewResult.WARNED),
        (steady, "2026Q3", ReviewResult.KEPT),
    ]
    assert [c.metric for c in first[0].unmet] == [Metric.SPEND_365D]
    assert first[0].telegram_id == (await member_row(db, slipping)).telegram_id
    assert (await member_row(db, slipping)).quarters_below == 1

    again = await review.run()
    assert [(o.member_id, o.outcome, o.recorded) for o in again] == [
        (slipping, ReviewResult.WARNED, True),
        (steady, ReviewResult.KEPT, True),
    ]
    assert await count(db, TierReview) == 2
    assert (await member_row(db, slipping)).quarters_below == 1

    clock.set(local(2027, 1, 2))
    (second, _) = await review.run()
    assert (second.quarter, second.outcome) == ("2026Q4", ReviewResult.PROTECTED)
    # Three months from the end of the quarter reviewed: all of 2027Q1 to recover.
    assert second.protected_until == datetime(2027, 4, 1, tzinfo=SHOP_ZONE)
    evaluation = await tiers.evaluate(slipping)
    assert evaluation.in_protection
    assert evaluation.tier == "silver"

    clock.set(local(2027, 4, 1))
    (preview, _) = await review.run(dry_run=True)
    assert (preview.quarter, preview.outcome, preview.from_tier, preview.to_tier) == (
        "2027Q1",
        ReviewResult.DROPPED,
        "silver",
        "member",
    )
    assert await count(db, TierReview) == 4
    assert (await member_row(db, slipping)).tier_key == "silver"
    assert await changes(db, slipping) == []

    (third, kept) = await review.run()
    assert (third.quarter, third.outcome, third.to_tier) == (
        "2027Q1",
        ReviewResult.DROPPED,
        "member",
    )
    assert kept.outcome is ReviewResult.KEPT
    row = await member_row(db, slipping)
    assert (row.tier_key, row.quarters_below, row.protected_until) == ("member", 0, None)
    assert await changes(db, slipping) == [("silver", "member", "quarterly_review", "system")]

    rerun = await review.run(quarter="2027Q1")
    assert [(o.member_id, o.outcome, o.to_tier, o.recorded) for o in rerun] == [
        (slipping, ReviewResult.DROPPED, "member", True),
        (steady, ReviewResult.KEPT, "silver", True),
    ]
    assert await changes(db, slipping) == [("silver", "member", "quarterly_review", "system")]
    assert await count(db, TierReview) == 6
    assert (await member_row(db, admin_gold)).tier_key == "gold"


def at(day: date, moment: time) -> datetime:
    return datetime.combine(day, moment, SHOP_ZONE)


FIRST_SECONDS = time(0, 0, 10)
LATER_SECONDS = time(0, 0, 40)
LAST_SECONDS = time(23, 59, 50)


@pytest.mark.parametrize(
    ("protected_at", "reviewed_at"),
    [
        (at(date(2027, 1, 1), FIRST_SECONDS), at(date(2027, 4, 1), LATER_SECONDS)),
        (at(date(2027, 1, 1), LATER_SECONDS), at(date(2027, 4, 1), FIRST_SECONDS)),
        (at(date(2027, 3, 31), LAST_SECONDS), at(date(2027, 4, 1), FIRST_SECONDS)),
        (at(date(2027, 1, 1), FIRST_SECONDS), at(date(2027, 6, 30), LAST_SECONDS)),
    ],
)
async def test_protection_ends_with_a_quarter_whatever_second_the_reviews_run(
    db: Database,
    clock: ManualClock,
    review: QuarterlyReview,
    protected_at: datetime,
    reviewed_at: datetime,
) -> None:
    """A protected member drops at the review of the quarter the protection covered,
    whether the reviews ran in the first or the last seconds of their quarters."""
    await add_member(db, clock, tier_key="silver", quarters_below=1)

    clock.set(protected_at)
    (protected,) = await review.run()
    assert (protected.quarter, protected.outcome) == ("2026Q4", ReviewResult.PROTECTED)
    assert protected.protected_until == datetime(2027, 4, 1, tzinfo=SHOP_ZONE)

    clock.set(reviewed_at)
    (dropped,) = await review.run()
    assert (dropped.quarter, dropped.outcome, dropped.to_tier) == (
        "2027Q1",
        ReviewResult.DROPPED,
        "member",
    )


@pytest.mark.parametrize("reviewed_at", [FIRST_SECONDS, LATER_SECONDS])
async def test_a_review_measures_the_quarter_not_the_moment_it_runs(
    db: Database, clock: ManualClock, review: QuarterlyReview, reviewed_at: time
) -> None:
    """An order paid in the first seconds of 2027Q2 belongs to the next review."""
    me = await add_member(db, clock, tier_key="silver")
    clock.set(at(date(2027, 4, 1), time(0, 0, 5)))
    await add_orders(db, clock, me, [20_000], days_ago=0)

    clock.set(at(date(2027, 4, 1), reviewed_at))
    (outcome,) = await review.run()

    assert (outcome.quarter, outcome.outcome) == ("2027Q1", ReviewResult.WARNED)


async def test_meeting_the_rule_again_ends_protection(
    db: Database, clock: ManualClock, review: QuarterlyReview
) -> None:
    me = await add_member(
        db, clock, tier_key="gold", quarters_below=2, protected_until=clock.now() + timedelta(1)
    )
    await add_orders(db, clock, me, [200_000], days_ago=60)  # in 2026Q3

    (outcome,) = await review.run(quarter="2026Q3")

    assert (outcome.outcome, outcome.unmet) == (ReviewResult.KEPT, ())
    row = await member_row(db, me)
    assert (row.quarters_below, row.protected_until) == (0, None)


async def test_a_malformed_quarter_is_refused(review: QuarterlyReview) -> None:
    with pytest.raises(ShopError) as caught:
        await review.run(quarter="2026-4")
    assert caught.value.code is ErrorCode.INVALID_INPUT


# --- fast track and trials ----------------------------------------------------------------


async def test_fast_track_trial_ends_back_at_the_base_tier(
    db: Database, clock: ManualClock, tiers: Tiers, ladder: Ladder
) -> None:
    me = await add_member(db, clock)
    (order,) = await add_orders(db, clock, me, [100_000], days_ago=0)

    change = await tiers.fast_track(me, 100_000, order)

    assert change is not None
    assert (change.from_tier, change.to_tier, change.reason) == ("member", "silver", "fast_track")
    row = await member_row(db, me)
    assert (row.tier_source, row.trial_base_tier) == ("trial", "member")
    assert row.trial_until == clock.now() + timedelta(days=ladder.fast_track.trial_days)
    assert await tiers.fast_track(me, 100_000, order) is None

    clock.advance(timedelta(days=29))
    assert await tiers.expire_trials() == 0
    clock.advance(timedelta(days=1))
    assert await tiers.expire_trials() == 1

    row = await member_row(db, me)
    assert (row.tier_key, row.tier_source, row.trial_until) == ("member", "rules", None)
    assert await changes(db, me) == [
        ("member", "silver", "fast_track", "system"),
        ("silver", "member", "trial_ended", "system"),
    ]
    assert await tiers.fast_track(me, 100_000, order) is None


async def test_trial_ends_at_the_rules_tier_when_that_is_higher(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    me = await add_member(db, clock, total_spent=100_000)
    (order,) = await add_orders(db, clock, me, [100_000], days_ago=0)
    await tiers.promote(me, reason="purchase")

    assert (await tiers.fast_track(me, 100_000, order)) is not None
    clock.advance(timedelta(days=31))
    change = (await tiers.promote(me, reason="checkin")).change

    assert change is not None
    assert (change.from_tier, change.to_tier) == ("gold", "silver")
    assert await changes(db, me) == [
        ("member", "silver", "purchase", "system"),
        ("silver", "gold", "fast_track", "system"),
        ("gold", "silver", "trial_ended", "system"),
    ]


@pytest.mark.parametrize("earlier_order", [True, False])
async def test_fast_track_needs_a_big_enough_first_order(
    db: Database, clock: ManualClock, tiers: Tiers, earlier_order: bool
) -> None:
    me = await add_member(db, clock)
    if earlier_order:
        await add_orders(db, clock, me, [100], days_ago=5)
    (order,) = await add_orders(db, clock, me, [100_000], days_ago=0)
    total = 100_000 if earlier_order else 99_999

    assert await tiers.fast_track(me, total, order) is None
    assert (await member_row(db, me)).tier_key == "member"


# --- admin ---------------------------------------------------------------------------------


async def test_admin_actions_are_recorded_with_their_actor(
    db: Database, clock: ManualClock, tiers: Tiers, review: QuarterlyReview
) -> None:
    me = await add_member(db, clock)

    await tiers.set_tier(me, "gold", actor="admin:42", reason="wholesale deal")
    assert (await member_row(db, me)).tier_source == "admin"
    await tiers.invite_partner(me, actor="admin:43")
    row = await member_row(db, me)
    assert (row.tier_key, row.tier_source) == ("partner", "invite")
    with pytest.raises(ShopError) as caught:
        await tiers.set_tier(me, "emperor", actor="admin:42", reason="typo")
    assert caught.value.code is ErrorCode.UNKNOWN_TIER

    history = await tiers.history(me)
    assert [(h.from_tier, h.to_tier, h.reason, h.actor) for h in history] == [
        ("member", "gold", "wholesale deal", "admin:42"),
        ("gold", "partner", "invite", "admin:43"),
    ]
    assert (await tiers.promote(me, reason="purchase")).change is None
    assert await review.run(quarter="2026Q3") == []


async def test_grant_trial_and_flag_violation(
    db: Database, clock: ManualClock, tiers: Tiers
) -> None:
    me = await add_member(db, clock, tier_key="silver", total_spent=500_000)
    violation = await tiers.flag_violation(me, reason="chargeback", actor="admin:5")
    assert (violation.member_id, violation.actor, violation.serious) == (me, "admin:5", True)
    assert (await tiers.evaluate(me)).rules_tier == "silver"

    change = await tiers.grant_trial(me, actor="admin:5", days=7)
    assert (change.to_tier, change.reason, change.actor) == ("gold", "trial", "admin:5")
    assert (await member_row(db, me)).trial_until == clock.now() + timedelta(days=7)

    top = await add_member(db, clock, tier_key="black_diamond")
    with pytest.raises(ShopError) as caught:
        await tiers.grant_trial(top, actor="admin:5")
    assert caught.value.code is ErrorCode.NO_HIGHER_TIER


# --- capabilities ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "capability", "required"),
    [
        ("member", "export", "gold"),
        ("silver", "export", "gold"),
        ("gold", "api", "platinum"),
        ("platinum", "manager", "diamond"),
        ("gold", "reservation", "platinum"),
    ],
)
def test_require_names_the_lowest_tier_that_has_it(
    tiers: Tiers, tier: str, capability: str, required: str
) -> None:
    with pytest.raises(ShopError) as caught:
        tiers.require(tier, capability)
    assert caught.value.code is ErrorCode.NOT_ALLOWED_FOR_TIER
    assert caught.value.params == {"capability": capability, "required": required}
    tiers.require(required, capability)
    tiers.require("partner", capability)


def test_require_takes_only_on_off_capabilities(tiers: Tiers) -> None:
    with pytest.raises(ValueError, match="on/off"):
        tiers.require("gold", "batch_max")


async def test_the_default_quarter_is_the_one_just_ended_in_shop_time(
    db: Database, clock: ManualClock, review: QuarterlyReview
) -> None:
    await add_member(db, clock, tier_key="silver")
    # 00:01 on 1 January in Shanghai, still 31 December in UTC.
    clock.set(local(2027, 1, 1) - timedelta(hours=10) + timedelta(minutes=1))

    (outcome,) = await review.run()

    assert outcome.quarter == "2026Q4"

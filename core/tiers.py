"""The tier engine: what a member's numbers earn, how tiers move, and what a tier unlocks.

Rules and numbers come from the ladder (core/tiers.toml); this module only reads them.
Every move is made on a locked member row inside one transaction and leaves a
`tier_changes` row, so concurrent purchases, a retried job or a re-run review move a
member once and the history always explains the current tier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, Select, and_, bindparam, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.clock import Clock, add_months, quarter_of
from core.errors import ErrorCode, ShopError
from core.ladder import SPEND_METRICS, Capabilities, Condition, Ladder, Metric, Rule, Tier
from core.members import load_member
from core.models import Member, Order, PointLot, TierChange, TierReview, UTCDateTime, Violation
from core.points import award_points
from core.uow import Database

#: Windows that define the metrics named in tiers.toml (spend_365d, purchases_6m, ...).
YEAR = timedelta(days=365)
HALF_YEAR = timedelta(days=182)
VIOLATION_WINDOW = timedelta(days=90)

#: Orders whose money the shop kept; only these count as spend.
PAID_STATUSES = ("paid", "delivered")
#: Orders that reached an end (delivered or not): the base of the fulfilment rate.
SETTLED_STATUSES = ("paid", "delivered", "failed", "refunded")

QUARTER_LABEL = re.compile(r"^\d{4}Q[1-4]$")
SYSTEM = "system"
#: `point_lots.source` of the points paid at 50 % / 80 % of the way to the next tier.
REWARD_SOURCE = "reward"


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


@dataclass(frozen=True, slots=True)
class Evaluation:
    member_id: int
    tier: str
    tier_source: str
    rules_tier: str
    next_tier: str | None
    progress: Progress | None
    metrics: Metrics
    protected_until: datetime | None
    trial_until: datetime | None
    in_protection: bool


@dataclass(frozen=True, slots=True)
class TierChangeView:
    id: int
    member_id: int
    from_tier: str
    to_tier: str
    reason: str
    actor: str
    created_at: datetime

    @classmethod
    def of(cls, row: TierChange) -> TierChangeView:
        return cls(
            id=row.id,
            member_id=row.member_id,
            from_tier=row.from_tier,
            to_tier=row.to_tier,
            reason=row.reason,
            actor=row.actor,
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class ProgressReward:
    """Points paid for crossing `percent` of the way to `tier`."""

    tier: str
    percent: int
    points: int


@dataclass(frozen=True, slots=True)
class Promotion:
    """What settling a member after an activity did: a tier move, rewards paid, or neither.

    Returned to the conversation that caused it, so the member hears of both at once.
    """

    change: TierChangeView | None = None
    rewards: tuple[ProgressReward, ...] = ()

    @property
    def to_tier(self) -> str | None:
        return self.change.to_tier if self.change is not None else None


@dataclass(frozen=True, slots=True)
class ViolationView:
    id: int
    member_id: int
    serious: bool
    reason: str
    actor: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    """What a quarterly review did (or, in a dry run, would do) to one member."""

    member_id: int
    telegram_id: int | None
    locale: str | None
    quarter: str
    from_tier: str
    to_tier: str
    outcome: ReviewResult
    #: The unmet conditions of the maintenance alternative closest to done.
    unmet: tuple[ConditionProgress, ...]
    quarters_below: int
    protected_until: datetime | None
    #: True when an earlier run recorded this outcome (the unmet detail is not kept).
    recorded: bool


def previous_quarter(moment: datetime, zone: ZoneInfo) -> str:
    """The shop-local quarter that ended before the one `moment` is in."""
    return quarter_of(add_months(moment.astimezone(zone), -3), zone)


def quarter_end(label: str, zone: ZoneInfo) -> datetime:
    """When the shop-local quarter `label` (`2026Q4`) ends: the midnight the next begins."""
    year, quarter = int(label[:4]), int(label[5])
    month = quarter * 3 + 1
    return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=zone).astimezone(UTC)


def _metrics_statement() -> Select[Any]:
    """Every metric in one statement: the member row, one aggregate over orders, two counts.

    Built once with bound parameters: assembling a statement this size (and its cache
    key) on every purchase costs more than running it. Every window ends at `until`, so
    a quarterly review measures the quarter, not the moment the job happened to run.
    """
    until = bindparam("until", type_=UTCDateTime())
    year_ago = bindparam("year_ago", type_=UTCDateTime())
    half_year_ago = bindparam("half_year_ago", type_=UTCDateTime())
    violations_since = bindparam("violations_since", type_=UTCDateTime())
    member_id = bindparam("member_id", type_=Integer())
    paid = Order.status.in_(PAID_STATUSES)
    orders = (
        select(
            Order.member_id,
            func.sum(
                case(
                    (and_(paid, Order.paid_at >= year_ago, Order.paid_at <= until), Order.total),
                    else_=0,
                )
            ).label("spend"),
            func.count(
                case((and_(paid, Order.paid_at >= half_year_ago, Order.paid_at <= until), 1))
            ).label("purchases"),
            func.count(
                case((and_(Order.status.in_(SETTLED_STATUSES), Order.created_at >= year_ago), 1))
            ).label("settled"),
            func.count(case((and_(paid, Order.created_at >= year_ago), 1))).label("fulfilled"),
        )
        .where(Order.member_id == member_id, Order.created_at <= until)
        .group_by(Order.member_id)
        .subquery()
    )
    violations = (
        select(func.count(Violation.id))
        .where(
            Violation.member_id == member_id,
            Violation.serious.is_(True),
            Violation.created_at >= violations_since,
            Violation.created_at <= until,
        )
        .scalar_subquery()
    )
    referred = aliased(Member)
    referrals = (
        select(func.count(referred.id))
        .where(
            referred.referrer_id == member_id,
            exists().where(
                Order.member_id == referred.id,
                paid,
                Order.paid_at >= year_ago,
                Order.paid_at <= until,
            ),
        )
        .scalar_subquery()
    )
    return (
        select(
            Member.total_spent,
            Member.joint_campaigns,
            Member.growth_points,
            func.coalesce(orders.c.spend, 0),
            func.coalesce(orders.c.purchases, 0),
            func.coalesce(orders.c.settled, 0),
            func.coalesce(orders.c.fulfilled, 0),
            violations,
            referrals,
        )
        .select_from(Member)
        .outerjoin(orders, orders.c.member_id == Member.id)
        .where(Member.id == member_id)
    )


METRICS = _metrics_statement()


async def load_metrics(session: AsyncSession, member_id: int, now: datetime) -> Metrics:
    """The member's tier metrics at `now` (windows end there; lifetime spend is today's)."""
    row = (
        await session.execute(
            METRICS,
            {
                "member_id": member_id,
                "until": now,
                "year_ago": now - YEAR,
                "half_year_ago": now - HALF_YEAR,
                "violations_since": now - VIOLATION_WINDOW,
            },
        )
    ).one_or_none()
    if row is None:
        raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
    total, joint, growth, spend, purchases, settled, fulfilled, violated, referred_count = row
    return Metrics(
        total_spent=int(total),
        spend_365d=int(spend),
        purchases_6m=int(purchases),
        violations_90d=int(violated),
        fulfilment_rate=(
            FULFILMENT_WITHOUT_ORDERS if not settled else int(fulfilled) * 100 // int(settled)
        ),
        referrals_active=int(referred_count),
        joint_campaigns=int(joint),
        growth_points=int(growth),
    )


class Tiers:
    def __init__(self, db: Database, ladder: Ladder, clock: Clock, zone: ZoneInfo) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock
        self._zone = zone

    # --- rules --------------------------------------------------------------------------

    def _condition(self, condition: Condition, metrics: Metrics) -> ConditionProgress:
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
            growth = self._ladder.growth
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

    def _progress(self, tier_key: str, rule: Rule, metrics: Metrics) -> Progress:
        """The alternative closest to done (the first on a tie); an empty rule is never met.

        The percent measures distance covered: a condition met by default (no
        violations, fulfilment with no orders yet) counts only while it is unmet, so a
        member who has done nothing stands at 0%, not halfway.
        """
        best: Progress | None = None
        for alternative in rule:
            conditions = tuple(self._condition(c, metrics) for c in alternative)
            counted = [
                measured
                for condition, measured in zip(alternative, conditions, strict=True)
                if not (measured.met and self._condition(condition, NO_ACTIVITY).met)
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

    def _rules_tier(self, metrics: Metrics) -> Tier:
        """The highest tier the numbers earn; invite-only tiers are never earned."""
        earned = self._ladder.entry
        for tier in self._ladder.tiers[1:]:
            if not tier.invite_only and self._progress(tier.key, tier.upgrade, metrics).met:
                earned = tier
        return earned

    def _higher(self, first: str, second: str) -> str:
        return first if self._ladder.index(first) >= self._ladder.index(second) else second

    # --- reading ------------------------------------------------------------------------

    async def metrics(self, member_id: int) -> Metrics:
        async with self._db.read() as session:
            return await load_metrics(session, member_id, self._clock.now())

    async def evaluate(self, member_id: int) -> Evaluation:
        """Where the member stands and exactly what is left to the next tier."""
        now = self._clock.now()
        async with self._db.read() as session:
            member = await load_member(session, member_id)
            metrics = await load_metrics(session, member_id, now)
        above = self._ladder.above(member.tier_key)
        return Evaluation(
            member_id=member.id,
            tier=member.tier_key,
            tier_source=member.tier_source,
            rules_tier=self._rules_tier(metrics).key,
            next_tier=above.key if above else None,
            progress=self._progress(above.key, above.upgrade, metrics) if above else None,
            metrics=metrics,
            protected_until=member.protected_until,
            trial_until=member.trial_until,
            in_protection=member.protected_until is not None and member.protected_until > now,
        )

    async def history(self, member_id: int) -> list[TierChangeView]:
        async with self._db.read() as session:
            rows = await session.scalars(
                select(TierChange)
                .where(TierChange.member_id == member_id)
                .order_by(TierChange.created_at, TierChange.id)
            )
            return [TierChangeView.of(row) for row in rows]

    # --- moving -------------------------------------------------------------------------

    async def _move(
        self,
        session: AsyncSession,
        member: Member,
        to_tier: str,
        *,
        source: TierSource,
        reason: str,
        actor: str,
        now: datetime,
    ) -> TierChangeView:
        """Put the member on `to_tier`, start the review count afresh and log the move."""
        change = TierChange(
            member_id=member.id,
            from_tier=member.tier_key,
            to_tier=to_tier,
            reason=reason,
            actor=actor,
            created_at=now,
        )
        session.add(change)
        member.tier_key = to_tier
        member.tier_source = source.value
        member.quarters_below = 0
        member.protected_until = None
        if source is not TierSource.TRIAL:
            member.trial_base_tier = None
            member.trial_until = None
        await session.flush()
        return TierChangeView.of(change)

    async def _settle(
        self, session: AsyncSession, member: Member, *, reason: str, actor: str
    ) -> Promotion:
        """End an expired trial, move up by the rules, pay progress rewards (member locked)."""
        now = self._clock.now()
        metrics = await load_metrics(session, member.id, now)
        rules_tier = self._rules_tier(metrics).key
        change: TierChangeView | None = None
        if (
            member.tier_source == TierSource.TRIAL
            and member.trial_until is not None
            and member.trial_until <= now
        ):
            target = self._higher(member.trial_base_tier or self._ladder.entry.key, rules_tier)
            if target != member.tier_key:
                change = await self._move(
                    session,
                    member,
                    target,
                    source=TierSource.RULES,
                    reason="trial_ended",
                    actor=SYSTEM,
                    now=now,
                )
            else:
                member.tier_source = TierSource.RULES.value
                member.trial_base_tier = None
                member.trial_until = None
        elif self._ladder.index(rules_tier) > self._ladder.index(member.tier_key):
            change = await self._move(
                session,
                member,
                rules_tier,
                source=TierSource.RULES,
                reason=reason,
                actor=actor,
                now=now,
            )
        rewards = await self._reward_progress(session, member, metrics, now)
        return Promotion(change=change, rewards=rewards)

    async def _reward_progress(
        self, session: AsyncSession, member: Member, metrics: Metrics, now: datetime
    ) -> tuple[ProgressReward, ...]:
        """Points once per milestone on the way to the next tier (the key makes it once);
        returns the rewards this call paid."""
        above = self._ladder.above(member.tier_key)
        if above is None:
            return ()
        rewards = self._ladder.progress_rewards
        reached = self._progress(above.key, above.upgrade, metrics).percent
        paid: list[ProgressReward] = []
        for percent in rewards.at_percent:
            if reached >= percent and await award_points(
                session,
                self._ladder,
                member.id,
                source=REWARD_SOURCE,
                source_key=self._reward_key(member.id, above.key, percent),
                amount=rewards.points,
                at=now,
            ):
                paid.append(ProgressReward(tier=above.key, percent=percent, points=rewards.points))
        return tuple(paid)

    async def promote(self, member_id: int, *, reason: str) -> Promotion:
        """After a purchase or check-in: move up if the rules allow (never down, but an
        expired trial falls back), and pay progress rewards. Safe to run concurrently."""
        if not await self._settlement_due(member_id):
            return Promotion()
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            return await self._settle(session, member, reason=reason, actor=SYSTEM)

    async def _settlement_due(self, member_id: int) -> bool:
        """Whether `_settle` would change anything, judged from a read-only snapshot.

        Most purchases and check-ins move no tier and cross no milestone; looking first in
        a read transaction keeps them off the write lock (on SQLite a reader never waits
        for the purchase writer). `_settle` decides again under the lock when it is due.
        """
        now = self._clock.now()
        async with self._db.read() as session:
            standing = (
                await session.execute(
                    select(Member.tier_key, Member.tier_source, Member.trial_until).where(
                        Member.id == member_id
                    )
                )
            ).one_or_none()
            if standing is None:
                raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
            tier_key, source, trial_until = standing
            if source == TierSource.TRIAL and trial_until is not None and trial_until <= now:
                return True
            metrics = await load_metrics(session, member_id, now)
            if self._ladder.index(self._rules_tier(metrics).key) > self._ladder.index(tier_key):
                return True
            above = self._ladder.above(tier_key)
            if above is None:
                return False
            reached = self._progress(above.key, above.upgrade, metrics).percent
            keys = [
                self._reward_key(member_id, above.key, percent)
                for percent in self._ladder.progress_rewards.at_percent
                if reached >= percent
            ]
            if not keys:
                return False
            paid = await session.scalar(
                select(func.count()).select_from(PointLot).where(PointLot.source_key.in_(keys))
            )
            return (paid or 0) < len(keys)

    @staticmethod
    def _reward_key(member_id: int, tier_key: str, percent: int) -> str:
        return f"progress:{member_id}:{tier_key}:{percent}"

    async def fast_track(
        self, member_id: int, order_total: int, order_id: int
    ) -> TierChangeView | None:
        """A big enough first paid order earns the next tier on trial, once per member."""
        rules = self._ladder.fast_track
        if order_total < rules.min_first_purchase:
            return None  # decided without touching the database: most orders are small
        now = self._clock.now()
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            if member.tier_source != TierSource.RULES or order_total < rules.min_first_purchase:
                return None
            above = self._ladder.above(member.tier_key)
            if above is None:
                return None
            earlier = await session.scalar(
                select(
                    or_(
                        exists().where(
                            Order.member_id == member_id,
                            Order.paid_at.is_not(None),
                            Order.id != order_id,
                        ),
                        exists().where(
                            TierChange.member_id == member_id, TierChange.reason == "fast_track"
                        ),
                    )
                )
            )
            if earlier:
                return None
            return await self._start_trial(
                session,
                member,
                above.key,
                base=member.tier_key,
                days=rules.trial_days,
                reason="fast_track",
                actor=SYSTEM,
                now=now,
            )

    async def _start_trial(
        self,
        session: AsyncSession,
        member: Member,
        tier_key: str,
        *,
        base: str,
        days: int,
        reason: str,
        actor: str,
        now: datetime,
    ) -> TierChangeView:
        """Put the member on `tier_key` for `days`, to fall back to `base` when it ends."""
        change = await self._move(
            session, member, tier_key, source=TierSource.TRIAL, reason=reason, actor=actor, now=now
        )
        member.trial_base_tier = base
        member.trial_until = now + timedelta(days=days)
        return change

    async def expire_trials(self) -> int:
        """End every trial that has run out; returns how many ended (the scheduled job)."""
        now = self._clock.now()
        async with self._db.read() as session:
            due = list(
                await session.scalars(
                    select(Member.id)
                    .where(Member.tier_source == TierSource.TRIAL.value, Member.trial_until <= now)
                    .order_by(Member.id)
                )
            )
        ended = 0
        for member_id in due:
            async with self._db.transaction() as session:
                member = await load_member(session, member_id, for_update=True)
                if member.tier_source != TierSource.TRIAL:
                    continue
                await self._settle(session, member, reason="trial_ended", actor=SYSTEM)
                ended += 1
        return ended

    # --- quarterly review ---------------------------------------------------------------

    async def review(
        self, *, quarter: str | None = None, dry_run: bool = False
    ) -> list[ReviewOutcome]:
        """Check every rules-held tier against its maintenance rule, once per quarter.

        Each member is reviewed in a transaction of their own, so a run that stops
        halfway resumes where it stopped; members already reviewed for the quarter
        get their stored outcome back and nothing changes.
        """
        label = quarter or previous_quarter(self._clock.now(), self._zone)
        if not QUARTER_LABEL.match(label):
            raise ShopError(ErrorCode.INVALID_INPUT, quarter=label)
        async with self._db.read() as session:
            member_ids = list(
                await session.scalars(
                    select(Member.id)
                    .where(
                        or_(
                            and_(
                                Member.tier_source == TierSource.RULES.value,
                                Member.tier_key != self._ladder.entry.key,
                            ),
                            Member.id.in_(
                                select(TierReview.member_id).where(TierReview.quarter == label)
                            ),
                        )
                    )
                    .order_by(Member.id)
                )
            )
        outcomes: list[ReviewOutcome] = []
        for member_id in member_ids:
            if dry_run:
                async with self._db.read() as session:
                    outcome = await self._review_one(session, member_id, label, write=False)
            else:
                async with self._db.transaction() as session:
                    outcome = await self._review_one(session, member_id, label, write=True)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def _review_one(
        self, session: AsyncSession, member_id: int, quarter: str, *, write: bool
    ) -> ReviewOutcome | None:
        member = await load_member(session, member_id, for_update=write)
        stored = await session.scalar(
            select(TierReview).where(
                TierReview.member_id == member_id, TierReview.quarter == quarter
            )
        )
        if stored is not None:
            result = ReviewResult(stored.outcome)
            below = self._ladder.below(stored.tier_key)
            return ReviewOutcome(
                member_id=member.id,
                telegram_id=member.telegram_id,
                locale=member.locale,
                quarter=quarter,
                from_tier=stored.tier_key,
                to_tier=below.key if result is ReviewResult.DROPPED and below else stored.tier_key,
                outcome=result,
                unmet=(),
                quarters_below=member.quarters_below,
                protected_until=member.protected_until,
                recorded=True,
            )
        if member.tier_source != TierSource.RULES or member.tier_key == self._ladder.entry.key:
            return None

        # Everything is judged as of the quarter's end, never the moment the job runs:
        # the metrics, and the protection, which starts and ends on quarter boundaries.
        now = self._clock.now()
        ended = quarter_end(quarter, self._zone)
        tier = self._ladder.tier(member.tier_key)
        progress = self._progress(
            tier.key, tier.maintenance, await load_metrics(session, member_id, ended)
        )
        rules = self._ladder.review
        to_tier = tier.key
        quarters_below = member.quarters_below + 1
        protected_until = member.protected_until
        if progress.met:
            result, quarters_below, protected_until = ReviewResult.KEPT, 0, None
        elif protected_until is not None and protected_until <= ended:
            below = self._ladder.below(tier.key)
            result, quarters_below, protected_until = ReviewResult.DROPPED, 0, None
            to_tier = below.key if below else tier.key
        elif protected_until is None and quarters_below >= rules.consecutive_quarters:
            result = ReviewResult.PROTECTED
            local_end = ended.astimezone(self._zone)
            protected_until = add_months(local_end, rules.protection_months).astimezone(UTC)
        else:
            result = ReviewResult.WARNED

        if write:
            session.add(
                TierReview(
                    member_id=member_id,
                    quarter=quarter,
                    tier_key=tier.key,
                    met_maintenance=progress.met,
                    outcome=result.value,
                    created_at=now,
                )
            )
            if to_tier != tier.key:
                await self._move(
                    session,
                    member,
                    to_tier,
                    source=TierSource.RULES,
                    reason="quarterly_review",
                    actor=SYSTEM,
                    now=now,
                )
            member.quarters_below = quarters_below
            member.protected_until = protected_until
        return ReviewOutcome(
            member_id=member.id,
            telegram_id=member.telegram_id,
            locale=member.locale,
            quarter=quarter,
            from_tier=tier.key,
            to_tier=to_tier,
            outcome=result,
            unmet=tuple(c for c in progress.conditions if not c.met),
            quarters_below=quarters_below,
            protected_until=protected_until,
            recorded=False,
        )

    # --- admin --------------------------------------------------------------------------

    async def set_tier(
        self, member_id: int, tier_key: str, *, actor: str, reason: str
    ) -> TierChangeView:
        """An admin puts a member on a tier; it is kept until an admin or the rules move it up."""
        tier = self._ladder.tier(tier_key)
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            return await self._move(
                session,
                member,
                tier.key,
                source=TierSource.ADMIN,
                reason=reason,
                actor=actor,
                now=self._clock.now(),
            )

    async def invite_partner(self, member_id: int, *, actor: str) -> TierChangeView:
        """The invitation-only tier (战略伙伴), which no rule reaches."""
        invited = next((t for t in self._ladder.tiers if t.invite_only), None)
        if invited is None:
            raise ShopError(ErrorCode.UNKNOWN_TIER, tier="invite_only")
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            return await self._move(
                session,
                member,
                invited.key,
                source=TierSource.INVITE,
                reason="invite",
                actor=actor,
                now=self._clock.now(),
            )

    async def grant_trial(
        self, member_id: int, *, actor: str, days: int | None = None
    ) -> TierChangeView:
        """The next tier on trial; when it ends the member falls back as after a fast track."""
        length = self._ladder.fast_track.trial_days if days is None else days
        if length < 1:
            raise ShopError(ErrorCode.INVALID_INPUT, days=length)
        now = self._clock.now()
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            above = self._ladder.above(member.tier_key)
            if above is None:
                raise ShopError(ErrorCode.NO_HIGHER_TIER, tier=member.tier_key)
            base = (
                member.trial_base_tier
                if member.tier_source == TierSource.TRIAL and member.trial_base_tier
                else member.tier_key
            )
            return await self._start_trial(
                session,
                member,
                above.key,
                base=base,
                days=length,
                reason="trial",
                actor=actor,
                now=now,
            )

    async def flag_violation(
        self, member_id: int, *, reason: str, actor: str, serious: bool = True
    ) -> ViolationView:
        """Record a violation; it weighs on rules and reviews, it never drops a tier at once."""
        now = self._clock.now()
        async with self._db.transaction() as session:
            await load_member(session, member_id)
            row = Violation(
                member_id=member_id, serious=serious, reason=reason, actor=actor, created_at=now
            )
            session.add(row)
            await session.flush()
            return ViolationView(
                id=row.id,
                member_id=member_id,
                serious=serious,
                reason=reason,
                actor=actor,
                created_at=now,
            )

    async def set_joint_campaigns(
        self, member_id: int, count: int, *, actor: str
    ) -> TierChangeView | None:
        """Set the joint-campaign count; a tier it earns is granted at once, as by the admin."""
        if count < 0:
            raise ShopError(ErrorCode.INVALID_INPUT, count=count)
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            member.joint_campaigns = count
            await session.flush()
            settled = await self._settle(session, member, reason="joint_campaigns", actor=actor)
            return settled.change

    # --- capabilities -------------------------------------------------------------------

    def capabilities(self, tier_key: str) -> Capabilities:
        return self._ladder.tier(tier_key).capabilities

    def require(self, tier_key: str, capability: str) -> None:
        """Refuse a feature the tier lacks, naming the lowest earnable tier that has it."""
        if Capabilities.model_fields.get(capability) is None or not isinstance(
            getattr(self.capabilities(tier_key), capability), bool
        ):
            raise ValueError(f"{capability!r} is not an on/off capability")
        if getattr(self.capabilities(tier_key), capability):
            return
        having = [t for t in self._ladder.tiers if getattr(t.capabilities, capability)]
        earnable = [t for t in having if not t.invite_only] or having
        raise ShopError(
            ErrorCode.NOT_ALLOWED_FOR_TIER,
            capability=capability,
            required=earnable[0].key if earnable else None,
        )

    def can_buy_pool(self, tier_key: str, pool: str) -> bool:
        return pool in self.capabilities(tier_key).pools

    def batch_limit(self, tier_key: str) -> int:
        return self.capabilities(tier_key).batch_max

    def required_tier_for_pool(self, pool: str) -> str:
        """The lowest earnable tier that may buy from `pool` (to tell a member what opens it)."""
        tier = next(
            (t for t in self._ladder.tiers if pool in t.capabilities.pools and not t.invite_only),
            None,
        ) or self._ladder.lowest_with(pool)
        if tier is None:
            raise ValueError(f"no tier may buy from pool {pool!r}")
        return tier.key

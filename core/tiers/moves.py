"""Every tier move and the reads around it: the check after what a member did, the fast
track and trials, admin moves, and the standing the level card shows.

Every move is made on a locked member row inside one transaction and leaves a
`tier_changes` row, so concurrent purchases, a retried job or a re-run review move a
member once and the history always explains the current tier.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import bindparam, exists, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Capabilities, Ladder
from core.members import load_member
from core.models import Member, Order, PointLot, TierChange, Violation
from core.points import award_points_on
from core.tiers.metrics import load_metrics, measure_on
from core.tiers.rules import (
    Metrics,
    Progress,
    Standing,
    TierSource,
    earned_tier,
    higher,
    progress,
    settlement_check,
)
from core.uow import Database, run_on

#: The actor of the moves the shop makes by itself.
SYSTEM = "system"
#: `point_lots.source` of the points paid at 50 % / 80 % of the way to the next tier.
REWARD_SOURCE = "reward"


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


async def move(
    session: AsyncSession,
    member: Member,
    to_tier: str,
    *,
    source: TierSource,
    reason: str,
    actor: str,
    now: datetime,
) -> TierChangeView:
    """Put the (locked) member on `to_tier`, start the review count afresh and log the move."""
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


#: A `Standing`'s columns, in its field order.
_STANDING = select(
    Member.tier_key,
    Member.tier_source,
    Member.trial_until,
    Member.total_spent,
    Member.joint_campaigns,
    Member.growth_points,
).where(Member.id == bindparam("member_id"))


def standing_of(member: Member) -> Standing:
    """The standing of a member row the caller holds (locked, or in a snapshot)."""
    return Standing(
        member_id=member.id,
        tier_key=member.tier_key,
        tier_source=member.tier_source,
        trial_until=member.trial_until,
        total_spent=member.total_spent,
        joint_campaigns=member.joint_campaigns,
        growth_points=member.growth_points,
    )


async def load_standing(session: AsyncSession, member_id: int) -> Standing:
    return await run_on(session, standing_on, member_id)


def standing_on(conn: Connection, member_id: int) -> Standing:
    row = conn.execute(_STANDING, {"member_id": member_id}).one_or_none()
    if row is None:
        raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
    return Standing(member_id, *row)


def reward_key(member_id: int, tier_key: str, percent: int) -> str:
    """The natural key of a progress reward: paid once per member, tier and milestone."""
    return f"progress:{member_id}:{tier_key}:{percent}"


def settlement_due_on(
    conn: Connection, ladder: Ladder, member_id: int, standing: Standing | None, now: datetime
) -> bool:
    """Whether settling the member (`Tiers.promote`) would change anything at `now`.

    Measures only what could decide it (`settlement_check`): most purchases and
    check-ins move no tier and cross no milestone, and the member row often shows it.
    `standing` is the member row as the caller's transaction holds it, if it has it (a
    purchase does: it read and locked the row); otherwise it is read here. Runs in the
    caller's transaction, so a purchase answers it from its own snapshot in its one hop.
    """
    if standing is None:
        standing = standing_on(conn, member_id)
    check = settlement_check(ladder, standing, {}, now)
    if check.unmeasured and not check.due:
        measured = measure_on(conn, member_id, check.unmeasured, now)
        check = settlement_check(ladder, standing, measured, now)
    if check.due or check.next_tier is None or not check.milestones:
        return check.due
    keys = [reward_key(member_id, check.next_tier, percent) for percent in check.milestones]
    paid = conn.scalar(
        select(func.count()).select_from(PointLot).where(PointLot.source_key.in_(keys))
    )
    return (paid or 0) < len(keys)


class Tiers:
    """A member's standing and every move of it but the quarterly review (`review`)."""

    def __init__(self, db: Database, ladder: Ladder, clock: Clock) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock

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
            rules_tier=earned_tier(self._ladder, metrics).key,
            next_tier=above.key if above else None,
            progress=progress(self._ladder, above.key, above.upgrade, metrics) if above else None,
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

    async def _settle(
        self, session: AsyncSession, member: Member, *, reason: str, actor: str
    ) -> Promotion:
        """End an expired trial, move up by the rules, pay progress rewards (member locked)."""
        now = self._clock.now()
        metrics = await load_metrics(session, member.id, now)
        rules_tier = earned_tier(self._ladder, metrics).key
        change: TierChangeView | None = None
        if (
            member.tier_source == TierSource.TRIAL
            and member.trial_until is not None
            and member.trial_until <= now
        ):
            target = higher(
                self._ladder, member.trial_base_tier or self._ladder.entry.key, rules_tier
            )
            if target != member.tier_key:
                change = await move(
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
            change = await move(
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
        reached = progress(self._ladder, above.key, above.upgrade, metrics).percent
        paid: list[ProgressReward] = []
        for percent in rewards.at_percent:
            if reached >= percent and await run_on(
                session,
                award_points_on,
                self._ladder,
                member.id,
                source=REWARD_SOURCE,
                source_key=reward_key(member.id, above.key, percent),
                amount=rewards.points,
                at=now,
            ):
                paid.append(ProgressReward(tier=above.key, percent=percent, points=rewards.points))
        return tuple(paid)

    async def promote(
        self, member_id: int, *, reason: str, standing: Standing | None = None
    ) -> Promotion:
        """After a purchase or check-in: move up if the rules allow (never down, but an
        expired trial falls back), and pay progress rewards. Safe to run concurrently.

        `standing` is the member row as the activity's own transaction left it, when that
        transaction held the row locked: the check then starts without reading it again.
        """
        if not await self.settlement_due(member_id, standing):
            return Promotion()
        return await self.settle(member_id, reason=reason)

    async def settle(self, member_id: int, *, reason: str) -> Promotion:
        """Settle the member now, the row locked: `promote` once it knows it is due."""
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            return await self._settle(session, member, reason=reason, actor=SYSTEM)

    async def settlement_due(self, member_id: int, standing: Standing | None = None) -> bool:
        """Whether `_settle` would change anything (`settlement_due_on`).

        When the standing alone decides, nothing is read; otherwise the rest is measured
        in a read transaction that keeps it off the write lock (on SQLite a reader never
        waits for the purchase writer). `_settle` decides again, on every metric, under
        the lock when it is due.
        """
        now = self._clock.now()
        if standing is not None:
            check = settlement_check(self._ladder, standing, {}, now)
            if check.due or not (check.unmeasured or check.milestones):
                return check.due
        async with self._db.read() as session:
            return await run_on(session, settlement_due_on, self._ladder, member_id, standing, now)

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
        change = await move(
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

    # --- admin --------------------------------------------------------------------------

    async def set_tier(
        self, member_id: int, tier_key: str, *, actor: str, reason: str
    ) -> TierChangeView:
        """An admin puts a member on a tier; it is kept until an admin or the rules move it up."""
        tier = self._ladder.tier(tier_key)
        return await self._move_now(member_id, tier.key, TierSource.ADMIN, reason, actor)

    async def invite_partner(self, member_id: int, *, actor: str) -> TierChangeView:
        """The invitation-only tier (战略伙伴), which no rule reaches."""
        invited = next((t for t in self._ladder.tiers if t.invite_only), None)
        if invited is None:
            raise ShopError(ErrorCode.UNKNOWN_TIER, tier="invite_only")
        return await self._move_now(member_id, invited.key, TierSource.INVITE, "invite", actor)

    async def _move_now(
        self, member_id: int, tier_key: str, source: TierSource, reason: str, actor: str
    ) -> TierChangeView:
        """One admin move in its own transaction, the member's row locked."""
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            return await move(
                session, member, tier_key, source=source, reason=reason, actor=actor,
                now=self._clock.now(),
            )  # fmt: skip

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

    def require(self, tier_key: str, capability: str) -> None:
        """Refuse a feature the tier lacks, naming the lowest earnable tier that has it."""
        capabilities = self._ladder.tier(tier_key).capabilities
        if Capabilities.model_fields.get(capability) is None or not isinstance(
            getattr(capabilities, capability), bool
        ):
            raise ValueError(f"{capability!r} is not an on/off capability")
        if getattr(capabilities, capability):
            return
        having = [t for t in self._ladder.tiers if getattr(t.capabilities, capability)]
        earnable = [t for t in having if not t.invite_only] or having
        raise ShopError(
            ErrorCode.NOT_ALLOWED_FOR_TIER,
            capability=capability,
            required=earnable[0].key if earnable else None,
        )


class PaidOrder(Protocol):
    """What the after-purchase check needs of an order (core.orders.OrderView has it)."""

    @property
    def id(self) -> int: ...
    @property
    def member_id(self) -> int: ...
    @property
    def total(self) -> int: ...


class Promotions:
    """The rule that moves members up right after what they did.

    Each check runs once the activity's transaction has committed, so a failure here
    never undoes a purchase or a check-in, and a move it missed is made at the member's
    next activity. The member hears of a move or a reward in the same reply.
    """

    def __init__(self, tiers: Tiers) -> None:
        self._tiers = tiers

    async def after_purchase(self, order: PaidOrder, due: bool | None = None) -> Promotion:
        """A big enough first order earns the fast track; then the rules and rewards.

        `due` is `settlement_due_on` as the purchase's own transaction answered it (it
        held the member row, so nothing needs reading again): settle only when it is.
        A fast track just moved the member, so the answer is stale then and asked anew.
        """
        trial = await self._tiers.fast_track(order.member_id, order.total, order.id)
        if trial is not None or due is None:
            promoted = await self._tiers.promote(order.member_id, reason="purchase")
        elif due:
            promoted = await self._tiers.settle(order.member_id, reason="purchase")
        else:
            promoted = Promotion()
        return Promotion(change=promoted.change or trial, rewards=promoted.rewards)

    async def after_checkin(self, standing: Standing) -> Promotion:
        """After a check-in, from the standing its transaction left (it held the row)."""
        return await self._tiers.promote(standing.member_id, reason="activity", standing=standing)

    async def after_activity(self, member_id: int) -> Promotion:
        """After a review or a ticket."""
        return await self._tiers.promote(member_id, reason="activity")

"""The quarterly review as it was before it went set-based, kept as the reference.

One transaction per member, 4-6.5 statements each: the member locked, their stored
review looked up, their metrics measured by the per-member statement the level card
still uses, the move made by `moves.move`. `tests/test_review_bulk.py` holds the
set-based review to the same results on a random population, and `bench/review.py`
times the two side by side. Nothing in the shop calls this.

`snapshot` and `restore` put a database back as it was before a review, so both
reviews can start from one state.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.db import table_of
from core.ladder import Ladder
from core.members import load_member
from core.models import Member, TierChange, TierReview
from core.tiers.metrics import load_metrics
from core.tiers.moves import SYSTEM, move
from core.tiers.review import QUARTER_LABEL, ReviewOutcome, previous_quarter, quarter_end
from core.tiers.rules import ReviewResult, TierSource, progress, review_verdict
from core.uow import Database


class PerMemberReview:
    """`core.tiers.review.QuarterlyReview` as of main before the set-based review."""

    def __init__(self, db: Database, ladder: Ladder, clock: Clock, zone: ZoneInfo) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock
        self._zone = zone

    async def run(self, *, quarter: str | None = None) -> list[ReviewOutcome]:
        label = quarter or previous_quarter(self._clock.now(), self._zone)
        assert QUARTER_LABEL.match(label)
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
            async with self._db.transaction() as session:
                outcome = await self._review_one(session, member_id, label)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def _review_one(
        self, session: AsyncSession, member_id: int, quarter: str
    ) -> ReviewOutcome | None:
        member = await load_member(session, member_id, for_update=True)
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
        now = self._clock.now()
        ended = quarter_end(quarter, self._zone)
        tier = self._ladder.tier(member.tier_key)
        measured = progress(
            self._ladder, tier.key, tier.maintenance, await load_metrics(session, member_id, ended)
        )
        verdict = review_verdict(
            self._ladder,
            tier.key,
            met=measured.met,
            quarters_below=member.quarters_below,
            protected_until=member.protected_until,
            ended=ended,
            zone=self._zone,
        )
        session.add(
            TierReview(
                member_id=member_id,
                quarter=quarter,
                tier_key=tier.key,
                met_maintenance=measured.met,
                outcome=verdict.result.value,
                created_at=now,
            )
        )
        if verdict.to_tier != tier.key:
            await move(
                session,
                member,
                verdict.to_tier,
                source=TierSource.RULES,
                reason="quarterly_review",
                actor=SYSTEM,
                now=now,
            )
        member.quarters_below = verdict.quarters_below
        member.protected_until = verdict.protected_until
        return ReviewOutcome(
            member_id=member.id,
            telegram_id=member.telegram_id,
            locale=member.locale,
            quarter=quarter,
            from_tier=tier.key,
            to_tier=verdict.to_tier,
            outcome=verdict.result,
            unmet=tuple(c for c in measured.conditions if not c.met),
            quarters_below=verdict.quarters_below,
            protected_until=verdict.protected_until,
            recorded=False,
        )


#: What a review may change on a member row.
REVIEWED_COLUMNS = (
    "tier_key",
    "tier_source",
    "quarters_below",
    "protected_until",
    "trial_base_tier",
    "trial_until",
)
_members = table_of(Member)


async def snapshot(db: Database) -> tuple[list[dict[str, Any]], int]:
    """The reviewed columns of every member, and the last `tier_changes` id."""
    async with db.read() as session:
        columns = [_members.c[name] for name in REVIEWED_COLUMNS]
        rows = (await session.execute(select(_members.c.id, *columns))).mappings().all()
        last_change = await session.scalar(select(func.coalesce(func.max(TierChange.id), 0)))
    return [{f"b_{key}": value for key, value in row.items()} for row in rows], int(
        last_change or 0
    )


async def restore(db: Database, saved: tuple[list[dict[str, Any]], int], quarter: str) -> None:
    """Undo a review of `quarter` made since `snapshot` returned `saved`."""
    rows, last_change = saved
    async with db.transaction() as session:
        await session.execute(delete(TierReview).where(TierReview.quarter == quarter))
        await session.execute(delete(TierChange).where(TierChange.id > last_change))
        await session.execute(
            update(_members)
            .where(_members.c.id == bindparam("b_id"))
            .values({name: bindparam(f"b_{name}") for name in REVIEWED_COLUMNS}),
            rows,
        )


async def review_state(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a review writes, in a comparable order (ids of new rows left out)."""
    async with db.read() as session:
        columns = [_members.c[name] for name in REVIEWED_COLUMNS]
        members = (await session.execute(select(_members.c.id, *columns).order_by("id"))).all()
        reviews = (
            await session.execute(
                select(
                    TierReview.member_id,
                    TierReview.quarter,
                    TierReview.tier_key,
                    TierReview.met_maintenance,
                    TierReview.outcome,
                    TierReview.created_at,
                ).order_by(TierReview.member_id, TierReview.quarter)
            )
        ).all()
        changes = (
            await session.execute(
                select(
                    TierChange.member_id,
                    TierChange.from_tier,
                    TierChange.to_tier,
                    TierChange.reason,
                    TierChange.actor,
                    TierChange.created_at,
                ).order_by(TierChange.member_id, TierChange.id)
            )
        ).all()
    return {
        "members": [tuple(row) for row in members],
        "reviews": [tuple(row) for row in reviews],
        "changes": [tuple(row) for row in changes],
    }

"""The quarterly review (seed 001): a rules-held tier is checked against its maintenance
rule once per shop-local quarter, with downgrade protection before any drop.

What the review decides is `rules.review_verdict`; this module picks the members,
measures each as of the quarter's end and records the outcome, so a re-run or a
resumed run changes nothing twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock, add_months, quarter_of
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.members import load_member
from core.models import Member, TierReview
from core.tiers.metrics import load_metrics
from core.tiers.moves import SYSTEM, move
from core.tiers.rules import (
    ConditionProgress,
    ReviewResult,
    TierSource,
    progress,
    review_verdict,
)
from core.uow import Database

QUARTER_LABEL = re.compile(r"^\d{4}Q[1-4]$")


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


class QuarterlyReview:
    """Runs the review for a quarter; `cardshop review-tiers` and the scheduled job call it."""

    def __init__(self, db: Database, ladder: Ladder, clock: Clock, zone: ZoneInfo) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock
        self._zone = zone

    async def run(
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
        if write:
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

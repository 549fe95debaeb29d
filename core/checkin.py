"""Daily check-in (签到): one per member per calendar day in the shop's time zone.

The unique (member_id, day) constraint on `checkins` is the only guard: the insert
either lands or does nothing, so a double tap, a redelivered update or a hundred
concurrent requests give one check-in and one point lot. The points, the activity event
and the active-day event are written in that same transaction, so they exist exactly
when the check-in does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import activity
from core.clock import Clock, local_day, next_local_midnight
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.members import load_member
from core.models import CheckIn
from core.money import round_fen
from core.points import available, award_points_on
from core.sql import insert_ignoring_conflict
from core.tiers.moves import ProgressReward, Promotion, standing_of
from core.tiers.rules import Standing
from core.uow import Database, run_on

#: Runs after a check-in commits (tier promotion, progress rewards), given the member's
#: standing as the check-in left it.
OnCheckIn = Callable[[Standing], Awaitable[Promotion | None]]


def checkin_points(ladder: Ladder, tier_key: str, streak: int) -> int:
    """Base plus the capped streak bonus, times the tier multiplier, rounded half up.

    The multiplier is read through its decimal text (1.2, not 1.19999...) so the
    rounding matches what an operator expects from the config.
    """
    rules = ladder.points
    bonus = min(rules.checkin_streak_step * (streak - 1), rules.checkin_streak_cap)
    multiplier = Decimal(str(ladder.tier(tier_key).capabilities.checkin_multiplier))
    return round_fen((rules.checkin_base + bonus) * multiplier)


@dataclass(frozen=True, slots=True)
class CheckInResult:
    day: date
    streak: int
    points: int
    #: Spendable points after this check-in.
    available: int
    #: What checking in tomorrow would give, at the current tier.
    tomorrow_points: int
    #: When the next check-in opens (the next shop-local midnight), aware UTC.
    next_at: datetime
    #: Progress rewards this check-in earned on the way to the next tier.
    rewards: tuple[ProgressReward, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckInStatus:
    day: date
    checked_in: bool
    #: Today's streak if checked in, else the streak still alive from yesterday (0: none).
    streak: int
    #: What today's check-in gave, or would give now.
    today_points: int
    #: What tomorrow's check-in would give, assuming today's is done.
    tomorrow_points: int
    #: The next shop-local midnight, aware UTC.
    next_at: datetime


async def _streak_on(session: AsyncSession, member_id: int, day: date) -> int | None:
    return await session.scalar(
        select(CheckIn.streak).where(CheckIn.member_id == member_id, CheckIn.day == day)
    )


class CheckIns:
    def __init__(
        self,
        db: Database,
        ladder: Ladder,
        clock: Clock,
        zone: ZoneInfo,
        on_checkin: OnCheckIn | None = None,
    ) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock
        self._zone = zone
        self._on_checkin = on_checkin

    async def check_in(self, member_id: int) -> CheckInResult:
        """Check the member in for today; ALREADY_CHECKED_IN if they already did.

        `on_checkin` runs after the commit (it may promote the member), so a failure
        there never undoes the check-in. The member row is locked first, so the standing
        handed to it (tier, spend, growth after this check-in) is the row as committed.
        """
        now = self._clock.now()
        day = local_day(now, self._zone)
        next_at = next_local_midnight(now, self._zone)
        key = f"checkin:{member_id}:{day.isoformat()}"
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            streak = (await _streak_on(session, member_id, day - timedelta(days=1)) or 0) + 1
            points = checkin_points(self._ladder, member.tier_key, streak)
            inserted = await session.scalar(
                insert_ignoring_conflict(session, CheckIn),
                {
                    "member_id": member_id,
                    "day": day,
                    "streak": streak,
                    "points": points,
                    "created_at": now,
                },
            )
            if inserted is None:
                done = await _streak_on(session, member_id, day)
                raise ShopError(
                    ErrorCode.ALREADY_CHECKED_IN, next_at=next_at, streak=done or streak
                )
            await run_on(
                session,
                award_points_on,
                self._ladder,
                member_id,
                source="checkin",
                source_key=key,
                amount=points,
                at=now,
            )
            growth = self._ladder.growth
            grown = 0
            if await run_on(
                session, activity.record_on, member_id, "checkin", key, at=now,
                growth=growth.checkin,
            ):  # fmt: skip
                grown += growth.checkin
            if await run_on(
                session,
                activity.record_on,
                member_id,
                "active",
                f"active:{member_id}:{day.isoformat()}",
                at=now,
                growth=growth.active_day,
            ):
                grown += growth.active_day
            standing = replace(standing_of(member), growth_points=member.growth_points + grown)
            total = await available(session, member_id, now)
            tomorrow = checkin_points(self._ladder, member.tier_key, streak + 1)
        promotion = await self._on_checkin(standing) if self._on_checkin else None
        return CheckInResult(
            day=day,
            streak=streak,
            points=points,
            available=total,
            tomorrow_points=tomorrow,
            next_at=next_at,
            rewards=promotion.rewards if promotion is not None else (),
        )

    async def status(self, member_id: int) -> CheckInStatus:
        now = self._clock.now()
        day = local_day(now, self._zone)
        async with self._db.read() as session:
            member = await load_member(session, member_id)
            today = (
                await session.execute(
                    select(CheckIn.streak, CheckIn.points).where(
                        CheckIn.member_id == member_id, CheckIn.day == day
                    )
                )
            ).first()
            yesterday = await _streak_on(session, member_id, day - timedelta(days=1)) or 0
        if today is not None:
            streak, today_points = today
        else:
            streak = yesterday
            today_points = checkin_points(self._ladder, member.tier_key, yesterday + 1)
        next_streak = streak + 1 if today is not None else yesterday + 2
        return CheckInStatus(
            day=day,
            checked_in=today is not None,
            streak=streak,
            today_points=today_points,
            tomorrow_points=checkin_points(self._ladder, member.tier_key, next_streak),
            next_at=next_local_midnight(now, self._zone),
        )

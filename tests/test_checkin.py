"""Daily check-in on both databases: the shop-zone calendar, streaks, tiers, concurrency."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from core.checkin import CheckIns
from core.clock import ManualClock
from core.config import DEFAULT_TIERS_FILE
from core.errors import ErrorCode, ShopError
from core.ladder import load_ladder
from core.models import ActivityEvent, CheckIn, Member, PointLot
from core.tiers.rules import Standing
from core.uow import Database
from tests.conftest import SHOP_ZONE, START

LADDER = load_ladder(DEFAULT_TIERS_FILE)
_ids = itertools.count(1)


async def make_member(db: Database, tier: str = "member") -> int:
    n = next(_ids)
    async with db.transaction() as session:
        member = Member(
            telegram_id=800_000 + n,
            display_name=f"checkin {n}",
            referral_code=f"C{n:07d}",
            tier_key=tier,
            created_at=START,
        )
        session.add(member)
        await session.flush()
        return member.id


def shop_time(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHOP_ZONE)


def midnight_after(day: date) -> datetime:
    """The shop-local midnight that ends `day`, as aware UTC."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), SHOP_ZONE).astimezone(UTC)


async def checkin_rows(db: Database, member_id: int) -> list[tuple[date, int, int]]:
    async with db.read() as session:
        rows = await session.execute(
            select(CheckIn.day, CheckIn.streak, CheckIn.points)
            .where(CheckIn.member_id == member_id)
            .order_by(CheckIn.day)
        )
        return [(day, streak, pts) for day, streak, pts in rows]


async def lots(db: Database, member_id: int) -> list[tuple[str, int]]:
    async with db.read() as session:
        rows = await session.execute(
            select(PointLot.source_key, PointLot.amount)
            .where(PointLot.member_id == member_id)
            .order_by(PointLot.id)
        )
        return [(key, amount) for key, amount in rows]


async def test_shop_midnight_starts_a_new_day(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    checkins = CheckIns(db, LADDER, clock, SHOP_ZONE)

    clock.set(shop_time(2026, 11, 22, 23, 59))
    first = await checkins.check_in(member)
    clock.set(shop_time(2026, 11, 23, 0, 1))
    second = await checkins.check_in(member)

    assert (first.day, first.streak, first.points) == (date(2026, 11, 22), 1, 10)
    assert (second.day, second.streak, second.points) == (date(2026, 11, 23), 2, 15)
    assert first.next_at == datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
    assert await checkin_rows(db, member) == [
        (date(2026, 11, 22), 1, 10),
        (date(2026, 11, 23), 2, 15),
    ]
    assert await lots(db, member) == [
        (f"checkin:{member}:2026-11-22", 10),
        (f"checkin:{member}:2026-11-23", 15),
    ]


async def test_one_utc_day_is_two_shop_days(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    checkins = CheckIns(db, LADDER, clock, SHOP_ZONE)

    clock.set(datetime(2026, 11, 25, 15, 59, tzinfo=UTC))  # 23:59 in Shanghai
    await checkins.check_in(member)
    clock.set(datetime(2026, 11, 25, 16, 1, tzinfo=UTC))  # 00:01 the next shop day
    await checkins.check_in(member)
    clock.set(datetime(2026, 11, 25, 23, 59, tzinfo=UTC))  # still 2026-11-26 in Shanghai
    with pytest.raises(ShopError) as refused:
        await checkins.check_in(member)

    assert refused.value.code is ErrorCode.ALREADY_CHECKED_IN
    assert [day for day, _, _ in await checkin_rows(db, member)] == [
        date(2026, 11, 25),
        date(2026, 11, 26),
    ]


async def test_second_try_the_same_day_is_refused(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    checkins = CheckIns(db, LADDER, clock, SHOP_ZONE)

    result = await checkins.check_in(member)
    clock.set(shop_time(2026, 11, 22, 23, 30))
    with pytest.raises(ShopError) as refused:
        await checkins.check_in(member)

    tomorrow = datetime(2026, 11, 23, tzinfo=SHOP_ZONE)
    assert result.day == date(2026, 11, 22)
    assert (result.streak, result.points, result.available, result.tomorrow_points) == (
        1,
        10,
        10,
        15,
    )
    assert result.next_at == tomorrow
    assert result.next_at.utcoffset() == timedelta(0)
    assert refused.value.code is ErrorCode.ALREADY_CHECKED_IN
    assert refused.value.params == {"next_at": tomorrow, "streak": 1}
    assert refused.value.params["next_at"].tzinfo is UTC
    assert await checkin_rows(db, member) == [(date(2026, 11, 22), 1, 10)]
    assert len(await lots(db, member)) == 1
    async with db.read() as session:
        events = (
            await session.execute(
                select(ActivityEvent.kind, ActivityEvent.ref, ActivityEvent.growth).order_by(
                    ActivityEvent.kind
                )
            )
        ).all()
        growth = await session.scalar(select(Member.growth_points).where(Member.id == member))
    assert [tuple(e) for e in events] == [
        ("active", f"active:{member}:2026-11-22", LADDER.growth.active_day),
        ("checkin", f"checkin:{member}:2026-11-22", LADDER.growth.checkin),
    ]
    assert growth == LADDER.growth.checkin + LADDER.growth.active_day


async def test_streak_grows_caps_and_resets(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    checkins = CheckIns(db, LADDER, clock, SHOP_ZONE)

    results = []
    for _ in range(9):
        results.append(await checkins.check_in(member))
        clock.advance(timedelta(days=1))
    clock.advance(timedelta(days=1))  # a day missed
    after_gap = await checkins.check_in(member)

    assert [r.streak for r in results] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [r.points for r in results] == [10, 15, 20, 25, 30, 35, 40, 40, 40]
    assert [r.tomorrow_points for r in results[5:]] == [40, 40, 40, 40]
    assert (after_gap.streak, after_gap.points) == (1, 10)
    assert after_gap.available == sum(r.points for r in results) + 10
    rows = await checkin_rows(db, member)
    assert [(streak, pts) for _, streak, pts in rows] == [
        *((r.streak, r.points) for r in results),
        (1, 10),
    ]
    assert rows[-1][0] - rows[-2][0] == timedelta(days=2)


@pytest.mark.parametrize(
    ("tier", "expected"),
    [("gold", [15, 23, 30]), ("silver", [12, 18, 24]), ("diamond", [20, 30, 40])],
)
async def test_tier_multiplier_rounds_half_up(
    db: Database, clock: ManualClock, tier: str, expected: list[int]
) -> None:
    member = await make_member(db, tier)
    checkins = CheckIns(db, LADDER, clock, SHOP_ZONE)

    got = []
    for _ in range(3):
        got.append(await checkins.check_in(member))
        clock.advance(timedelta(days=1))

    assert [r.points for r in got] == expected
    assert got[0].tomorrow_points == expected[1]
    assert [amount for _, amount in await lots(db, member)] == expected


async def test_hundred_concurrent_check_ins_count_once(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    called: list[Standing] = []

    async def on_checkin(standing: Standing) -> None:
        called.append(standing)

    checkins = CheckIns(db, LADDER, clock, SHOP_ZONE, on_checkin=on_checkin)
    results = await asyncio.gather(
        *(checkins.check_in(member) for _ in range(100)), return_exceptions=True
    )

    refused = [r for r in results if isinstance(r, ShopError)]
    assert len(refused) == 99
    assert all(r.code is ErrorCode.ALREADY_CHECKED_IN for r in refused)
    assert all(r.params["next_at"] == midnight_after(date(2026, 11, 22)) for r in refused)
    assert len([r for r in results if not isinstance(r, BaseException)]) == 1
    assert await checkin_rows(db, member) == [(date(2026, 11, 22), 1, 10)]
    assert await lots(db, member) == [(f"checkin:{member}:2026-11-22", 10)]
    async with db.read() as session:
        events = await session.scalar(select(func.count()).select_from(ActivityEvent))
        growth = await session.scalar(select(Member.growth_points).where(Member.id == member))
    assert events == 2
    assert growth == LADDER.growth.checkin + LADDER.growth.active_day
    assert [(s.member_id, s.growth_points) for s in called] == [(member, growth)]


async def test_on_checkin_runs_after_commit(db: Database, clock: ManualClock) -> None:
    member = await make_member(db)
    seen: list[int] = []

    async def on_checkin(standing: Standing) -> None:
        # A separate connection sees the row only once the check-in has committed.
        seen.extend(day.day for day, _, _ in await checkin_rows(db, standing.member_id))

    await CheckIns(db, LADDER, clock, SHOP_ZONE, on_checkin=on_checkin).check_in(member)
    assert seen == [22]


async def test_status_through_the_days(db: Database, clock: ManualClock) -> None:
    member = await make_member(db, "gold")
    checkins = CheckIns(db, LADDER, clock, SHOP_ZONE)

    fresh = await checkins.status(member)
    assert (fresh.checked_in, fresh.streak, fresh.today_points, fresh.tomorrow_points) == (
        False,
        0,
        15,
        23,
    )
    assert fresh.next_at == midnight_after(date(2026, 11, 22))

    await checkins.check_in(member)
    done = await checkins.status(member)
    assert (done.checked_in, done.streak, done.today_points, done.tomorrow_points) == (
        True,
        1,
        15,
        23,
    )

    clock.advance(timedelta(days=1))
    alive = await checkins.status(member)
    assert (alive.day, alive.checked_in, alive.streak, alive.today_points) == (
        date(2026, 11, 23),
        False,
        1,
        23,
    )
    assert alive.tomorrow_points == 30

    clock.advance(timedelta(days=1))
    broken = await checkins.status(member)
    assert (broken.streak, broken.today_points) == (0, 15)


async def test_unknown_member_is_refused(db: Database, clock: ManualClock) -> None:
    checkins = CheckIns(db, LADDER, clock, SHOP_ZONE)
    with pytest.raises(ShopError) as refused:
        await checkins.check_in(424242)
    assert refused.value.code is ErrorCode.MEMBER_NOT_FOUND
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(CheckIn)) == 0

"""Scheduled jobs: each period runs once, a restart repeats nothing, a crash is retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from bot import cli
from bot.notifier import repeat
from core.clock import ManualClock
from core.jobs import (
    Downgraded,
    Event,
    Lane,
    LowStock,
    PointsExpiring,
    TicketBreached,
    TicketSlaWarning,
    TierWarning,
)
from core.models import (
    Base,
    JobRun,
    Member,
    PointLot,
    TierReview,
)
from core.shop import Shop, build_jobs
from core.uow import Database
from tests.conftest import SHOP_ZONE, TEST_KEY
from tests.factories import make_member, make_product


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def notify(self, event: Event) -> None:
        self.events.append(event)


async def _row_counts(db: Database) -> dict[str, int]:
    counts = {}
    async with db.read() as session:
        for table in Base.metadata.sorted_tables:
            if table.name != "job_runs":
                counts[table.name] = (
                    await session.scalar(select(func.count()).select_from(table)) or 0
                )
    return counts


async def _scene(shop: Shop) -> dict[str, int]:
    """Something due for every job at 2026-11-22 15:00 Shanghai."""
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    now = shop.clock.now()
    slipping = await make_member(shop.db, shop.clock, tier="silver")
    dropping = await make_member(shop.db, shop.clock, tier="silver")
    async with shop.db.transaction() as session:
        await session.execute(
            update(Member)
            .where(Member.id == dropping)
            # Protected at the 2026Q2 review: the protection ran out with 2026Q3.
            .values(quarters_below=2, protected_until=datetime(2026, 10, 1, tzinfo=SHOP_ZONE))
        )
        for key, expires in [("soon", now + timedelta(days=10)), ("gone", now)]:
            session.add(
                PointLot(
                    member_id=slipping,
                    source="checkin",
                    source_key=key,
                    amount=40,
                    remaining=40,
                    earned_at=now - timedelta(days=300),
                    expires_at=expires,
                )
            )
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=2)
    await shop.tickets.open(slipping, "order", "help")
    clock.advance(timedelta(hours=5))  # past the member tier's 4-hour first response
    return {"slipping": slipping, "dropping": dropping, "product": product}


async def test_run_due_twice_and_after_restart_changes_nothing(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    scene = await _scene(shop)
    recorder = Recorder()
    jobs = build_jobs(shop, recorder)

    reports = await jobs.run_due()
    assert {(r.job, r.period, r.ran, r.error) for r in reports} == {
        ("tier_review", "2026Q3", True, None),
        ("trials", "2026-11-22", True, None),
        ("points", "2026-11-22", True, None),
        ("ticket_sla", "2026-11-22T15:00", True, None),
        ("low_stock", "2026-11-22T15:00", True, None),
        ("payments", "2026-11-22T15:00", True, None),
        ("reservations", "2026-11-22T15:00", True, None),
    }
    kinds = sorted(type(e).__name__ for e in recorder.events)
    assert kinds == sorted(
        ["TierWarning", "Downgraded", "PointsExpiring", "TicketSlaWarning", "TicketBreached",
         "LowStock"]
    )  # fmt: skip
    events = {type(e): e for e in recorder.events}
    warning = events[TierWarning]
    assert isinstance(warning, TierWarning)
    assert (warning.member_id, warning.tier, warning.outcome) == (
        scene["slipping"],
        "silver",
        "warned",
    )
    assert warning.unmet
    dropped = events[Downgraded]
    assert isinstance(dropped, Downgraded)
    assert (dropped.member_id, dropped.from_tier, dropped.to_tier) == (
        scene["dropping"], "silver", "member",
    )  # fmt: skip
    expiring = events[PointsExpiring]
    assert isinstance(expiring, PointsExpiring)
    assert (expiring.member_id, expiring.amount) == (scene["slipping"], 40)
    low = events[LowStock]
    assert isinstance(low, LowStock)
    assert (low.product.id, low.product.stock) == (scene["product"], 2)
    assert isinstance(events[TicketBreached], TicketBreached)
    assert isinstance(events[TicketSlaWarning], TicketSlaWarning)
    async with shop.db.read() as session:
        gone = await session.scalar(select(PointLot.remaining).where(PointLot.source_key == "gone"))
        assert gone == 0
    assert (await shop.members.get(scene["dropping"])).tier_key == "member"

    state = await _row_counts(shop.db)
    again = await jobs.run_due()
    assert [r.ran for r in again] == [False] * 7
    restarted = Recorder()
    assert [r.ran for r in await build_jobs(shop, restarted).run_due()] == [False] * 7
    assert recorder.events[len(kinds) :] == []
    assert restarted.events == []
    assert await _row_counts(shop.db) == state

    # The next slot runs the frequent jobs again, and the services' markers keep them quiet.
    clock.advance(timedelta(minutes=6))
    later = {r.job: r for r in await build_jobs(shop, restarted).run_due()}
    assert later["ticket_sla"].ran
    assert later["low_stock"].ran
    assert later["payments"].ran
    assert later["reservations"].ran
    assert not later["points"].ran
    assert restarted.events == []
    assert await _row_counts(shop.db) == state
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(JobRun.id))) == 11


async def test_a_crashed_run_is_retried_without_notifying_twice(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = await _scene(shop)
    real_review = shop.quarterly_review.batches
    crashes = 0

    async def crashing_review(**kwargs: Any) -> AsyncIterator[Any]:
        nonlocal crashes
        async for batch in real_review(**kwargs):
            yield batch
        if crashes == 0:
            crashes += 1
            raise RuntimeError("process killed after the review committed")

    monkeypatch.setattr(shop.quarterly_review, "batches", crashing_review)
    recorder = Recorder()
    first = {r.job: r for r in await build_jobs(shop, recorder).run_due()}
    assert first["tier_review"].error == "RuntimeError"
    assert not any(isinstance(e, TierWarning | Downgraded) for e in recorder.events)
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(TierReview.id))) == 2

    second = {r.job: r for r in await build_jobs(shop, recorder).run_due()}
    assert second["tier_review"].ran
    assert second["tier_review"].error is None
    assert not second["points"].ran
    third = await build_jobs(shop, recorder).run_due()
    assert not any(r.ran for r in third)

    reviewed = [e for e in recorder.events if isinstance(e, TierWarning | Downgraded)]
    assert sorted(e.member_id for e in reviewed) == [scene["slipping"], scene["dropping"]]
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(TierReview.id))) == 2


async def test_low_stock_alerts_once_until_a_restock_lifts_it(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=3)
    sku = (await shop.catalog.product(product)).sku
    recorder = Recorder()
    jobs = build_jobs(shop, recorder)

    def alerts() -> int:
        return sum(isinstance(e, LowStock) for e in recorder.events)

    await jobs.run_due()
    assert alerts() == 1
    clock.advance(timedelta(minutes=5))
    await jobs.run_due()
    assert alerts() == 1

    await shop.stock.import_codes(sku, [f"NEW-{i}" for i in range(2)])  # 5: at the threshold
    clock.advance(timedelta(minutes=5))
    await jobs.run_due()
    assert alerts() == 1

    await shop.catalog.update_product(sku, low_stock_threshold=10)
    clock.advance(timedelta(minutes=5))
    await jobs.run_due()
    assert alerts() == 2


async def test_concurrent_ticks_notify_once(shop: Shop) -> None:
    await _scene(shop)
    recorder = Recorder()
    await asyncio.gather(build_jobs(shop, recorder).run_due(), build_jobs(shop, recorder).run_due())
    kinds = [type(e).__name__ for e in recorder.events]
    assert sorted(kinds) == sorted(set(kinds))
    assert len(kinds) == 6


async def test_review_tiers_command(
    shop: Shop,
    database_url: str,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    member = await make_member(shop.db, shop.clock, tier="silver")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))

    argv = ["review-tiers", "--dry-run", "--quarter", "2026Q3"]
    assert await asyncio.to_thread(cli.main, argv, clock=shop.clock) == 0
    out = capsys.readouterr().out
    assert f"member #{member} silver -> silver: warned (" in out
    assert "spend_365d 0.00/200.00" in out
    assert "2026Q3: 1 reviewed, 0 would move" in out
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(TierReview.id))) == 0

    assert (
        await asyncio.to_thread(cli.main, ["review-tiers", "--quarter", "2026Q3"], clock=shop.clock)
        == 0
    )
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(TierReview.id))) == 1
    (entry,) = await shop.operations.audit.recent(action="review_tiers")
    assert entry.after == {"reviewed": 1, "moved": 0}


async def test_jobs_tick_until_stopped(shop: Shop) -> None:
    await _scene(shop)
    all_sent = asyncio.Event()

    class Waiting(Recorder):
        async def notify(self, event: Event) -> None:
            await super().notify(event)
            if len(self.events) == 6:
                all_sent.set()

    recorder = Waiting()
    stop = asyncio.Event()
    ticking = asyncio.create_task(repeat(build_jobs(shop, recorder).run_due, 0.01, stop))
    await asyncio.wait_for(all_sent.wait(), 10)
    await asyncio.sleep(0.05)  # a few more ticks, which must send nothing
    stop.set()
    await asyncio.wait_for(ticking, 10)  # the tick under way ends, and no other starts
    assert len(recorder.events) == 6


async def test_the_reviews_notices_hold_up_no_routine_job(shop: Shop) -> None:
    """The quarterly review's notices go out at the shop's pace for hours at a million
    members; meanwhile the routine lane keeps ticking: here a ticket breaches and is
    escalated while the review's sender is stuck on its first notice."""
    await _scene(shop)
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    stuck, release = asyncio.Event(), asyncio.Event()

    class SlowForReviews(Recorder):
        async def notify(self, event: Event) -> None:
            if isinstance(event, TierWarning | Downgraded):
                stuck.set()
                await release.wait()
            await super().notify(event)

    recorder = SlowForReviews()
    jobs = build_jobs(shop, recorder)
    reviewing = asyncio.create_task(jobs.run_due(lane=Lane.REVIEW))
    await asyncio.wait_for(stuck.wait(), 10)
    routine = await asyncio.wait_for(jobs.run_due(lane=Lane.ROUTINE), 10)
    assert "tier_review" not in {report.job for report in routine}
    assert {type(e) for e in recorder.events} >= {TicketBreached, PointsExpiring}
    assert not reviewing.done()
    release.set()
    (review,) = await asyncio.wait_for(reviewing, 10)
    assert (review.job, review.ran, review.error) == ("tier_review", True, None)
    assert review.result is not None
    assert review.result["notified"] == 2

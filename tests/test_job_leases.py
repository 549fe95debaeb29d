"""Jobs under a lease: never two workers in one run at once, a dead worker's run resumed;
a dead worker's broadcast claims settled so the others finish the broadcast.

Each test races real `Jobs` instances (each with its own holder, as separate worker
processes have) on a SQLite file and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core.broadcast import STALE_CLAIM, Broadcasts, SendOutcome
from core.clock import ManualClock
from core.jobs import LEASE, Event, Jobs
from core.models import JobRun
from core.shop import Shop, build_jobs
from tests.factories import make_member


class Quiet:
    async def notify(self, event: Event) -> None:
        """Nothing to tell in these tests."""


def _workers(shop: Shop, count: int) -> list[Jobs]:
    return [build_jobs(shop, Quiet()) for _ in range(count)]


async def test_a_running_job_is_not_started_by_a_second_worker(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _workers(shop, 2)
    assert first.holder != second.holder
    entered = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def slow_trials() -> int:
        nonlocal runs
        runs += 1
        entered.set()
        await release.wait()
        return 0

    monkeypatch.setattr(shop.tiers, "expire_trials", slow_trials)
    running = asyncio.create_task(first.run_due())
    await entered.wait()
    meanwhile = {r.job: r for r in await second.run_due()}
    assert not meanwhile["trials"].ran
    release.set()
    done = {r.job: r for r in await running}
    assert done["trials"].ran
    assert done["trials"].error is None
    assert runs == 1
    # Finished: neither worker runs it again in this period.
    assert not {r.job: r for r in await second.run_due()}["trials"].ran


async def test_many_workers_racing_for_one_period_run_each_job_once(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = 0

    async def counted() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0)
        return 0

    monkeypatch.setattr(shop.tiers, "expire_trials", counted)
    reports = await asyncio.gather(*(w.run_due() for w in _workers(shop, 8)))
    ran = [r for report in reports for r in report if r.job == "trials" and r.ran]
    assert len(ran) == 1
    assert runs == 1


async def test_a_dead_workers_run_resumes_after_its_lease_expires(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    (worker,) = _workers(shop, 1)
    period = worker.jobs[1].period(clock.now())
    assert worker.jobs[1].name == "trials"
    # A worker took the run, renewed it a moment ago, and was killed.
    async with shop.db.transaction() as session:
        session.add(
            JobRun(
                job="trials",
                period=period,
                started_at=clock.now(),
                held_by="gone:1:dead",
                lease_until=clock.now() + LEASE,
            )
        )
    assert not {r.job: r for r in await worker.run_due()}["trials"].ran
    clock.advance(LEASE - timedelta(seconds=1))
    assert not {r.job: r for r in await worker.run_due()}["trials"].ran
    clock.advance(timedelta(seconds=1))
    resumed = {r.job: r for r in await worker.run_due()}["trials"]
    assert resumed.ran
    assert resumed.error is None
    async with shop.db.read() as session:
        row = (
            await session.scalars(
                select(JobRun).where(JobRun.job == "trials", JobRun.period == period)
            )
        ).one()
    assert row.finished_at is not None
    assert row.held_by == worker.holder


async def test_the_heartbeat_keeps_the_lease_and_notices_losing_it(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    first, second = _workers(shop, 2)
    run_id = await first._start("trials", "p", clock.now())
    assert run_id is not None
    clock.advance(LEASE - timedelta(seconds=1))
    assert await first._renew(run_id)
    clock.advance(timedelta(seconds=30))
    # Renewed: still held, though the first lease would have run out by now.
    assert await second._start("trials", "p", clock.now()) is None
    clock.advance(LEASE)
    assert await second._start("trials", "p", clock.now()) == run_id
    assert not await first._renew(run_id)
    async with shop.db.transaction() as session:
        await session.execute(update(JobRun).values(finished_at=clock.now()))
    assert await first._start("trials", "p", clock.now()) is None


async def test_a_dead_workers_broadcast_claim_is_settled_once_stale(shop: Shop) -> None:
    """A worker died mid-send: the others finish the broadcast, never sending to that
    member (it may have reached them), once the claim is older than any send."""
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    for _ in range(3):
        await make_member(shop.db, shop.clock)
    dead = Broadcasts(shop.db, shop.ladder, shop.clock, rate=1000.0, concurrency=1)
    broadcast, recipients = await dead.create("tg:1", "all", "news")
    assert recipients == 3
    claim = await dead._claim(broadcast.id)
    assert claim is not None
    sent: list[int] = []

    async def send(telegram_id: int, *_: object) -> SendOutcome:
        sent.append(telegram_id)
        return SendOutcome.sent()

    alive = Broadcasts(shop.db, shop.ladder, shop.clock, rate=1000.0, concurrency=2)
    clock.advance(STALE_CLAIM - timedelta(seconds=1))
    early = await alive.run(broadcast.id, send)
    assert (early.sent, early.status) == (2, "running")
    clock.advance(timedelta(seconds=1))
    done = await alive.run(broadcast.id, send)
    assert (done.sent, done.failed, done.status) == (2, 1, "finished")
    assert claim.telegram_id not in sent
    assert len(sent) == 2

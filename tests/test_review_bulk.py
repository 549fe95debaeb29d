"""The set-based quarterly review gives the per-member review's results, member for member.

A seeded random population (every tier and tier source, review counts, protection
ending before, at and after the quarter, orders in every status and window, violations,
referrals, growth) is reviewed over three quarters in a row, so members go from warned
to protected to dropped. Each quarter the per-member reference (`tests/review_reference.py`)
runs first, the database is put back, and the set-based review runs from the same state
in small batches, so members of one batch meet referrals and orders across batch ends:
the outcomes and every row a review writes must be the same.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update

from bench.review_population import populate
from core.clock import ManualClock, add_months
from core.config import DEFAULT_TIERS_FILE
from core.jobs import LEASE, Event, TierWarning
from core.ladder import Ladder, load_ladder
from core.models import Member, TierChange, TierReview
from core.shop import Shop, build_jobs
from core.tiers.metrics import range_statements, windows
from core.tiers.moves import Tiers
from core.tiers.review import PIPELINE, QuarterlyReview, quarter_end
from core.tiers.rules import ReviewResult
from core.uow import Database
from tests.conftest import SHOP_ZONE
from tests.factories import make_member
from tests.query_plans import postgres_full_reads
from tests.review_reference import PerMemberReview, restore, review_state, snapshot
from tests.test_metrics_plan import _plan as explain
from tests.test_metrics_plan import _seed as seed_for_plans

#: Each quarter reviewed, with the moment its review runs (days into the next quarter).
QUARTERS = (
    ("2026Q3", datetime(2026, 10, 3, 2, 0, tzinfo=SHOP_ZONE)),
    ("2026Q4", datetime(2027, 1, 1, 0, 0, 5, tzinfo=SHOP_ZONE)),
    ("2027Q1", datetime(2027, 4, 9, 23, 0, tzinfo=SHOP_ZONE)),
)


@pytest.fixture
def ladder() -> Ladder:
    return load_ladder(DEFAULT_TIERS_FILE)


@pytest.mark.parametrize("seed", [7, 2026])
async def test_the_set_based_review_equals_the_per_member_one(
    db: Database, clock: ManualClock, ladder: Ladder, seed: int
) -> None:
    await populate(db, ladder, 400, seed=seed, ended=quarter_end(QUARTERS[0][0], SHOP_ZONE))
    reference = PerMemberReview(db, ladder, clock, SHOP_ZONE)
    bulk = QuarterlyReview(db, ladder, clock, SHOP_ZONE)
    seen: Counter[ReviewResult] = Counter()
    for quarter, moment in QUARTERS:
        clock.set(moment)
        before = await snapshot(db)
        expected = await reference.run(quarter=quarter)
        expected_state = await review_state(db)
        expected_again = await reference.run(quarter=quarter)
        await restore(db, before, quarter)

        outcomes = await bulk.run(quarter=quarter, batch_size=37)
        assert outcomes == expected
        assert await review_state(db) == expected_state
        assert await bulk.run(quarter=quarter, batch_size=50) == expected_again
        seen.update(outcome.outcome for outcome in outcomes)
    # The population is varied enough to exercise every verdict.
    assert set(seen) == set(ReviewResult), seen
    assert seen[ReviewResult.DROPPED] >= 5


async def test_a_dry_run_writes_nothing_and_tells_what_the_run_does(
    db: Database, clock: ManualClock, ladder: Ladder
) -> None:
    quarter, moment = QUARTERS[0]
    await populate(db, ladder, 150, seed=3, ended=quarter_end(quarter, SHOP_ZONE))
    clock.set(moment)
    review = QuarterlyReview(db, ladder, clock, SHOP_ZONE)
    before = await review_state(db)

    preview = await review.run(quarter=quarter, dry_run=True, batch_size=20)

    assert await review_state(db) == before
    assert await review.run(quarter=quarter, batch_size=20) == preview


async def test_a_review_cut_off_between_batches_resumes_after_the_last_one(
    db: Database, clock: ManualClock, ladder: Ladder
) -> None:
    quarter, moment = QUARTERS[0]
    await populate(db, ladder, 150, seed=5, ended=quarter_end(quarter, SHOP_ZONE))
    clock.set(moment)
    review = QuarterlyReview(db, ladder, clock, SHOP_ZONE)
    before = await snapshot(db)
    whole = await review.run(quarter=quarter, batch_size=25)
    finished = await review_state(db)
    await restore(db, before, quarter)

    batches = review.batches(quarter=quarter, batch_size=25)
    first = await anext(batches)
    # The process stops after its first batch; on PostgreSQL the next one was under way
    # beside it (`PIPELINE`) and finishes too.
    await batches.aclose()
    async with db.read() as session:
        recorded = await session.scalar(select(func.count()).select_from(TierReview)) or 0
    expected = len(first) * (PIPELINE if db.is_postgres else 1)
    assert recorded == min(expected, len(whole))

    resumed = await review.run(quarter=quarter, batch_size=25)

    assert await review_state(db) == finished
    assert [o.recorded for o in resumed] == [True] * recorded + [False] * (len(whole) - recorded)
    assert resumed[recorded:] == whole[recorded:]


class _Killed(BaseException):
    """The process dying mid-send: no `except Exception` on the way stops it."""


class _DyingNotifier:
    """Records the events it is given and dies at the `dies_at`-th (1-based)."""

    def __init__(self, dies_at: int | None = None) -> None:
        self.events: list[Event] = []
        self._dies_at = dies_at

    async def notify(self, event: Event) -> None:
        if len(self.events) + 1 == self._dies_at:
            raise _Killed
        self.events.append(event)


async def test_review_notices_resume_after_a_crash_without_sending_twice(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    slipping = [await make_member(shop.db, clock, tier="silver") for _ in range(4)]
    first = _DyingNotifier(dies_at=3)

    with pytest.raises(_Killed):
        await build_jobs(shop, first).run_due()

    async with shop.db.read() as session:
        reviewed = await session.scalar(select(func.count()).select_from(TierReview))
    assert reviewed == 4
    assert [e.member_id for e in first.events] == slipping[:2]
    # The dead process's run is held until its lease runs out; then the next one resumes.
    held = {r.job: r for r in await build_jobs(shop, _DyingNotifier()).run_due()}
    assert not held["tier_review"].ran
    clock.advance(LEASE + timedelta(seconds=1))
    resumed = _DyingNotifier()
    reports = {r.job: r for r in await build_jobs(shop, resumed).run_due()}
    assert reports["tier_review"].ran
    assert reports["tier_review"].result is not None
    assert reports["tier_review"].result["notified"] == 1
    # The third was claimed when the process died: lost, never doubled (at most once).
    assert [e.member_id for e in resumed.events] == slipping[3:]
    assert all(isinstance(e, TierWarning) and e.unmet == () for e in resumed.events)


async def test_therange_statements_read_through_indexes(db: Database, clock: ManualClock) -> None:
    """The review's GROUP BY statements read a range of members through the indexes the
    per-member ones use, never a whole table (on a seeded, analysed database)."""
    await seed_for_plans(db, clock)
    values = {**windows(0, clock.now()), "lo": 100, "hi": 200}
    for query in range_statements():
        async with db.engine.begin() as conn:
            if db.is_postgres:
                await conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = await conn.run_sync(explain, values, query)
        if db.is_postgres:
            scans = postgres_full_reads(plan, ("members", "orders", "violations"))
        else:
            scans = [
                line
                for line in plan
                if line.startswith(("SCAN members", "SCAN orders", "SCAN violations"))
                or "AUTOMATIC" in line
            ]
        assert scans == [], "\n".join(plan)


async def test_admin_moves_during_a_review_keep_every_history_consistent(
    db: Database, clock: ManualClock, ladder: Ladder
) -> None:
    """Admins moving members while the review drops them: whichever comes first, each
    member's `tier_changes` chain from their old tier to their tier has no gap, as when
    the per-member review held each member's lock (here the batch holds its rows')."""
    quarter, moment = QUARTERS[0]
    members = [await make_member(db, clock, tier="silver") for _ in range(40)]
    protected_until = add_months(quarter_end(quarter, SHOP_ZONE), -1)
    async with db.transaction() as session:
        await session.execute(
            update(Member)
            .where(Member.id.in_(members))
            .values(quarters_below=2, protected_until=protected_until)
        )
    clock.set(moment)
    tiers = Tiers(db, ladder, clock)
    review = QuarterlyReview(db, ladder, clock, SHOP_ZONE)

    async def admin() -> None:
        for member in reversed(members):
            await tiers.set_tier(member, "gold", actor="admin", reason="race")

    batches = review.batches(quarter=quarter, batch_size=5)
    outcomes = await anext(batches)  # so some members are surely dropped first

    async def rest() -> None:
        async for batch in batches:
            outcomes.extend(batch)

    await asyncio.gather(rest(), admin())

    dropped = {o.member_id for o in outcomes if o.outcome is ReviewResult.DROPPED}
    assert len(dropped) >= 5
    async with db.read() as session:
        rows = (
            await session.execute(
                select(TierChange.member_id, TierChange.from_tier, TierChange.to_tier).order_by(
                    TierChange.id
                )
            )
        ).all()
        held = dict((await session.execute(select(Member.id, Member.tier_key))).all())
    for member in members:
        chain = [(f, t) for m, f, t in rows if m == member]
        assert chain[0][0] == "silver"
        assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(chain)), chain
        assert chain[-1][1] == held[member] == "gold"
        assert len(chain) == (2 if member in dropped else 1)

"""The quarterly review: set-based against the per-member reference, then at a million members.

Part one generates `--small` members (`bench.review_population`) and reviews them with the
per-member reference (`tests/review_reference.py`, the review before it went
set-based) and with `QuarterlyReview`, alternating which goes first in each of
`--rounds` rounds; the database is put back between runs, so both review the same
state. Part two generates `--members` members in a fresh database (the generator's
time is printed) and times the set-based review of all of them, then a re-run (every
member already recorded). SQLite runs on a temporary file; with BENCH_DATABASE_URL set
(postgresql+asyncpg://..., its schema is dropped and made again) PostgreSQL runs too.

Run: `make bench-review` (`python -m bench.review --small 10000 --members 1000000`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.review_population import DEFAULT_ZONE, QUARTER, populate
from core.clock import ManualClock
from core.config import DEFAULT_TIERS_FILE
from core.ladder import Ladder, load_ladder
from core.migrate import migrate_afresh
from core.tiers.review import QuarterlyReview, quarter_end
from core.uow import Database
from tests.review_reference import PerMemberReview, restore, snapshot

ZONE = ZoneInfo(DEFAULT_ZONE)
#: When the benchmark's reviews run: a few days into the quarter after `QUARTER`.
REVIEW_AT = datetime(2026, 10, 3, 2, 0, tzinfo=ZONE)


async def _fresh(url: str, ladder: Ladder, members: int) -> tuple[Database, float]:
    """A migrated database holding a population of `members`; and the seconds it took."""
    await migrate_afresh(url)
    db = Database.from_url(url)
    started = time.perf_counter()
    counts = await populate(db, ladder, members, seed=11, ended=quarter_end(QUARTER, ZONE))
    took = time.perf_counter() - started
    print(
        f"  generated {counts.members:,} members, {counts.orders:,} orders,"
        f" {counts.activity:,} check-ins, {counts.violations:,} violations in {took:.1f}s"
    )
    return db, took


async def compare(url: str, ladder: Ladder, members: int, rounds: int) -> None:
    """Per-member reference against the set-based review, same state, alternating order."""
    db, _ = await _fresh(url, ladder, members)
    clock = ManualClock(REVIEW_AT)
    reviews: dict[str, PerMemberReview | QuarterlyReview] = {
        "per-member": PerMemberReview(db, ladder, clock, ZONE),
        "set-based": QuarterlyReview(db, ladder, clock, ZONE),
    }
    seconds: dict[str, list[float]] = {name: [] for name in reviews}
    reviewed = 0
    try:
        for round_number in range(rounds):
            names = list(reviews) if round_number % 2 == 0 else list(reversed(reviews))
            for name in names:
                saved = await snapshot(db)
                started = time.perf_counter()
                reviewed = len(await reviews[name].run(quarter=QUARTER))
                seconds[name].append(time.perf_counter() - started)
                await restore(db, saved, QUARTER)
    finally:
        await db.dispose()
    best = {name: min(times) for name, times in seconds.items()}
    for name, times in seconds.items():
        rounds_text = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"  {name:>10}: {reviewed:,} reviewed of {members:,} members,"
            f" best {best[name]:.2f}s ({reviewed / best[name]:,.0f} members/s;"
            f" rounds {rounds_text})"
        )
    print(f"  set-based is {best['per-member'] / best['set-based']:.0f}x the per-member review")


async def at_scale(url: str, ladder: Ladder, members: int) -> None:
    """The set-based review of a whole generated population, then its re-run."""
    db, _ = await _fresh(url, ladder, members)
    review = QuarterlyReview(db, ladder, ManualClock(REVIEW_AT), ZONE)
    try:
        for label in ("review", "re-run"):
            outcomes: Counter[str] = Counter()
            started = time.perf_counter()
            async for batch in review.batches(quarter=QUARTER):
                outcomes.update(outcome.outcome.value for outcome in batch)
            took = time.perf_counter() - started
            total = sum(outcomes.values())
            detail = ", ".join(f"{kind} {n:,}" for kind, n in sorted(outcomes.items()))
            print(
                f"  set-based {label}: {total:,} reviewed of {members:,} members in {took:.1f}s"
                f" ({members / took:,.0f} members/s; {detail})"
            )
    finally:
        await db.dispose()


async def main(small: int, members: int, rounds: int, skip_sqlite: bool) -> None:
    ladder = load_ladder(DEFAULT_TIERS_FILE)
    targets: list[tuple[str, str | None]] = [] if skip_sqlite else [("SQLite", None)]
    if pg_url := os.environ.get("BENCH_DATABASE_URL"):
        targets.append(("PostgreSQL", pg_url))
    print("The machine may be shared: compare figures from one run, not across runs.")
    for name, url in targets:
        with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
            sqlite = f"sqlite+aiosqlite:///{Path(tmp) / 'small.db'}"
            if small:
                print(f"{name}, {small:,} members, {rounds} rounds:")
                await compare(url or sqlite, ladder, small, rounds)
            if members:
                print(f"{name}, {members:,} members:")
                await at_scale(
                    url or f"sqlite+aiosqlite:///{Path(tmp) / 'big.db'}", ladder, members
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000, help="members for old vs new")
    parser.add_argument("--members", type=int, default=1_000_000, help="members at scale")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    asyncio.run(main(args.small, args.members, args.rounds, args.skip_sqlite))

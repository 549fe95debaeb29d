"""The quarterly review (seed 001): a rules-held tier is checked against its maintenance
rule once per shop-local quarter, with downgrade protection before any drop.

What the review decides is `rules.review_verdict`; this module picks the members,
measures them as of the quarter's end and records the outcome, so a re-run or a
resumed run changes nothing twice.

The review is set-based: members are taken in batches of consecutive ids, each batch
one transaction of a handful of statements whatever its size (the batch's rows read and
locked, its metrics measured by `metrics.measure_range`, the reviews, the moves and
their `tier_changes` written with one executemany each). The verdicts are the same
rule functions the rest of the shop uses, applied in Python to the batch's rows. A run
that stops halfway resumes after the last committed batch: reviewed members have their
`tier_reviews` row and get their stored outcome back.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections import deque
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    Update,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

from core.clock import Clock, add_months, quarter_of
from core.db import table_of
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.models import Member, TierChange, TierReview, UTCDateTime
from core.prepared import Prepared
from core.tiers.metrics import RowMetrics, measure_range
from core.tiers.moves import SYSTEM
from core.tiers.rules import (
    ConditionProgress,
    ReviewResult,
    TierSource,
    progress,
    review_verdict,
)
from core.uow import Database

QUARTER_LABEL = re.compile(r"^\d{4}Q[1-4]$")


@dataclass(slots=True)
class ReviewOutcome:
    """What a quarterly review did (or, in a dry run, would do) to one member.

    Not frozen, unlike the other views: a frozen dataclass sets each field through
    `object.__setattr__`, which made building the outcomes of a million members a
    tenth of the review. Nothing changes one after the review returns it.
    """

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


#: Members reviewed per transaction. Large enough that the per-statement costs vanish
#: (1M members: 100 batches of ~8 statements), small enough that a batch's locks are
#: held for a fraction of a second and its rows fit in memory many times over.
BATCH_SIZE = 10_000

#: Batches under way at once on PostgreSQL: the server measures and writes one while the
#: next is judged in Python, so the two share the machine's cores. SQLite's one writer
#: thread would run them one after another anyway.
PIPELINE = 2

#: The largest id an INTEGER column holds: the last batch's upper bound.
_LAST_ID = 2**31 - 1

#: Why the review moves a member, in `tier_changes.reason`.
REVIEW_REASON = "quarterly_review"

_members = table_of(Member)
_reviews = table_of(TierReview)
_changes = table_of(TierChange)


def _drop(member_id: ColumnElement[Any], tier: ColumnElement[Any]) -> Update:
    """A dropped member, as `moves.move` leaves one: on the tier below by the rules, the
    review count and the protection cleared, no trial."""
    return (
        update(_members)
        .where(_members.c.id == member_id)
        .values(
            tier_key=tier,
            tier_source=TierSource.RULES.value,
            quarters_below=0,
            protected_until=None,
            trial_base_tier=None,
            trial_until=None,
        )
    )


def _count(
    member_id: ColumnElement[Any], below: ColumnElement[Any], until: ColumnElement[Any]
) -> Update:
    """A member kept on their tier whose review count or protection changed."""
    return (
        update(_members)
        .where(_members.c.id == member_id)
        .values(quarters_below=below, protected_until=until)
    )


#: The four writes of a batch, by name, each as the statement run once per row: its
#: parameters are the keys of the batch's row dicts. A million members write a million
#: rows, so on SQLite they go as `Prepared.many`, without SQLAlchemy's work per row.
_WRITES: dict[str, Prepared] = {
    "reviews": Prepared(insert(_reviews)),
    "drops": Prepared(_drop(bindparam("b_id"), bindparam("b_tier"))),
    "changes": Prepared(insert(_changes)),
    "counts": Prepared(_count(bindparam("b_id"), bindparam("b_below"), bindparam("b_until"))),
}

_ROW_TYPES: dict[str, TypeEngine[Any]] = {
    "b_id": Integer(),
    "b_tier": String(),
    "b_below": Integer(),
    "b_until": UTCDateTime(),
}


@functools.cache
def _postgres_writes() -> dict[str, tuple[UpdateBase, tuple[str, ...]]]:
    """The same writes on PostgreSQL as one statement each over `unnest` of one array
    per parameter (INSERT … SELECT, UPDATE … FROM): asyncpg's executemany still sends
    each row as a message of its own, which cost more than the whole measure."""

    def rows(*names: str, table: Table | None = None) -> TableValuedAlias:
        arrays = [
            bindparam(
                name, type_=ARRAY(table.c[name].type if table is not None else _ROW_TYPES[name])
            )
            for name in names
        ]
        return func.unnest(*arrays).table_valued(*names).render_derived()

    review_keys = ("member_id", "quarter", "tier_key", "met_maintenance", "outcome", "created_at")
    change_keys = ("member_id", "from_tier", "to_tier", "reason", "actor", "created_at")
    reviews = rows(*review_keys, table=_reviews)
    changes = rows(*change_keys, table=_changes)
    drops = rows("b_id", "b_tier")
    counts = rows("b_id", "b_below", "b_until")
    return {
        "reviews": (
            insert(_reviews).from_select(review_keys, select(*reviews.c)),
            review_keys,
        ),
        "drops": (_drop(drops.c.b_id, drops.c.b_tier), ("b_id", "b_tier")),
        "changes": (
            insert(_changes).from_select(change_keys, select(*changes.c)),
            change_keys,
        ),
        "counts": (
            _count(counts.c.b_id, counts.c.b_below, counts.c.b_until),
            ("b_id", "b_below", "b_until"),
        ),
    }


def _write(conn: Connection, name: str, rows: list[dict[str, Any]]) -> None:
    """One of `_WRITES` for every row: one statement over arrays on PostgreSQL, the
    driver's executemany on SQLite."""
    if conn.dialect.name != "postgresql":
        _WRITES[name].many(conn, rows)
        return
    statement, keys = _postgres_writes()[name]
    conn.execute(statement, {key: [row[key] for row in rows] for key in keys})


@functools.cache
def _batch_query(entry: str, *, lock: bool) -> Select[*tuple[Any, ...]]:
    """A batch: members after `after` up to `upto` that hold a tier above `entry` by the
    rules, or that this quarter's review already recorded, with that record.

    With `lock` the member rows are locked (PostgreSQL; a SQLite write transaction
    holds the whole file), so no purchase moves a member between the measure and the
    write, as the per-member lock did.
    """
    query = (
        select(
            Member.id,
            Member.telegram_id,
            Member.locale,
            Member.tier_key,
            Member.quarters_below,
            Member.protected_until,
            Member.total_spent,
            Member.joint_campaigns,
            Member.growth_points,
            TierReview.tier_key.label("stored_tier"),
            TierReview.outcome.label("stored_outcome"),
        )
        .select_from(Member)
        .outerjoin(
            TierReview,
            and_(TierReview.member_id == Member.id, TierReview.quarter == bindparam("quarter")),
        )
        .where(
            Member.id > bindparam("after"),
            Member.id <= bindparam("upto"),
            or_(
                and_(Member.tier_source == TierSource.RULES.value, Member.tier_key != entry),
                TierReview.id.is_not(None),
            ),
        )
        .order_by(Member.id)
    )
    return query.with_for_update(of=Member) if lock else query


@functools.cache
def _batch_end_query(entry: str) -> Select[int]:
    """The id `skip` members further than `after` among those `_batch_query` takes
    (`upto` bound to `_LAST_ID`)."""
    return (
        _batch_query(entry, lock=False)
        .with_only_columns(Member.id)
        .offset(bindparam("skip"))
        .limit(1)
    )


class QuarterlyReview:
    """Runs the review for a quarter; `cardshop review-tiers` and the scheduled job call it."""

    def __init__(self, db: Database, ladder: Ladder, clock: Clock, zone: ZoneInfo) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock
        self._zone = zone

    def label(self, quarter: str | None) -> str:
        """The quarter to review: `quarter`, checked, or the one before the clock's."""
        label = quarter or previous_quarter(self._clock.now(), self._zone)
        if not QUARTER_LABEL.match(label):
            raise ShopError(ErrorCode.INVALID_INPUT, quarter=label)
        return label

    async def run(
        self, *, quarter: str | None = None, dry_run: bool = False, batch_size: int = BATCH_SIZE
    ) -> list[ReviewOutcome]:
        """Check every rules-held tier against its maintenance rule, once per quarter.

        Members already reviewed for the quarter get their stored outcome back and
        nothing changes. Holds every outcome in memory: the job and the benchmark use
        `batches`, which hands them over a batch at a time.
        """
        outcomes: list[ReviewOutcome] = []
        async for batch in self.batches(quarter=quarter, dry_run=dry_run, batch_size=batch_size):
            outcomes += batch
        return outcomes

    async def batches(
        self, *, quarter: str | None = None, dry_run: bool = False, batch_size: int = BATCH_SIZE
    ) -> AsyncIterator[list[ReviewOutcome]]:
        """The review, one committed batch of members at a time, in member id order.

        Each batch's last member is found first (`_batch_end`), so on PostgreSQL the next
        batch starts while this one is still running (`PIPELINE`). A consumer that stops
        early lets the batches under way finish; each commits whole or not at all. A dry
        run reads each batch in a read transaction and writes nothing.
        """
        label = self.label(quarter)
        if batch_size < 1:
            raise ShopError(ErrorCode.INVALID_INPUT, batch_size=batch_size)
        run = self._db.run_read if dry_run else self._db.run
        depth = PIPELINE if self._db.is_postgres else 1
        in_flight: deque[asyncio.Future[list[ReviewOutcome]]] = deque()
        after: int | None = 0
        try:
            while after is not None or in_flight:
                if after is not None and len(in_flight) < depth:
                    end = functools.partial(
                        self._batch_end, quarter=label, after=after, limit=batch_size
                    )
                    upto = await self._db.run_read(end)
                    work = functools.partial(
                        self._review_batch,
                        quarter=label,
                        after=after,
                        upto=_LAST_ID if upto is None else upto,
                        write=not dry_run,
                    )
                    in_flight.append(asyncio.ensure_future(run(work)))
                    after = upto
                    continue
                outcomes = await in_flight.popleft()
                if outcomes:
                    yield outcomes
        finally:
            for running in in_flight:
                with suppress(Exception):
                    await running

    def _batch_end(self, conn: Connection, *, quarter: str, after: int, limit: int) -> int | None:
        """The id of the `limit`-th member the review takes after `after`; None when
        fewer are left (the last batch then runs to the end)."""
        end = conn.scalar(
            _batch_end_query(self._ladder.entry.key),
            {"quarter": quarter, "after": after, "upto": _LAST_ID, "skip": limit - 1},
        )
        return None if end is None else int(end)

    def _review_batch(
        self, conn: Connection, *, quarter: str, after: int, upto: int, write: bool
    ) -> list[ReviewOutcome]:
        """Review the members after id `after` up to id `upto`.

        Everything is judged as of the quarter's end, never the moment the job runs:
        the metrics, and the protection, which starts and ends on quarter boundaries.
        """
        ladder = self._ladder
        rows = conn.execute(
            _batch_query(ladder.entry.key, lock=write),
            {"quarter": quarter, "after": after, "upto": upto},
        ).all()
        if not rows:
            return []
        now = self._clock.now()
        ended = quarter_end(quarter, self._zone)
        # Rows unpacked as tuples in `_batch_query`'s column order: a million members
        # make attribute access by name a cost of its own.
        fresh = {row[0]: RowMetrics(row[6], row[7], row[8]) for row in rows if row[10] is None}
        metrics = measure_range(conn, fresh, rows[0][0], rows[-1][0], ended) if fresh else {}
        # `Ladder.below` finds a tier by comparing models: look each one up once.
        below_of = {tier.key: ladder.below(tier.key) for tier in ladder.tiers}
        outcomes: list[ReviewOutcome] = []
        reviews: list[dict[str, Any]] = []
        drops: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        counts: list[dict[str, Any]] = []
        for (
            member_id,
            telegram_id,
            locale,
            tier_key,
            quarters_below,
            protected_until,
            _spent,
            _campaigns,
            _growth,
            stored_tier,
            stored_outcome,
        ) in rows:
            if stored_outcome is not None:
                result = ReviewResult(stored_outcome)
                below = below_of.get(stored_tier) if result is ReviewResult.DROPPED else None
                outcomes.append(
                    ReviewOutcome(
                        member_id=member_id,
                        telegram_id=telegram_id,
                        locale=locale,
                        quarter=quarter,
                        from_tier=stored_tier,
                        to_tier=below.key if below else stored_tier,
                        outcome=result,
                        unmet=(),
                        quarters_below=quarters_below,
                        protected_until=protected_until,
                        recorded=True,
                    )
                )
                continue
            tier = ladder.tier(tier_key)
            measured = progress(ladder, tier.key, tier.maintenance, metrics[member_id])
            verdict = review_verdict(
                ladder,
                tier.key,
                met=measured.met,
                quarters_below=quarters_below,
                protected_until=protected_until,
                ended=ended,
                zone=self._zone,
            )
            reviews.append(
                {
                    "member_id": member_id,
                    "quarter": quarter,
                    "tier_key": tier.key,
                    "met_maintenance": measured.met,
                    "outcome": verdict.result.value,
                    "created_at": now,
                }
            )
            if verdict.to_tier != tier.key:
                drops.append({"b_id": member_id, "b_tier": verdict.to_tier})
                changes.append(
                    {
                        "member_id": member_id,
                        "from_tier": tier.key,
                        "to_tier": verdict.to_tier,
                        "reason": REVIEW_REASON,
                        "actor": SYSTEM,
                        "created_at": now,
                    }
                )
            elif (verdict.quarters_below, verdict.protected_until) != (
                quarters_below,
                protected_until,
            ):
                counts.append(
                    {
                        "b_id": member_id,
                        "b_below": verdict.quarters_below,
                        "b_until": verdict.protected_until,
                    }
                )
            outcomes.append(
                ReviewOutcome(
                    member_id=member_id,
                    telegram_id=telegram_id,
                    locale=locale,
                    quarter=quarter,
                    from_tier=tier.key,
                    to_tier=verdict.to_tier,
                    outcome=verdict.result,
                    unmet=tuple(c for c in measured.conditions if not c.met),
                    quarters_below=verdict.quarters_below,
                    protected_until=verdict.protected_until,
                    recorded=False,
                )
            )
        if write:
            batch = {"reviews": reviews, "drops": drops, "changes": changes, "counts": counts}
            for name, values in batch.items():
                if values:
                    _write(conn, name, values)
        return outcomes

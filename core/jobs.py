"""Scheduled jobs run inside the bot process: tier review, trials, points, SLA, low stock,
payments (top-ups paid without a notification, top-ups expired unpaid) and stock
reservations (warned an hour before their end, released at it; the same run forgets the
API nonces whose replay window has passed, a cheap delete by index).

Each job has a period key (a quarter, a shop-local day, or a slot of a few minutes) and
each run is a `job_runs` row unique on (job, period): a finished run is never repeated,
even by a restarted process, and a run that crashed (no `finished_at`) runs again on
the next tick. Running a job again changes nothing, because every service it calls
marks what it did once (`tier_reviews` unique per quarter, `warned_at`, `breached_at`,
expired lots at zero) and the notices a service cannot mark are claimed by key in
`job_notices` or `low_stock_alerts` before they are sent. A notice is therefore sent at
most once: one cut off by a crash between its claim and the send is lost, never doubled.

Several workers may tick at once: a run is held under a lease (`job_runs.held_by`,
`lease_until`) that its worker renews every `HEARTBEAT` while the job runs. Another
worker starts a run only when it is new, or unfinished with its lease expired (its
worker died: it resumes after at most `LEASE`) or released (it failed here: the next
tick retries it at once). The lease is the database's, so this holds on PostgreSQL
without Redis and on SQLite alike.

The jobs run in two lanes, each its own loop in the bot (`bot.notifier.background`):
the quarterly review, whose notices to a million members go out at the shop's send
pace for hours, has a lane of its own, so the routine jobs (ticket SLAs, payments,
reservations, low stock) keep their minute while it sends.

Core holds no text: the bot's `Notifier` turns each event into a localized message for
the member, the staff chat or the admins.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.api_keys import ApiKeys
from core.catalog import Catalog, ProductView
from core.clock import Clock, local_day
from core.models import Code, JobNotice, JobRun, LowStockAlert, Product
from core.payments import Credit, Payments
from core.points import Points
from core.reservations import Reservations, ReservationView
from core.sql import insert_ignoring_conflict
from core.tickets import Tickets, TicketView
from core.tiers.moves import Tiers
from core.tiers.review import QuarterlyReview, ReviewOutcome, previous_quarter
from core.tiers.rules import ConditionProgress, ReviewResult
from core.uow import Database

log = logging.getLogger(__name__)

#: How long a run stays held without a heartbeat: a worker that dies mid-run leaves it
#: to the others after this long.
LEASE = timedelta(seconds=60)
#: How often a running job renews its lease: a few renewals fit in one lease, so a slow
#: database round trip does not lose it.
HEARTBEAT = timedelta(seconds=15)


def worker_name() -> str:
    """Who holds a lease: host and process, plus a random tail for a reused pid."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TierWarning:
    """To the member: their tier's maintenance rule was not met this quarter."""

    member_id: int
    telegram_id: int
    locale: str | None
    tier: str
    quarter: str
    #: `warned` (first slip) or `protected` (kept until `protected_until`, then dropped).
    outcome: str
    protected_until: datetime | None
    #: What was missing; empty when the review was recorded by an earlier run.
    unmet: tuple[ConditionProgress, ...]


@dataclass(frozen=True, slots=True)
class Downgraded:
    """To the member: the quarterly review dropped them one tier."""

    member_id: int
    telegram_id: int
    locale: str | None
    from_tier: str
    to_tier: str
    quarter: str


@dataclass(frozen=True, slots=True)
class PointsExpiring:
    """To the member: points about to expire (the win-back message, 衰退预警)."""

    member_id: int
    telegram_id: int
    locale: str | None
    amount: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TicketSlaWarning:
    """To the staff chat: a ticket is past 80% of its first-response window."""

    ticket: TicketView


@dataclass(frozen=True, slots=True)
class TicketBreached:
    """To the staff chat (escalation): a ticket missed its first-response deadline."""

    ticket: TicketView


@dataclass(frozen=True, slots=True)
class LowStock:
    """To the admins: a product fell below its restock threshold (once until restocked)."""

    product: ProductView


@dataclass(frozen=True, slots=True)
class TopUpCredited:
    """To the member: a top-up the payments job found paid at its provider was credited
    (its notification never came). Told like money landing from a notification: balance
    before → after, and a buy-in-one-step order placed."""

    credit: Credit


@dataclass(frozen=True, slots=True)
class ReservationExpiring:
    """To the member: a hold of theirs ends within the warning window (once per hold)."""

    reservation: ReservationView


@dataclass(frozen=True, slots=True)
class ReservationExpired:
    """To the member: a hold of theirs ended; `released` codes went back on the shelf."""

    reservation: ReservationView
    released: int


Event = (
    TierWarning
    | Downgraded
    | PointsExpiring
    | TicketSlaWarning
    | TicketBreached
    | LowStock
    | TopUpCredited
    | ReservationExpiring
    | ReservationExpired
)


class Notifier(Protocol):
    """Implemented by the bot: deliver one event; raising only logs, the job goes on."""

    async def notify(self, event: Event) -> None: ...


def _review_notice(outcome: ReviewOutcome) -> TierWarning | Downgraded | None:
    """What to tell the member of a review outcome; None when nothing (kept, or no chat)."""
    if outcome.telegram_id is None or outcome.outcome is ReviewResult.KEPT:
        return None
    if outcome.outcome is ReviewResult.DROPPED:
        return Downgraded(
            member_id=outcome.member_id,
            telegram_id=outcome.telegram_id,
            locale=outcome.locale,
            from_tier=outcome.from_tier,
            to_tier=outcome.to_tier,
            quarter=outcome.quarter,
        )
    return TierWarning(
        member_id=outcome.member_id,
        telegram_id=outcome.telegram_id,
        locale=outcome.locale,
        tier=outcome.from_tier,
        quarter=outcome.quarter,
        outcome=outcome.outcome.value,
        protected_until=outcome.protected_until,
        unmet=outcome.unmet,
    )


# --- runs --------------------------------------------------------------------------------


class Lane(StrEnum):
    """Jobs that tick together: one lane's long run never delays another's jobs."""

    #: Minutes-long periods: SLAs, payments, reservations, low stock, trials, points.
    ROUTINE = "routine"
    #: The quarterly review: written in a minute, its notices sent for hours at the pace.
    REVIEW = "review"


@dataclass(frozen=True, slots=True)
class JobReport:
    job: str
    period: str
    #: False when the period's run had already finished (nothing was done).
    ran: bool
    result: dict[str, int] | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    name: str
    period: Callable[[datetime], str]
    run: Callable[[str], Awaitable[dict[str, int]]]
    lane: Lane = Lane.ROUTINE


_STOCK = (
    select(func.count(Code.id))
    .where(Code.product_id == Product.id, Code.order_id.is_(None))
    .correlate(Product)
    .scalar_subquery()
)


class Jobs:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        zone: ZoneInfo,
        notifier: Notifier,
        *,
        tiers: Tiers,
        review: QuarterlyReview,
        points: Points,
        tickets: Tickets,
        catalog: Catalog,
        payments: Payments,
        reservations: Reservations,
        api_keys: ApiKeys,
        sla_every: timedelta = timedelta(minutes=1),
        stock_every: timedelta = timedelta(minutes=5),
        payments_every: timedelta = timedelta(minutes=1),
        holder: str | None = None,
    ) -> None:
        self._db = db
        #: This worker's name on the runs it holds (see the module docstring).
        self.holder = holder or worker_name()
        self._clock = clock
        self._zone = zone
        self._notifier = notifier
        self._tiers = tiers
        self._review = review
        self._points = points
        self._tickets = tickets
        self._catalog = catalog
        self._payments = payments
        self._reservations = reservations
        self._api_keys = api_keys
        self.jobs = (
            _Job(
                "tier_review",
                lambda now: previous_quarter(now, zone),
                self._tier_review,
                Lane.REVIEW,
            ),
            _Job("trials", self._day, self._trials),
            _Job("points", self._day, self._expire_points),
            _Job("ticket_sla", lambda now: self._slot(now, sla_every), self._ticket_sla),
            _Job("low_stock", lambda now: self._slot(now, stock_every), self._low_stock),
            _Job("payments", lambda now: self._slot(now, payments_every), self._reconcile),
            _Job("reservations", lambda now: self._slot(now, sla_every), self._reservation_ends),
        )

    def _day(self, now: datetime) -> str:
        return local_day(now, self._zone).isoformat()

    def _slot(self, now: datetime, every: timedelta) -> str:
        """The start of the `every`-long slot `now` falls in, as shop-local minutes."""
        step = int(every.total_seconds())
        start = datetime.fromtimestamp(int(now.timestamp()) // step * step, UTC)
        return start.astimezone(self._zone).strftime("%Y-%m-%dT%H:%M")

    # --- scheduling -------------------------------------------------------------------

    async def run_due(
        self, now: datetime | None = None, *, lane: Lane | None = None
    ) -> list[JobReport]:
        """Run every job (of `lane`, or of all lanes) whose current period has no finished
        run; one failure stops none."""
        moment = now or self._clock.now()
        reports = []
        for job in self.jobs:
            if lane is not None and job.lane is not lane:
                continue
            period = job.period(moment)
            run_id = await self._start(job.name, period, moment)
            if run_id is None:
                reports.append(JobReport(job.name, period, ran=False, result=None))
                continue
            try:
                async with self._heartbeat(run_id):
                    result = await job.run(period)
            except Exception as exc:
                log.exception("job %s for %s failed; it runs again next tick", job.name, period)
                await self._release(run_id)
                reports.append(
                    JobReport(job.name, period, ran=True, result=None, error=type(exc).__name__)
                )
                continue
            async with self._db.transaction() as session:
                await session.execute(
                    update(JobRun)
                    .where(JobRun.id == run_id)
                    .values(finished_at=self._clock.now(), result=result, lease_until=None)
                )
            reports.append(JobReport(job.name, period, ran=True, result=result))
        return reports

    async def _start(self, job: str, period: str, now: datetime) -> int | None:
        """Take the period's run under this worker's lease; its id, or None when it has
        finished or another worker holds it.

        The take is one conditional `UPDATE`: on PostgreSQL a second worker racing for
        the same expired lease re-reads the row after the first commits and finds it
        held; on SQLite write transactions run one at a time.
        """
        lease = {"held_by": self.holder, "lease_until": self._clock.now() + LEASE}
        async with self._db.transaction() as session:
            created = await session.scalar(
                insert_ignoring_conflict(session, JobRun),
                {"job": job, "period": period, "started_at": now, **lease},
            )
            if created is not None:
                return int(created)
            taken = await session.scalar(
                update(JobRun)
                .where(
                    JobRun.job == job,
                    JobRun.period == period,
                    JobRun.finished_at.is_(None),
                    or_(JobRun.lease_until.is_(None), JobRun.lease_until <= self._clock.now()),
                )
                .values(started_at=now, **lease)
                .returning(JobRun.id)
            )
            return None if taken is None else int(taken)

    @asynccontextmanager
    async def _heartbeat(self, run_id: int) -> AsyncIterator[None]:
        """Renew the run's lease every `HEARTBEAT` while the block runs."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT.total_seconds())
                try:
                    held = await self._renew(run_id)
                except Exception:
                    log.exception("job run %s: could not renew its lease", run_id)
                    continue
                if not held:
                    # Only after this worker stalled past the lease: another may run it too.
                    log.error("job run %s: lease lost to another worker", run_id)
                    return

        beating = asyncio.create_task(beat(), name=f"job-lease-{run_id}")
        try:
            yield
        finally:
            beating.cancel()
            with suppress(asyncio.CancelledError):
                await beating

    async def _renew(self, run_id: int) -> bool:
        """Push the lease on; False when another worker holds the run now."""
        async with self._db.transaction() as session:
            renewed = await session.scalar(
                update(JobRun)
                .where(JobRun.id == run_id, JobRun.held_by == self.holder)
                .values(lease_until=self._clock.now() + LEASE)
                .returning(JobRun.id)
            )
        return renewed is not None

    async def _release(self, run_id: int) -> None:
        """A run that failed here: free at once, so the next tick (anyone's) retries it."""
        try:
            async with self._db.transaction() as session:
                await session.execute(
                    update(JobRun)
                    .where(JobRun.id == run_id, JobRun.held_by == self.holder)
                    .values(lease_until=None, held_by=None)
                )
        except Exception:
            log.exception("job run %s: could not release its lease; it expires", run_id)

    async def _notify(self, event: Event, *, key: str | None = None) -> bool:
        """Send one event; with `key`, only if no run claimed that key before."""
        if key is not None:
            async with self._db.transaction() as session:
                claimed = await session.scalar(
                    insert_ignoring_conflict(session, JobNotice),
                    {"key": key, "created_at": self._clock.now()},
                )
            if claimed is None:
                return False
        try:
            await self._notifier.notify(event)
        except Exception:
            log.exception("notifier failed for %r", event)
            return False
        return True

    # --- the jobs ---------------------------------------------------------------------

    async def _tier_review(self, quarter: str) -> dict[str, int]:
        """Review the quarter (set-based, batch by batch), then tell the members it warned,
        protected or dropped.

        The notices go out once the whole review is written, each claimed by its key
        (`tier_review:<quarter>:<member>`) and sent by the notifier, whose transport
        takes its turn from the shop's one pace (bot.flood). A run cut off while sending
        runs again at the next tick: the review hands back every stored outcome at once,
        and only the notices no run claimed yet are sent.
        """
        counts = {"reviewed": 0, "notified": 0}
        notices: list[TierWarning | Downgraded] = []
        async for batch in self._review.batches(quarter=quarter):
            for outcome in batch:
                counts["reviewed"] += 1
                counts[outcome.outcome.value] = counts.get(outcome.outcome.value, 0) + 1
                notice = _review_notice(outcome)
                if notice is not None:
                    notices.append(notice)
        prefix = f"tier_review:{quarter}:"
        claimed = await self._claimed(prefix)
        for notice in notices:
            key = f"{prefix}{notice.member_id}"
            if key not in claimed:
                counts["notified"] += await self._notify(notice, key=key)
        return counts

    async def _claimed(self, prefix: str) -> set[str]:
        """The notice keys starting with `prefix` that a run claimed: one read, where a
        resumed review's notices would otherwise each try a claim of their own."""
        async with self._db.read() as session:
            return set(
                await session.scalars(select(JobNotice.key).where(JobNotice.key.startswith(prefix)))
            )

    async def _trials(self, _day: str) -> dict[str, int]:
        return {"ended": await self._tiers.expire_trials()}

    async def _expire_points(self, _day: str) -> dict[str, int]:
        expired = await self._points.expire()
        warned = 0
        for warning in await self._points.expiry_warnings():
            if warning.telegram_id is None:
                continue
            event = PointsExpiring(
                member_id=warning.member_id,
                telegram_id=warning.telegram_id,
                locale=warning.locale,
                amount=warning.amount,
                expires_at=warning.expires_at,
            )
            warned += await self._notify(event)
        return {"expired_points": expired, "warned": warned}

    async def _ticket_sla(self, _slot: str) -> dict[str, int]:
        warned = await self._tickets.due_warnings()
        breached = await self._tickets.breaches()
        events: list[Event] = [TicketSlaWarning(t) for t in warned]
        events += [TicketBreached(t) for t in breached]
        for event in events:
            await self._notify(event)
        return {"warned": len(warned), "breached": len(breached)}

    async def _low_stock(self, _slot: str) -> dict[str, int]:
        """Alert once per product falling low; a product back at its threshold re-arms."""
        low = await self._catalog.low_stock()
        async with self._db.transaction() as session:
            fresh = [p for p in low if await self._claim_alert(session, p)]
            rearmed = await session.scalars(
                delete(LowStockAlert)
                .where(
                    LowStockAlert.product_id.in_(
                        select(Product.id).where(Product.low_stock_threshold <= _STOCK)
                    )
                )
                .returning(LowStockAlert.product_id)
            )
            rearmed_count = len(rearmed.all())
        for product in fresh:
            await self._notify(LowStock(product))
        return {"low": len(low), "alerted": len(fresh), "rearmed": rearmed_count}

    async def _claim_alert(self, session: AsyncSession, product: ProductView) -> bool:
        inserted = await session.scalar(
            insert_ignoring_conflict(session, LowStockAlert),
            {
                "product_id": product.id,
                "stock": product.stock,
                "alerted_at": self._clock.now(),
            },
        )
        return inserted is not None

    async def _reconcile(self, _slot: str) -> dict[str, int]:
        """Credit top-ups paid at the gateway whose notification never came, tell their
        members, and expire the unpaid ones past their time.

        A credit is made once (the payment's own guarantee), so its notice needs no key:
        a run cut off between the two loses the notice, never doubles the money.
        """
        report = await self._payments.reconcile()
        told = 0
        for credit in report.credits:
            told += await self._notify(TopUpCredited(credit))
        return {
            "queried": report.queried,
            "credited": len(report.credits),
            "told": told,
            "failed": report.failed,
            "expired": report.expired,
        }

    async def _reservation_ends(self, _slot: str) -> dict[str, int]:
        """Warn the holders of reservations ending soon, end those past their time, and
        forget expired API nonces (the same every-minute expiry sweep).

        `warn_due` marks each hold warned as it returns it and `expire_due` ends each
        hold once, so neither notice needs a key.
        """
        warned = 0
        for hold in await self._reservations.warn_due():
            warned += await self._notify(ReservationExpiring(hold))
        ended = await self._reservations.expire_due()
        for hold, released in ended:
            await self._notify(ReservationExpired(hold, released))
        return {
            "warned": warned,
            "expired": len(ended),
            "released": sum(released for _, released in ended),
            "nonces_forgotten": await self._api_keys.forget_nonces(),
        }

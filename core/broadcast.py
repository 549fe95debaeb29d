"""Broadcasts: one message to every member or one tier, paced and resumable.

The audience is snapshotted into `broadcast_deliveries` when the broadcast is created,
so a restart resumes with exactly the members not yet served. Each delivery is claimed
(`pending` → `sending`) in its own transaction before the send and marked with the
outcome right after it, so two workers never send to the same member.

The rule is at-most-once ("never send twice to one member"): a `sending` row found at
start-up belongs to a send that was cut off (crash, cancel, restart) and may or may not
have reached Telegram, so `resume_unfinished` marks it `failed` with the error
`interrupted` and never sends it again. With several workers, one that dies leaves its
claims behind while the others keep running: every `run` first settles claims older
than `STALE_CLAIM` (longer than any send takes) the same way, so the broadcast still
finishes. A worker starting while another sends marks that one's few claims in flight
interrupted too; their sender then records the real outcome over it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Protocol, cast

from sqlalchemy import Integer, exists, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.models import Broadcast, BroadcastDelivery, Member
from core.uow import Database

log = logging.getLogger(__name__)

AUDIENCE_ALL: Final = "all"
#: Telegram's documented ceiling for bulk messages from one bot.
TELEGRAM_RATE: Final = 25.0
INTERRUPTED: Final = "interrupted"
#: A claim older than this belongs to a worker that died: a send takes at most the flood
#: control's longest wait (`bot.flood.LONGEST_WAIT`, 5 minutes) and its pace.
STALE_CLAIM: Final = timedelta(minutes=10)
TEXT_MAX = 4096
BUTTON_TEXT_MAX = 64
URL_MAX = 512
URL_SCHEMES = ("https://", "http://", "tg://")


class BroadcastStatus(StrEnum):
    RUNNING = "running"
    #: Every delivery ended (sent, blocked or failed).
    FINISHED = "finished"


class Delivery(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    BLOCKED = "blocked"
    FAILED = "failed"


class Outcome(StrEnum):
    SENT = "sent"
    #: The member blocked the bot (403): marked unreachable, never retried.
    BLOCKED = "blocked"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the bot's send function reports for one message."""

    kind: Outcome
    error: str = ""

    @classmethod
    def sent(cls) -> SendOutcome:
        return cls(Outcome.SENT)

    @classmethod
    def blocked(cls) -> SendOutcome:
        return cls(Outcome.BLOCKED)

    @classmethod
    def failed(cls, error: str) -> SendOutcome:
        return cls(Outcome.FAILED, error=error)


@dataclass(frozen=True, slots=True)
class Button:
    text: str
    url: str


@dataclass(frozen=True, slots=True)
class BroadcastView:
    id: int
    created_by: str
    audience: str
    text: str
    button: Button | None
    status: BroadcastStatus
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Broadcast) -> BroadcastView:
        button = (
            Button(row.button_text, row.button_url)
            if row.button_text is not None and row.button_url is not None
            else None
        )
        return cls(
            id=row.id,
            created_by=row.created_by,
            audience=row.audience,
            text=row.text,
            button=button,
            status=BroadcastStatus(row.status),
            created_at=row.created_at,
            finished_at=row.finished_at,
        )


@dataclass(frozen=True, slots=True)
class BroadcastReport:
    """Where a broadcast stands; `pending` counts deliveries not yet finished either way."""

    broadcast_id: int
    created_by: str
    status: BroadcastStatus
    total: int
    pending: int
    sent: int
    blocked: int
    failed: int

    @property
    def done(self) -> int:
        return self.sent + self.blocked + self.failed


#: (telegram_id, locale, text, button) → what happened; the bot wraps its API call.
SendFn = Callable[[int, str | None, str, Button | None], Awaitable[SendOutcome]]
ProgressFn = Callable[[BroadcastReport], Awaitable[None]]


class Pace(Protocol):
    """What paces broadcast sends: `acquire` returns when the next send may go."""

    async def acquire(self) -> None: ...


class TokenBucket:
    """At most `rate` sends a second, shared by every worker of a process.

    A bucket of one token refilled every 1/rate seconds, measured from the moment the
    last token was actually handed out, so a late wake-up never lets two sends come
    closer than the interval and no one-second window ever holds more than `rate`.
    A 429 pauses it for everyone, since Telegram's flood control is per bot.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 1.0 / rate
        self._last = float("-inf")
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            wait = self._last + self._interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last = loop.time()


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: int
    member_id: int
    telegram_id: int
    locale: str | None


def _validated(
    ladder: Ladder, audience: str, text: str, button: Button | None
) -> tuple[str, Button | None]:
    if audience != AUDIENCE_ALL:
        ladder.tier(audience)
    body = text.strip()
    if not body:
        raise ShopError(ErrorCode.INVALID_INPUT, field="text", reason="empty")
    if len(body) > TEXT_MAX:
        raise ShopError(ErrorCode.INVALID_INPUT, field="text", reason="too_long")
    if button is not None:
        label, url = button.text.strip(), button.url.strip()
        if not label or len(label) > BUTTON_TEXT_MAX:
            raise ShopError(ErrorCode.INVALID_INPUT, field="button_text", reason="length")
        if not url.startswith(URL_SCHEMES) or len(url) > URL_MAX:
            raise ShopError(ErrorCode.INVALID_INPUT, field="button_url", reason="not_a_link")
        button = Button(label, url)
    return body, button


class Broadcasts:
    def __init__(
        self,
        db: Database,
        ladder: Ladder,
        clock: Clock,
        *,
        rate: float = TELEGRAM_RATE,
        concurrency: int = 5,
        progress_every: int = 25,
    ) -> None:
        if concurrency < 1 or progress_every < 1:
            raise ValueError("concurrency and progress_every must be positive")
        self._db = db
        self._ladder = ladder
        self._clock = clock
        self._bucket: Pace = TokenBucket(rate)
        self._concurrency = concurrency
        self._progress_every = progress_every

    def pace_with(self, pace: Pace) -> None:
        """Pace sends with `pace` instead of this process's own bucket.

        BROADCAST_RATE is the shop's rate: with several workers the bot hands one pace
        they share (`bot.flood.SharedPace`, in Redis), or each would send at the full
        rate and the shop at N times it.
        """
        self._bucket = pace

    # --- creating -----------------------------------------------------------------------

    async def create_in(
        self,
        session: AsyncSession,
        created_by: str,
        audience: str,
        text: str,
        button: Button | None = None,
    ) -> tuple[BroadcastView, int]:
        """Create a broadcast and snapshot its audience in the caller's transaction.

        Members without a Telegram account or already known to have blocked the bot are
        left out. Returns the broadcast and how many members it will go to.
        """
        body, button = _validated(self._ladder, audience, text, button)
        row = Broadcast(
            created_by=created_by,
            audience=audience,
            text=body,
            button_text=button.text if button else None,
            button_url=button.url if button else None,
            status=BroadcastStatus.RUNNING.value,
            created_at=self._clock.now(),
        )
        session.add(row)
        await session.flush()
        members = select(
            literal(row.id, Integer),
            Member.id,
            literal(Delivery.PENDING.value),
            literal(0, Integer),
        ).where(Member.telegram_id.is_not(None), Member.unreachable.is_(False))
        if audience != AUDIENCE_ALL:
            members = members.where(Member.tier_key == audience)
        await session.execute(
            insert(BroadcastDelivery).from_select(
                ["broadcast_id", "member_id", "status", "attempts"], members
            )
        )
        recipients = await session.scalar(
            select(func.count()).where(BroadcastDelivery.broadcast_id == row.id)
        )
        return BroadcastView.of(row), recipients or 0

    async def create(
        self, created_by: str, audience: str, text: str, button: Button | None = None
    ) -> tuple[BroadcastView, int]:
        async with self._db.transaction() as session:
            return await self.create_in(session, created_by, audience, text, button)

    # --- reading ------------------------------------------------------------------------

    async def get(self, broadcast_id: int) -> BroadcastView:
        async with self._db.read() as session:
            row = await session.get(Broadcast, broadcast_id)
            if row is None:
                raise ShopError(ErrorCode.INVALID_INPUT, field="broadcast", reason="not_found")
            return BroadcastView.of(row)

    async def report(self, broadcast_id: int) -> BroadcastReport:
        async with self._db.read() as session:
            row = await session.get(Broadcast, broadcast_id)
            if row is None:
                raise ShopError(ErrorCode.INVALID_INPUT, field="broadcast", reason="not_found")
            rows = await session.execute(
                select(BroadcastDelivery.status, func.count())
                .where(BroadcastDelivery.broadcast_id == broadcast_id)
                .group_by(BroadcastDelivery.status)
            )
            counts: dict[str, int] = dict(rows.all())
        return BroadcastReport(
            broadcast_id=broadcast_id,
            created_by=row.created_by,
            status=BroadcastStatus(row.status),
            total=sum(counts.values()),
            pending=counts.get(Delivery.PENDING, 0) + counts.get(Delivery.SENDING, 0),
            sent=counts.get(Delivery.SENT, 0),
            blocked=counts.get(Delivery.BLOCKED, 0),
            failed=counts.get(Delivery.FAILED, 0),
        )

    async def unfinished(self) -> list[int]:
        async with self._db.read() as session:
            return list(
                await session.scalars(
                    select(Broadcast.id)
                    .where(Broadcast.status == BroadcastStatus.RUNNING.value)
                    .order_by(Broadcast.id)
                )
            )

    # --- sending ------------------------------------------------------------------------

    async def run(
        self,
        broadcast_id: int,
        send: SendFn,
        *,
        progress: ProgressFn | None = None,
        stop: asyncio.Event | None = None,
    ) -> BroadcastReport:
        """Send every pending delivery, paced by the shared bucket; returns the counts.

        Safe to call again (or from another process) for the same broadcast: only
        `pending` rows are claimed, and the last worker to find none finishes it. Once
        `stop` is set (the bot is shutting down) no further delivery is claimed and the
        broadcast stays running, for the next start to resume.
        """
        broadcast = await self.get(broadcast_id)
        await self._settle_stale(broadcast_id)
        done = 0

        def stopping() -> bool:
            return stop is not None and stop.is_set()

        async def worker() -> None:
            nonlocal done
            while not stopping() and (claim := await self._claim(broadcast_id)) is not None:
                await self._deliver(broadcast, claim, send)
                done += 1
                if progress is not None and done % self._progress_every == 0:
                    await progress(await self.report(broadcast_id))

        async with asyncio.TaskGroup() as group:
            for _ in range(self._concurrency):
                group.create_task(worker())
        if stopping():
            return await self.report(broadcast_id)
        await self._finish(broadcast_id)
        report = await self.report(broadcast_id)
        if progress is not None:
            await progress(report)
        return report

    async def resume_unfinished(
        self,
        send: SendFn,
        *,
        progress: ProgressFn | None = None,
        stop: asyncio.Event | None = None,
    ) -> list[BroadcastReport]:
        """At start-up: settle sends cut off by the stop, then finish every running broadcast.

        Call it before any `run` of this process starts, since it treats every `sending`
        row as interrupted.
        """
        reports = []
        for broadcast_id in await self.unfinished():
            async with self._db.transaction() as session:
                await session.execute(
                    update(BroadcastDelivery)
                    .where(
                        BroadcastDelivery.broadcast_id == broadcast_id,
                        BroadcastDelivery.status == Delivery.SENDING.value,
                    )
                    .values(status=Delivery.FAILED.value, error=INTERRUPTED)
                )
            reports.append(await self.run(broadcast_id, send, progress=progress, stop=stop))
        return reports

    async def _settle_stale(self, broadcast_id: int) -> None:
        """Claims a dead worker left (see the module docstring): failed, `interrupted`."""
        async with self._db.transaction() as session:
            await session.execute(
                update(BroadcastDelivery)
                .where(
                    BroadcastDelivery.broadcast_id == broadcast_id,
                    BroadcastDelivery.status == Delivery.SENDING.value,
                    or_(
                        BroadcastDelivery.claimed_at.is_(None),
                        BroadcastDelivery.claimed_at <= self._clock.now() - STALE_CLAIM,
                    ),
                )
                .values(status=Delivery.FAILED.value, error=INTERRUPTED)
            )

    async def _claim(self, broadcast_id: int) -> _Claim | None:
        """Take the next pending delivery for this worker, in a transaction of its own."""
        next_one = (
            select(BroadcastDelivery.id)
            .where(
                BroadcastDelivery.broadcast_id == broadcast_id,
                BroadcastDelivery.status == Delivery.PENDING.value,
            )
            .order_by(BroadcastDelivery.id)
            .limit(1)
        )
        if self._db.is_postgres:
            next_one = next_one.with_for_update(skip_locked=True)
        async with self._db.transaction() as session:
            claimed = (
                await session.execute(
                    update(BroadcastDelivery)
                    .where(
                        BroadcastDelivery.id == next_one.scalar_subquery(),
                        BroadcastDelivery.status == Delivery.PENDING.value,
                    )
                    .values(status=Delivery.SENDING.value, claimed_at=self._clock.now())
                    .returning(BroadcastDelivery.id, BroadcastDelivery.member_id)
                )
            ).first()
            if claimed is None:
                return None
            delivery_id, member_id = claimed
            telegram_id, locale = (
                await session.execute(
                    select(Member.telegram_id, Member.locale).where(Member.id == member_id)
                )
            ).one()
        # The snapshot took only members with a Telegram account.
        return _Claim(delivery_id, member_id, cast(int, telegram_id), locale)

    async def _deliver(self, broadcast: BroadcastView, claim: _Claim, send: SendFn) -> None:
        # Right before the send, so the pace holds at the API, not at the claim. A 429 is
        # waited out inside `send` (the bot's one FloodControl), never retried here.
        try:
            await self._bucket.acquire()
        except asyncio.CancelledError:
            # Stopped before the send: nothing can have reached Telegram, so the member
            # goes back to the queue instead of being lost.
            await self._unclaim(claim.delivery_id)
            raise
        try:
            outcome = await send(claim.telegram_id, claim.locale, broadcast.text, broadcast.button)
        except Exception as exc:
            log.exception("broadcast %s: send to member %s", broadcast.id, claim.member_id)
            outcome = SendOutcome.failed(type(exc).__name__)
        status = {
            Outcome.SENT: Delivery.SENT,
            Outcome.BLOCKED: Delivery.BLOCKED,
        }.get(outcome.kind, Delivery.FAILED)
        error = outcome.error or None
        async with self._db.transaction() as session:
            await session.execute(
                update(BroadcastDelivery)
                .where(BroadcastDelivery.id == claim.delivery_id)
                .values(
                    status=status.value,
                    attempts=BroadcastDelivery.attempts + 1,
                    error=error[:64] if error else None,
                    sent_at=self._clock.now() if status is Delivery.SENT else None,
                )
            )
            if status is Delivery.BLOCKED:
                await session.execute(
                    update(Member).where(Member.id == claim.member_id).values(unreachable=True)
                )

    async def _unclaim(self, delivery_id: int) -> None:
        async with self._db.transaction() as session:
            await session.execute(
                update(BroadcastDelivery)
                .where(
                    BroadcastDelivery.id == delivery_id,
                    BroadcastDelivery.status == Delivery.SENDING.value,
                )
                .values(status=Delivery.PENDING.value)
            )

    async def _finish(self, broadcast_id: int) -> None:
        """Mark the broadcast finished once no delivery is pending or in flight."""
        open_deliveries = exists().where(
            BroadcastDelivery.broadcast_id == broadcast_id,
            BroadcastDelivery.status.in_([Delivery.PENDING.value, Delivery.SENDING.value]),
        )
        async with self._db.transaction() as session:
            await session.execute(
                update(Broadcast)
                .where(
                    Broadcast.id == broadcast_id,
                    Broadcast.status == BroadcastStatus.RUNNING.value,
                    ~open_deliveries,
                )
                .values(status=BroadcastStatus.FINISHED.value, finished_at=self._clock.now())
            )

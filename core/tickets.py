"""Support tickets (工单): tier deadlines, a queue, replies routed by stored ids, SLA alerts.

A ticket's first-response deadline comes from the member's tier (or the shorter urgent
window for categories like a stolen account). Staff answer from a staff chat; a reply
there finds its ticket through the staff-chat message id stored here, never by parsing
text. While the shop waits for the member (a question, or a 403 from Telegram) the
deadline clock stands still, and it moves on by exactly the time it was paused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import activity
from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.members import load_member
from core.models import Member, Order, Ticket, TicketMessage
from core.uow import Database, run_on

#: Called with a member id once an activity of theirs is committed (e.g. to re-check tiers).
ActivityHook = Callable[[int], Awaitable[object]]


class TicketStatus(StrEnum):
    OPEN = "open"
    #: Waiting for the member (a question, or they cannot be reached): the clock is paused.
    WAITING = "waiting"
    RESOLVED = "resolved"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class TicketView:
    id: int
    member_id: int
    #: Where the bot sends staff replies.
    member_telegram_id: int | None
    category: str
    order_id: int | None
    #: The tier the deadline was taken from (the member's tier when the ticket was opened).
    tier_key: str
    status: TicketStatus
    first_response_due: datetime
    first_response_at: datetime | None
    paused_at: datetime | None
    assigned_staff_id: int | None
    reopened: int
    warned_at: datetime | None
    breached_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    csat: int | None
    created_at: datetime

    @classmethod
    def of(cls, row: Ticket, member_telegram_id: int | None) -> TicketView:
        return cls(
            id=row.id,
            member_id=row.member_id,
            member_telegram_id=member_telegram_id,
            category=row.category,
            order_id=row.order_id,
            tier_key=row.tier_key,
            status=TicketStatus(row.status),
            first_response_due=row.first_response_due,
            first_response_at=row.first_response_at,
            paused_at=row.paused_at,
            assigned_staff_id=row.assigned_staff_id,
            reopened=row.reopened,
            warned_at=row.warned_at,
            breached_at=row.breached_at,
            resolved_at=row.resolved_at,
            closed_at=row.closed_at,
            csat=row.csat,
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class TicketMessageView:
    id: int
    ticket_id: int
    author: str  # member, staff
    staff_telegram_id: int | None
    text: str
    staff_chat_message_id: int | None
    delivered: bool | None
    created_at: datetime

    @classmethod
    def of(cls, row: TicketMessage) -> TicketMessageView:
        return cls(
            id=row.id,
            ticket_id=row.ticket_id,
            author=row.author,
            staff_telegram_id=row.staff_telegram_id,
            text=row.text,
            staff_chat_message_id=row.staff_chat_message_id,
            delivered=row.delivered,
            created_at=row.created_at,
        )


@dataclass(frozen=True, slots=True)
class SupportMetrics:
    """Support measures over the tickets opened since `since`; None where nothing to average."""

    since: datetime
    opened: int
    answered: int
    mean_frt_seconds: float | None
    #: Of the tickets whose deadline is decided (answered, or unanswered and past due).
    sla_met_percent: float | None
    rated: int
    mean_csat: float | None
    resolved: int
    #: Resolved with exactly one staff message and never reopened (first-contact resolution).
    fcr_percent: float | None


def _viewing() -> Select[Ticket, int | None]:
    """Tickets together with their member's Telegram id, which every caller needs to reply."""
    return select(Ticket, Member.telegram_id).join(Member, Member.id == Ticket.member_id)


def _owned(
    row: Row[Ticket, int | None] | None, ticket_id: int, member_id: int | None
) -> tuple[Ticket, int | None]:
    """A `_viewing` row as (ticket, member's Telegram id); TICKET_NOT_FOUND when there is
    none or, with `member_id`, when that member does not own it."""
    if row is None or (member_id is not None and row.Ticket.member_id != member_id):
        raise ShopError(ErrorCode.TICKET_NOT_FOUND, ticket=ticket_id)
    ticket, telegram_id = row
    return ticket, telegram_id


def _settle_pause(ticket: Ticket, now: datetime) -> None:
    """Credit the paused time so far to an unanswered deadline; the clock stays paused."""
    if ticket.paused_at is None:
        return
    if ticket.first_response_at is None:
        ticket.first_response_due += now - ticket.paused_at
    ticket.paused_at = now


def _resume(ticket: Ticket, now: datetime) -> None:
    _settle_pause(ticket, now)
    ticket.paused_at = None


def _pause(ticket: Ticket, now: datetime) -> None:
    ticket.status = TicketStatus.WAITING
    if ticket.paused_at is None:
        ticket.paused_at = now


def _percent(part: int, whole: int) -> float | None:
    return 100 * part / whole if whole else None


class Tickets:
    def __init__(
        self,
        db: Database,
        ladder: Ladder,
        clock: Clock,
        on_activity: ActivityHook | None = None,
    ) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock
        self._on_activity = on_activity

    def window(self, tier_key: str, category: str) -> timedelta:
        """The first-response window: the tier's SLA, or the urgent one when that is sooner."""
        minutes = self._ladder.tier(tier_key).capabilities.sla_minutes
        support = self._ladder.support
        if category in support.urgent_categories:
            minutes = min(minutes, support.urgent_minutes)
        return timedelta(minutes=minutes)

    # --- the member's side ---------------------------------------------------------------

    async def open(
        self, member_id: int, category: str, text: str, order_id: int | None = None
    ) -> TicketView:
        """Open a ticket with its first message; the deadline runs from now."""
        if category not in self._ladder.support.categories:
            raise ShopError(ErrorCode.INVALID_INPUT, category=category)
        now = self._clock.now()
        async with self._db.transaction() as session:
            member = await load_member(session, member_id)
            if order_id is not None:
                owner = await session.scalar(select(Order.member_id).where(Order.id == order_id))
                if owner != member_id:
                    raise ShopError(ErrorCode.ORDER_NOT_FOUND, order=order_id)
            ticket = Ticket(
                member_id=member_id,
                category=category,
                order_id=order_id,
                tier_key=member.tier_key,
                status=TicketStatus.OPEN,
                first_response_due=now + self.window(member.tier_key, category),
                reopened=0,
                created_at=now,
            )
            session.add(ticket)
            await session.flush()
            session.add(
                TicketMessage(ticket_id=ticket.id, author="member", text=text, created_at=now)
            )
            recorded = await run_on(
                session, activity.record_on, member_id, "ticket", f"ticket:{ticket.id}", at=now
            )
            view = TicketView.of(ticket, member.telegram_id)
        if recorded and self._on_activity is not None:
            await self._on_activity(member_id)
        return view

    async def member_message(self, ticket_id: int, member_id: int, text: str) -> TicketMessageView:
        """A message from the ticket's owner: reopens a resolved ticket, resumes a waiting one."""
        now = self._clock.now()
        async with self._db.transaction() as session:
            ticket, _ = await self._locked(session, ticket_id, member_id)
            if ticket.status == TicketStatus.CLOSED:
                raise ShopError(ErrorCode.TICKET_CLOSED, ticket=ticket_id)
            if ticket.status == TicketStatus.RESOLVED:
                ticket.reopened += 1
                ticket.resolved_at = None
            _resume(ticket, now)
            ticket.status = TicketStatus.OPEN
            return await self._add_message(session, ticket, "member", text, now)

    async def close(self, ticket_id: int, *, member_id: int | None = None) -> TicketView:
        """Close a ticket (a member only their own); closing twice changes nothing."""
        now = self._clock.now()
        async with self._db.transaction() as session:
            ticket, telegram_id = await self._locked(session, ticket_id, member_id)
            if ticket.status != TicketStatus.CLOSED:
                _resume(ticket, now)
                ticket.status = TicketStatus.CLOSED
                ticket.closed_at = now
            return TicketView.of(ticket, telegram_id)

    async def rate(self, ticket_id: int, member_id: int, score: int) -> TicketView:
        """The owner's CSAT score (1-5) for a resolved or closed ticket, given once."""
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise ShopError(ErrorCode.INVALID_RATING, score=score)
        async with self._db.transaction() as session:
            ticket, telegram_id = await self._locked(session, ticket_id, member_id)
            if ticket.status not in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
                raise ShopError(ErrorCode.TICKET_NOT_RESOLVED, ticket=ticket_id)
            if ticket.csat is not None:
                raise ShopError(ErrorCode.ALREADY_RATED, ticket=ticket_id)
            ticket.csat = score
            return TicketView.of(ticket, telegram_id)

    # --- the staff's side ----------------------------------------------------------------

    async def staff_reply(
        self, ticket_id: int, staff_telegram_id: int, text: str
    ) -> TicketMessageView:
        """A staff answer; the first one is the ticket's first response (FRT)."""
        now = self._clock.now()
        async with self._db.transaction() as session:
            ticket, _ = await self._locked(session, ticket_id)
            if ticket.status == TicketStatus.CLOSED:
                raise ShopError(ErrorCode.TICKET_CLOSED, ticket=ticket_id)
            if ticket.first_response_at is None:
                # Paused time before this answer does not count against the deadline.
                _settle_pause(ticket, now)
                ticket.first_response_at = now
            if ticket.assigned_staff_id is None:
                ticket.assigned_staff_id = staff_telegram_id
            return await self._add_message(session, ticket, "staff", text, now, staff_telegram_id)

    async def wait_for_member(self, ticket_id: int) -> TicketView:
        """Staff asked the member something: the ticket waits and its clock stops."""
        now = self._clock.now()
        async with self._db.transaction() as session:
            ticket, telegram_id = await self._locked(session, ticket_id)
            if ticket.status == TicketStatus.CLOSED:
                raise ShopError(ErrorCode.TICKET_CLOSED, ticket=ticket_id)
            ticket.resolved_at = None
            _pause(ticket, now)
            return TicketView.of(ticket, telegram_id)

    async def member_unreachable(self, ticket_id: int) -> TicketView:
        """A relay to the member failed (403): an open ticket waits with its clock stopped.

        A resolved or closed ticket has no clock running, so it is left as it is.
        """
        now = self._clock.now()
        async with self._db.transaction() as session:
            ticket, telegram_id = await self._locked(session, ticket_id)
            if ticket.status in (TicketStatus.OPEN, TicketStatus.WAITING):
                _pause(ticket, now)
            return TicketView.of(ticket, telegram_id)

    async def resolve(self, ticket_id: int, staff_telegram_id: int) -> TicketView:
        """Staff mark the ticket resolved; the member may still reopen it by writing."""
        now = self._clock.now()
        async with self._db.transaction() as session:
            ticket, telegram_id = await self._locked(session, ticket_id)
            if ticket.status == TicketStatus.CLOSED:
                raise ShopError(ErrorCode.TICKET_CLOSED, ticket=ticket_id)
            if ticket.status != TicketStatus.RESOLVED:
                _resume(ticket, now)
                ticket.status = TicketStatus.RESOLVED
                ticket.resolved_at = now
                if ticket.assigned_staff_id is None:
                    ticket.assigned_staff_id = staff_telegram_id
            return TicketView.of(ticket, telegram_id)

    # --- routing and delivery ------------------------------------------------------------

    async def attach_staff_message(self, message_id: int, staff_chat_message_id: int) -> None:
        """Remember the staff-chat copy of a ticket message, so a reply to it routes back."""
        await self._set_message(message_id, staff_chat_message_id=staff_chat_message_id)

    async def mark_delivered(self, message_id: int, delivered: bool) -> None:
        """Record whether a relay arrived, so nothing is silently lost."""
        await self._set_message(message_id, delivered=delivered)

    async def by_staff_message(self, staff_chat_message_id: int) -> TicketView | None:
        """The ticket a staff-chat message belongs to (what a staff reply-to points at)."""
        query = (
            _viewing()
            .join(TicketMessage, TicketMessage.ticket_id == Ticket.id)
            .where(TicketMessage.staff_chat_message_id == staff_chat_message_id)
            .order_by(TicketMessage.id.desc())
            .limit(1)
        )
        async with self._db.read() as session:
            row = (await session.execute(query)).first()
        if row is None:
            return None
        ticket, telegram_id = row
        return TicketView.of(ticket, telegram_id)

    # --- reading ---------------------------------------------------------------------------

    async def get(self, ticket_id: int, member_id: int | None = None) -> TicketView:
        """One ticket; with `member_id`, only if that member owns it."""
        async with self._db.read() as session:
            row = (await session.execute(_viewing().where(Ticket.id == ticket_id))).first()
        ticket, telegram_id = _owned(row, ticket_id, member_id)
        return TicketView.of(ticket, telegram_id)

    async def queue(self, limit: int = 50) -> list[TicketView]:
        """Open tickets for staff: unanswered first, each group by deadline."""
        query = (
            _viewing()
            .where(Ticket.status == TicketStatus.OPEN)
            .order_by(Ticket.first_response_at.is_not(None), Ticket.first_response_due, Ticket.id)
            .limit(limit)
        )
        return await self._views(query)

    async def for_member(self, member_id: int) -> list[TicketView]:
        """A member's tickets, newest first."""
        return await self._views(
            _viewing().where(Ticket.member_id == member_id).order_by(Ticket.id.desc())
        )

    async def last_authors(self, ticket_ids: Sequence[int]) -> dict[int, str]:
        """Who wrote last on each ticket ("member" or "staff"): whose turn it is to answer."""
        if not ticket_ids:
            return {}
        latest = (
            select(func.max(TicketMessage.id))
            .where(TicketMessage.ticket_id.in_(ticket_ids))
            .group_by(TicketMessage.ticket_id)
        )
        query = select(TicketMessage.ticket_id, TicketMessage.author).where(
            TicketMessage.id.in_(latest)
        )
        async with self._db.read() as session:
            return dict((await session.execute(query)).all())

    async def messages(self, ticket_id: int) -> list[TicketMessageView]:
        query = (
            select(TicketMessage)
            .where(TicketMessage.ticket_id == ticket_id)
            .order_by(TicketMessage.id)
        )
        async with self._db.read() as session:
            return [TicketMessageView.of(row) for row in await session.scalars(query)]

    # --- SLA alerts for a scheduled job ------------------------------------------------------

    async def due_warnings(self) -> list[TicketView]:
        """Unanswered running tickets past 80% of their window, each returned once ever.

        The window is re-derived from the ticket's tier and category, because the stored
        deadline has moved by every pause: 80% has run when what is left is at most 20% of
        the window. Marking is a guarded UPDATE, so concurrent jobs share out the tickets.
        """
        now = self._clock.now()
        running = (
            Ticket.status == TicketStatus.OPEN,
            Ticket.first_response_at.is_(None),
            Ticket.paused_at.is_(None),
            Ticket.warned_at.is_(None),
            Ticket.breached_at.is_(None),
        )
        longest = max(tier.capabilities.sla_minutes for tier in self._ladder.tiers)
        horizon = now + self._left_at_warning(timedelta(minutes=longest))
        async with self._db.transaction() as session:
            candidates = await session.execute(
                select(Ticket.id, Ticket.tier_key, Ticket.category, Ticket.first_response_due)
                .where(*running, Ticket.first_response_due <= horizon)
                .order_by(Ticket.first_response_due, Ticket.id)
            )
            due = [
                ticket_id
                for ticket_id, tier_key, category, deadline in candidates
                if deadline - now <= self._left_at_warning(self.window(tier_key, category))
            ]
            if not due:
                return []
            marked = await session.scalars(
                update(Ticket)
                .where(Ticket.id.in_(due), *running)
                .values(warned_at=now)
                .returning(Ticket.id)
                .execution_options(synchronize_session=False)
            )
            return await self._marked(session, list(marked))

    async def breaches(self) -> list[TicketView]:
        """Unanswered running tickets past their deadline, each returned once ever."""
        now = self._clock.now()
        async with self._db.transaction() as session:
            marked = await session.scalars(
                update(Ticket)
                .where(
                    Ticket.status == TicketStatus.OPEN,
                    Ticket.first_response_at.is_(None),
                    Ticket.paused_at.is_(None),
                    Ticket.breached_at.is_(None),
                    Ticket.first_response_due < now,
                )
                .values(breached_at=now)
                .returning(Ticket.id)
                .execution_options(synchronize_session=False)
            )
            return await self._marked(session, list(marked))

    async def metrics(self, since: datetime) -> SupportMetrics:
        """FRT, SLA, CSAT and FCR over the tickets opened since `since`."""
        now = self._clock.now()
        staff_messages = (
            select(func.count(TicketMessage.id))
            .where(TicketMessage.ticket_id == Ticket.id, TicketMessage.author == "staff")
            .correlate(Ticket)
            .scalar_subquery()
            .label("staff_messages")
        )
        query = select(
            Ticket.created_at,
            Ticket.first_response_due,
            Ticket.first_response_at,
            Ticket.paused_at,
            Ticket.resolved_at,
            Ticket.reopened,
            Ticket.csat,
            staff_messages,
        ).where(Ticket.created_at >= since)
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
        answered = [r for r in rows if r.first_response_at is not None]
        frt = [(r.first_response_at - r.created_at).total_seconds() for r in answered]
        met = sum(1 for r in answered if r.first_response_at <= r.first_response_due)
        missed_unanswered = sum(
            1
            for r in rows
            if r.first_response_at is None and r.paused_at is None and r.first_response_due < now
        )
        scores = [r.csat for r in rows if r.csat is not None]
        resolved = [r for r in rows if r.resolved_at is not None]
        first_contact = sum(1 for r in resolved if r.staff_messages == 1 and r.reopened == 0)
        return SupportMetrics(
            since=since,
            opened=len(rows),
            answered=len(answered),
            mean_frt_seconds=sum(frt) / len(frt) if frt else None,
            sla_met_percent=_percent(met, len(answered) + missed_unanswered),
            rated=len(scores),
            mean_csat=sum(scores) / len(scores) if scores else None,
            resolved=len(resolved),
            fcr_percent=_percent(first_contact, len(resolved)),
        )

    # --- helpers -----------------------------------------------------------------------------

    def _left_at_warning(self, window: timedelta) -> timedelta:
        return window * (100 - self._ladder.support.warn_percent) / 100

    @staticmethod
    async def _locked(
        session: AsyncSession, ticket_id: int, member_id: int | None = None
    ) -> tuple[Ticket, int | None]:
        """The ticket row, locked against concurrent changes (PostgreSQL; SQLite's
        `BEGIN IMMEDIATE` already serialises writers); TICKET_NOT_FOUND for a non-owner."""
        row = (
            await session.execute(
                _viewing().where(Ticket.id == ticket_id).with_for_update(of=Ticket)
            )
        ).first()
        return _owned(row, ticket_id, member_id)

    @staticmethod
    async def _add_message(
        session: AsyncSession,
        ticket: Ticket,
        author: str,
        text: str,
        now: datetime,
        staff_telegram_id: int | None = None,
    ) -> TicketMessageView:
        message = TicketMessage(
            ticket_id=ticket.id,
            author=author,
            staff_telegram_id=staff_telegram_id,
            text=text,
            created_at=now,
        )
        session.add(message)
        await session.flush()
        return TicketMessageView.of(message)

    async def _set_message(self, message_id: int, **values: Any) -> None:
        async with self._db.transaction() as session:
            found = await session.scalar(
                update(TicketMessage)
                .where(TicketMessage.id == message_id)
                .values(**values)
                .returning(TicketMessage.id)
            )
            if found is None:
                raise ShopError(ErrorCode.TICKET_NOT_FOUND, message=message_id)

    async def _views(self, query: Select[Ticket, int | None]) -> list[TicketView]:
        async with self._db.read() as session:
            rows = await session.execute(query)
            return [TicketView.of(ticket, telegram_id) for ticket, telegram_id in rows]

    @staticmethod
    async def _marked(session: AsyncSession, ids: Sequence[int]) -> list[TicketView]:
        """Views of the tickets a job just marked, soonest deadline first."""
        if not ids:
            return []
        query = _viewing().where(Ticket.id.in_(ids)).order_by(Ticket.first_response_due, Ticket.id)
        rows = await session.execute(query)
        return [TicketView.of(ticket, telegram_id) for ticket, telegram_id in rows]

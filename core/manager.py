"""The VIP manager channel (专属客户经理): a member's messages relayed to their manager and back.

Only tiers whose capabilities include a manager may use it. Each relayed message is a
row, and the id of its copy in the manager's chat is stored, so a manager's reply-to
finds the member by that id; the bot signs replies with the manager's display name kept
here, so members see the shop and a name, never a staff member's account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.members import load_member
from core.models import ManagerAssignment, ManagerMessage, Member, Staff
from core.uow import Database


@dataclass(frozen=True, slots=True)
class StaffView:
    id: int
    telegram_id: int
    display_name: str
    active: bool

    @classmethod
    def of(cls, row: Staff) -> StaffView:
        return cls(
            id=row.id,
            telegram_id=row.telegram_id,
            display_name=row.display_name,
            active=row.active,
        )


@dataclass(frozen=True, slots=True)
class ManagerAccess:
    allowed: bool
    #: The lowest tier with a manager (what to tell a member who is refused).
    required_tier: str | None
    manager: StaffView | None


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Where to relay a member's message: a manager's chat, or (None) the staff chat."""

    message_id: int
    staff_telegram_id: int | None
    manager_name: str | None


@dataclass(frozen=True, slots=True)
class ThreadRef:
    member_id: int
    member_telegram_id: int | None


@dataclass(frozen=True, slots=True)
class ManagerMessageView:
    id: int
    member_id: int
    direction: str  # in (member → manager), out
    text: str
    staff_telegram_id: int | None
    #: The signature: the manager's display name as kept in the database.
    manager_name: str | None
    relay_message_id: int | None
    delivered: bool | None
    created_at: datetime

    @classmethod
    def of(cls, row: ManagerMessage, staff: Staff | None) -> ManagerMessageView:
        return cls(
            id=row.id,
            member_id=row.member_id,
            direction=row.direction,
            text=row.text,
            staff_telegram_id=staff.telegram_id if staff else None,
            manager_name=staff.display_name if staff else None,
            relay_message_id=row.relay_message_id,
            delivered=row.delivered,
            created_at=row.created_at,
        )


def _dialect_insert(session: AsyncSession, model: type[Any]) -> Any:
    """`INSERT` for whichever database the session runs on (both have ON CONFLICT)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model)


async def _upsert_staff(session: AsyncSession, telegram_id: int, display_name: str) -> StaffView:
    insert = _dialect_insert(session, Staff).values(
        telegram_id=telegram_id, display_name=display_name, active=True
    )
    row = await session.execute(
        insert.on_conflict_do_update(
            index_elements=[Staff.telegram_id],
            set_={"display_name": insert.excluded.display_name, "active": True},
        ).returning(Staff.id, Staff.telegram_id, Staff.display_name, Staff.active)
    )
    staff_id, staff_telegram_id, name, active = row.one()
    return StaffView(id=staff_id, telegram_id=staff_telegram_id, display_name=name, active=active)


async def _staff(session: AsyncSession, telegram_id: int) -> Staff:
    """An active staff member, or STAFF_NOT_FOUND."""
    staff = await session.scalar(
        select(Staff).where(Staff.telegram_id == telegram_id, Staff.active.is_(True))
    )
    if staff is None:
        raise ShopError(ErrorCode.STAFF_NOT_FOUND, staff=telegram_id)
    return staff


async def _manager_of(session: AsyncSession, member_id: int) -> Staff | None:
    """The member's assigned manager while they are active staff."""
    return await session.scalar(
        select(Staff)
        .join(ManagerAssignment, ManagerAssignment.staff_id == Staff.id)
        .where(ManagerAssignment.member_id == member_id, Staff.active.is_(True))
    )


class ManagerRelay:
    def __init__(self, db: Database, ladder: Ladder, clock: Clock) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock

    def _required_tier(self) -> str | None:
        lowest = self._ladder.lowest_with_manager()
        return lowest.key if lowest else None

    def _allowed(self, tier_key: str) -> bool:
        return self._ladder.tier(tier_key).capabilities.manager

    async def add_staff(self, telegram_id: int, display_name: str) -> StaffView:
        """Add a staff member, or rename and reactivate one already there."""
        async with self._db.transaction() as session:
            return await _upsert_staff(session, telegram_id, display_name)

    async def assign(
        self, member_id: int, staff_telegram_id: int, *, display_name: str | None = None
    ) -> StaffView:
        """Give a member with the manager capability their manager (replacing any before).

        With `display_name` the staff member is added (or renamed) on the way.
        """
        async with self._db.transaction() as session:
            member = await load_member(session, member_id)
            if not self._allowed(member.tier_key):
                raise ShopError(
                    ErrorCode.NOT_ALLOWED_FOR_TIER,
                    capability="manager",
                    required=self._required_tier(),
                )
            if display_name is not None:
                staff = await _upsert_staff(session, staff_telegram_id, display_name)
            else:
                staff = StaffView.of(await _staff(session, staff_telegram_id))
            now = self._clock.now()
            insert = _dialect_insert(session, ManagerAssignment).values(
                member_id=member_id, staff_id=staff.id, assigned_at=now
            )
            await session.execute(
                insert.on_conflict_do_update(
                    index_elements=[ManagerAssignment.member_id],
                    set_={"staff_id": staff.id, "assigned_at": now},
                )
            )
            return staff

    async def access(self, member_id: int) -> ManagerAccess:
        async with self._db.read() as session:
            member = await load_member(session, member_id)
            manager = await _manager_of(session, member_id)
        return ManagerAccess(
            allowed=self._allowed(member.tier_key),
            required_tier=self._required_tier(),
            manager=StaffView.of(manager) if manager else None,
        )

    async def from_member(self, member_id: int, text: str) -> RelayTarget:
        """Record a member's message to their manager and say where to relay it.

        Without an assigned manager the message goes to the staff chat, so it is never lost.
        """
        async with self._db.transaction() as session:
            member = await load_member(session, member_id)
            if not self._allowed(member.tier_key):
                raise ShopError(ErrorCode.NO_MANAGER_ACCESS, required=self._required_tier())
            manager = await _manager_of(session, member_id)
            message = ManagerMessage(
                member_id=member_id,
                staff_id=manager.id if manager else None,
                direction="in",
                text=text,
                created_at=self._clock.now(),
            )
            session.add(message)
            await session.flush()
            return RelayTarget(
                message_id=message.id,
                staff_telegram_id=manager.telegram_id if manager else None,
                manager_name=manager.display_name if manager else None,
            )

    async def attach_relay(self, message_id: int, relay_message_id: int) -> None:
        """Remember the id of the relayed copy, so a reply to it finds the member."""
        await self._set_message(message_id, relay_message_id=relay_message_id)

    async def mark_delivered(self, message_id: int, delivered: bool) -> None:
        await self._set_message(message_id, delivered=delivered)

    async def by_relay_message(
        self, relay_message_id: int, *, chat_id: int | None = None
    ) -> ThreadRef | None:
        """The member behind a relayed copy that a manager replied to.

        Telegram message ids are only unique within a chat, so the chat counts too:
        `chat_id` is the manager's chat (their `staff_telegram_id` from `from_member`);
        None means the shared staff chat.
        """
        query = (
            select(ManagerMessage.member_id, Member.telegram_id)
            .join(Member, Member.id == ManagerMessage.member_id)
            .where(
                ManagerMessage.relay_message_id == relay_message_id,
                ManagerMessage.direction == "in",
            )
            .order_by(ManagerMessage.id.desc())
            .limit(1)
        )
        if chat_id is None:
            query = query.where(ManagerMessage.staff_id.is_(None))
        else:
            query = query.join(Staff, Staff.id == ManagerMessage.staff_id).where(
                Staff.telegram_id == chat_id
            )
        async with self._db.read() as session:
            row = (await session.execute(query)).first()
        return (
            ThreadRef(member_id=row.member_id, member_telegram_id=row.telegram_id) if row else None
        )

    async def from_manager(
        self, member_id: int, staff_telegram_id: int, text: str
    ) -> ManagerMessageView:
        """Record a manager's reply, signed with their display name from the database."""
        async with self._db.transaction() as session:
            await load_member(session, member_id)
            staff = await _staff(session, staff_telegram_id)
            message = ManagerMessage(
                member_id=member_id,
                staff_id=staff.id,
                direction="out",
                text=text,
                created_at=self._clock.now(),
            )
            session.add(message)
            await session.flush()
            return ManagerMessageView.of(message, staff)

    async def thread(self, member_id: int, limit: int = 20) -> list[ManagerMessageView]:
        """The latest `limit` messages between a member and their managers, oldest first."""
        query = (
            select(ManagerMessage, Staff)
            .outerjoin(Staff, Staff.id == ManagerMessage.staff_id)
            .where(ManagerMessage.member_id == member_id)
            .order_by(ManagerMessage.id.desc())
            .limit(limit)
        )
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
        return [ManagerMessageView.of(message, staff) for message, staff in reversed(rows)]

    async def _set_message(self, message_id: int, **values: Any) -> None:
        async with self._db.transaction() as session:
            found = await session.scalar(
                update(ManagerMessage)
                .where(ManagerMessage.id == message_id)
                .values(**values)
                .returning(ManagerMessage.id)
            )
            if found is None:
                raise ShopError(ErrorCode.INVALID_INPUT, message=message_id)

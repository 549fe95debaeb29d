"""Stock reservation (库存预留): a member of a tier with `reservation` holds codes of a
product for a while, so a planned batch is guaranteed.

Where a hold lives: a `reserved_by` column on `codes` (plus a `reservations` row for the
bookkeeping: how many, until when, warned, how it ended), not a join table of held codes.
The purchase is the hot path (shared/perf-facts.md: statements per purchase dominate), and
with the column the claim stays the one UPDATE it was: it takes unsold codes reserved by
the buyer, then unreserved ones (a UNION ALL of two partial-index ranges), so a
reservation is spent before the open shelf and nobody else's hold is ever touched.
A table of held codes would need a second statement (or an anti-join) in every purchase.
The partial index `ix_codes_available` now covers unsold *unreserved* codes, so counting
the shelf others see stays an index range; `ix_codes_reserved` finds a member's holds.

Races: reserving claims codes the way a purchase does (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, the write lock from `BEGIN IMMEDIATE` on SQLite) and is all or nothing, so
members racing for the last codes hold at most what there is, each code once. The
member row is locked first so one member's concurrent reserves respect the tier's cap.

Expiry: a hold ends when the reservations job runs past `expires_at` (it also warns the
holder `warn_minutes` before). Until that run the codes stay held, and the holder's
purchases still take them: the job runs every minute, and a hold lasting a minute
longer is better than a purchase finding the shelf and the hold disagreeing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import Audit
from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.members import load_member
from core.models import Code, Member, Product, Reservation
from core.tiers.moves import Tiers
from core.uow import Database


class EndReason(StrEnum):
    EXPIRED = "expired"
    RELEASED = "released"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ReservationView:
    id: int
    member_id: int
    #: The holder's chat and language, for the warning and the end notice.
    telegram_id: int | None
    locale: str | None
    product_id: int
    sku: str
    product_names: dict[str, str]
    #: Codes reserved over the hold's life.
    quantity: int
    #: Codes still held (not bought yet).
    remaining: int
    created_at: datetime
    expires_at: datetime

    def product_name(self, locale: str) -> str:
        return self.product_names.get(locale) or self.product_names["en"]


#: Codes a hold still has: unsold codes carrying its member, of its product.
_REMAINING = (
    select(func.count(Code.id))
    .where(
        Code.reserved_by == Reservation.member_id,
        Code.product_id == Reservation.product_id,
        Code.order_id.is_(None),
    )
    .correlate(Reservation)
    .scalar_subquery()
)


_ViewRow = tuple[Reservation, int | None, str | None, str, str, str, int]


def _views_query() -> Select[*_ViewRow]:
    return (
        select(
            Reservation,
            Member.telegram_id,
            Member.locale,
            Product.sku,
            Product.name_zh,
            Product.name_en,
            _REMAINING,
        )
        .join(Product, Product.id == Reservation.product_id)
        .join(Member, Member.id == Reservation.member_id)
        .where(Reservation.ended_at.is_(None))
        .order_by(Reservation.expires_at, Reservation.id)
    )


def _view(
    row: Reservation,
    telegram_id: int | None,
    locale: str | None,
    sku: str,
    name_zh: str,
    name_en: str,
    remaining: int,
) -> ReservationView:
    return ReservationView(
        id=row.id,
        member_id=row.member_id,
        telegram_id=telegram_id,
        locale=locale,
        product_id=row.product_id,
        sku=sku,
        product_names={"zh_CN": name_zh, "en": name_en},
        quantity=row.quantity,
        remaining=int(remaining or 0),
        created_at=row.created_at.astimezone(UTC),
        expires_at=row.expires_at.astimezone(UTC),
    )


class Reservations:
    def __init__(
        self, db: Database, ladder: Ladder, clock: Clock, tiers: Tiers, audit: Audit
    ) -> None:
        self._db = db
        self._ladder = ladder
        self._clock = clock
        self._tiers = tiers
        self._audit = audit

    async def reserve(self, member_id: int, product_id: int, quantity: int) -> ReservationView:
        """Hold `quantity` more codes of a product for the member, all or none.

        Refused unless the tier has `reservation`; the tier's `reservation_max` caps the
        codes one member holds of one product (QUANTITY_OUT_OF_RANGE with how many more
        fit); OUT_OF_STOCK when fewer unreserved codes are left. Adding to an open hold
        keeps its end; a hold past its end (the job not yet run) is ended first.
        """
        now = self._clock.now()
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            self._tiers.require(member.tier_key, "reservation")
            cap = self._ladder.tier(member.tier_key).capabilities.reservation_max
            product = await session.get(Product, product_id)
            if product is None:
                raise ShopError(ErrorCode.PRODUCT_NOT_FOUND, product=product_id)
            if not product.active:
                raise ShopError(ErrorCode.PRODUCT_INACTIVE, sku=product.sku)
            hold = await session.scalar(
                select(Reservation).where(
                    Reservation.member_id == member_id,
                    Reservation.product_id == product_id,
                    Reservation.ended_at.is_(None),
                )
            )
            if hold is not None and hold.expires_at <= now:
                await self._end_on(session, hold, EndReason.EXPIRED, now)
                hold = None
            held = await _held(session, member_id, product_id)
            if quantity < 1 or held + quantity > cap:
                raise ShopError(
                    ErrorCode.QUANTITY_OUT_OF_RANGE, min=1, max=max(cap - held, 0), sku=product.sku
                )
            claimed = await _claim(session, member_id, product_id, quantity)
            if claimed < quantity:
                raise ShopError(ErrorCode.OUT_OF_STOCK, available=claimed, sku=product.sku)
            if hold is None:
                hold = Reservation(
                    member_id=member_id,
                    product_id=product_id,
                    quantity=quantity,
                    created_at=now,
                    expires_at=now + timedelta(hours=self._ladder.reservation.hours),
                )
                session.add(hold)
            else:
                hold.quantity += quantity
            await session.flush()
            return _view(
                hold, member.telegram_id, member.locale, product.sku, product.name_zh,
                product.name_en, held + quantity,
            )  # fmt: skip

    async def mine(self, member_id: int) -> list[ReservationView]:
        """The member's open holds, ending soonest first."""
        async with self._db.read() as session:
            rows = await session.execute(_views_query().where(Reservation.member_id == member_id))
            return [_view(*row) for row in rows]

    async def open(self) -> list[ReservationView]:
        """Every open hold, ending soonest first (the admin's list)."""
        async with self._db.read() as session:
            return [_view(*row) for row in await session.execute(_views_query())]

    async def release(self, member_id: int, reservation_id: int) -> int:
        """The member gives a hold back early; how many codes went back on the shelf."""
        async with self._db.transaction() as session:
            hold = await self._open_hold(session, reservation_id)
            if hold is None or hold.member_id != member_id:
                raise ShopError(ErrorCode.RESERVATION_NOT_FOUND, reservation=reservation_id)
            return await self._end_on(session, hold, EndReason.RELEASED, self._clock.now())

    async def cancel(self, actor: str, reservation_id: int) -> int:
        """An admin ends a hold; audited in the same transaction. Codes released."""
        async with self._db.transaction() as session:
            hold = await self._open_hold(session, reservation_id)
            if hold is None:
                raise ShopError(ErrorCode.RESERVATION_NOT_FOUND, reservation=reservation_id)
            before = {"member": hold.member_id, "product": hold.product_id,
                      "expires_at": hold.expires_at, "quantity": hold.quantity}  # fmt: skip
            released = await self._end_on(session, hold, EndReason.CANCELLED, self._clock.now())
            await self._audit.record(
                session, actor, "reservation.cancel", f"reservation:{reservation_id}",
                before=before, after={"released": released},
            )  # fmt: skip
            return released

    async def warn_due(self) -> list[ReservationView]:
        """Open holds ending within the warning window, each returned once ever.

        Marking `warned_at` with a guarded UPDATE is what makes "once": a second run, or
        two runs at once, finds nothing left to mark.
        """
        now = self._clock.now()
        soon = now + timedelta(minutes=self._ladder.reservation.warn_minutes)
        async with self._db.transaction() as session:
            marked = await session.scalars(
                update(Reservation)
                .where(
                    Reservation.ended_at.is_(None),
                    Reservation.warned_at.is_(None),
                    Reservation.expires_at <= soon,
                    Reservation.expires_at > now,
                )
                .values(warned_at=now)
                .returning(Reservation.id)
            )
            ids = list(marked)
            if not ids:
                return []
            rows = await session.execute(_views_query().where(Reservation.id.in_(ids)))
            return [view for view in (_view(*row) for row in rows) if view.remaining > 0]

    async def expire_due(self) -> list[tuple[ReservationView, int]]:
        """End every hold past its end; each with the codes it put back on the shelf."""
        now = self._clock.now()
        ended: list[tuple[ReservationView, int]] = []
        async with self._db.transaction() as session:
            rows = (
                await session.execute(_views_query().where(Reservation.expires_at <= now))
            ).all()
            for row in rows:
                view = _view(*row)
                released = await self._end_on(session, row[0], EndReason.EXPIRED, now)
                ended.append((view, released))
        return ended

    async def _open_hold(self, session: AsyncSession, reservation_id: int) -> Reservation | None:
        return await session.scalar(
            select(Reservation)
            .where(Reservation.id == reservation_id, Reservation.ended_at.is_(None))
            .with_for_update()
        )

    async def _end_on(
        self, session: AsyncSession, hold: Reservation, reason: EndReason, now: datetime
    ) -> int:
        """Close the hold and put its unsold codes back on everyone's shelf."""
        released = await session.execute(
            update(Code)
            .where(
                Code.reserved_by == hold.member_id,
                Code.product_id == hold.product_id,
                Code.order_id.is_(None),
            )
            .values(reserved_by=None)
            .returning(Code.id)
            .execution_options(synchronize_session=False)
        )
        count = len(released.all())
        hold.ended_at = now
        hold.end_reason = reason.value
        await session.flush()
        return count


async def _held(session: AsyncSession, member_id: int, product_id: int) -> int:
    count = await session.scalar(
        select(func.count(Code.id)).where(
            Code.reserved_by == member_id, Code.product_id == product_id, Code.order_id.is_(None)
        )
    )
    return count or 0


async def _claim(session: AsyncSession, member_id: int, product_id: int, quantity: int) -> int:
    """Mark up to `quantity` unreserved unsold codes as the member's; how many."""
    available = (
        select(Code.id)
        .where(Code.product_id == product_id, Code.order_id.is_(None), Code.reserved_by.is_(None))
        .order_by(Code.id)
        .limit(quantity)
    )
    if session.get_bind().dialect.name == "postgresql":
        available = available.with_for_update(skip_locked=True)
    result = await session.execute(
        update(Code)
        .where(Code.id.in_(available.scalar_subquery()))
        .values(reserved_by=member_id)
        .returning(Code.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())

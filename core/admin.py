"""Admin actions, each performed and written to the audit log with the state around it.

The chat admin and `cardshop` both call these, so an action is audited the same way
wherever it was typed. Wallet moves and broadcasts are written with their audit row in
one transaction. The other actions call a service that commits by itself (tiers,
manager, catalog, stock, refunds): their audit row follows in a second transaction
right after it, so a crash exactly between the two leaves the change unaudited; the
change itself still carries its actor where the service keeps one (tier_changes,
violations, wallet_entries).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from core.audit import Audit
from core.broadcast import Broadcasts, BroadcastView, Button
from core.catalog import Catalog, ProductView
from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.export import Exports
from core.manager import ManagerRelay, StaffView
from core.members import Members, load_member
from core.models import Order
from core.orders import Orders, OrderView
from core.reservations import Reservations, ReservationView
from core.stats import Stats
from core.stock import ImportReport, StockService
from core.tiers.moves import TierChangeView, Tiers, ViolationView
from core.uow import Database, run_on
from core.wallet import MAX_SINGLE_AMOUNT, EntryKind, post_entry_on


@dataclass(frozen=True, slots=True)
class BalanceChange:
    member_id: int
    amount: int
    balance_before: int
    balance_after: int


def _member(member_id: int) -> str:
    return f"member:{member_id}"


class AdminActions:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        audit: Audit,
        broadcasts: Broadcasts,
        *,
        members: Members,
        tiers: Tiers,
        manager: ManagerRelay,
        catalog: Catalog,
        stock: StockService,
        orders: Orders,
        reservations: Reservations,
    ) -> None:
        self._db = db
        self._clock = clock
        self._audit = audit
        self._broadcasts = broadcasts
        self._members = members
        self._tiers = tiers
        self._manager = manager
        self._catalog = catalog
        self._stock = stock
        self._orders = orders
        self._reservations = reservations

    async def denied(self, actor: str, command: str) -> None:
        """Log a refused attempt (the caller refuses it)."""
        await self._audit.denied(actor, command)

    # --- wallet (one transaction with the audit row) ------------------------------------

    async def _post(
        self, actor: str, member_id: int, amount: int, *, kind: EntryKind, reason: str
    ) -> BalanceChange:
        if amount == 0 or abs(amount) > MAX_SINGLE_AMOUNT:
            raise ShopError(ErrorCode.INVALID_AMOUNT, amount=amount, max=MAX_SINGLE_AMOUNT)
        if not reason.strip():
            raise ShopError(ErrorCode.INVALID_INPUT, field="reason")
        async with self._db.transaction() as session:
            before = (await load_member(session, member_id, for_update=True)).balance
            after = await run_on(
                session,
                post_entry_on,
                member_id,
                amount,
                kind=kind,
                at=self._clock.now(),
                reason=reason,
                actor=actor,
            )
            await self._audit.record(
                session,
                actor,
                kind,
                _member(member_id),
                {"balance": before},
                {"balance": after, "amount": amount, "reason": reason},
            )
        return BalanceChange(member_id, amount, before, after)

    async def top_up(
        self, actor: str, member_id: int, amount: int, *, reason: str
    ) -> BalanceChange:
        """Credit money paid in (分), with the reason kept in the ledger and the audit log."""
        if amount < 0:
            raise ShopError(ErrorCode.INVALID_AMOUNT, amount=amount, max=MAX_SINGLE_AMOUNT)
        return await self._post(actor, member_id, amount, kind="topup", reason=reason)

    async def adjust(
        self, actor: str, member_id: int, amount: int, *, reason: str
    ) -> BalanceChange:
        """A correction either way (分); never takes the balance below zero."""
        return await self._post(actor, member_id, amount, kind="adjustment", reason=reason)

    # --- tiers and people (service transaction, then the audit row) ---------------------

    async def _tier_state(self, member_id: int) -> dict[str, Any]:
        member = await self._members.get(member_id)
        return {
            "tier": member.tier_key,
            "source": member.tier_source,
            "trial_until": member.trial_until,
        }

    async def set_tier(
        self, actor: str, member_id: int, tier_key: str, *, reason: str = "admin"
    ) -> TierChangeView:
        before = await self._tier_state(member_id)
        change = await self._tiers.set_tier(member_id, tier_key, actor=actor, reason=reason)
        await self._audit.log(
            actor, "set_tier", _member(member_id), before, await self._tier_state(member_id)
        )
        return change

    async def invite_partner(self, actor: str, member_id: int) -> TierChangeView:
        before = await self._tier_state(member_id)
        change = await self._tiers.invite_partner(member_id, actor=actor)
        await self._audit.log(
            actor, "invite_partner", _member(member_id), before, await self._tier_state(member_id)
        )
        return change

    async def grant_trial(
        self, actor: str, member_id: int, *, days: int | None = None
    ) -> TierChangeView:
        before = await self._tier_state(member_id)
        change = await self._tiers.grant_trial(member_id, actor=actor, days=days)
        await self._audit.log(
            actor, "grant_trial", _member(member_id), before, await self._tier_state(member_id)
        )
        return change

    async def flag_violation(
        self, actor: str, member_id: int, *, reason: str, serious: bool = True
    ) -> ViolationView:
        violation = await self._tiers.flag_violation(
            member_id, reason=reason, actor=actor, serious=serious
        )
        await self._audit.log(actor, "flag_violation", _member(member_id), None, violation)
        return violation

    async def assign_manager(
        self,
        actor: str,
        member_id: int,
        staff_telegram_id: int,
        *,
        display_name: str | None = None,
    ) -> StaffView:
        before = (await self._manager.access(member_id)).manager
        staff = await self._manager.assign(member_id, staff_telegram_id, display_name=display_name)
        await self._audit.log(
            actor,
            "assign_manager",
            _member(member_id),
            {"manager": before},
            {"manager": staff},
        )
        return staff

    # --- catalog and stock --------------------------------------------------------------

    async def create_product(
        self,
        actor: str,
        sku: str,
        category_slug: str,
        name_zh: str,
        name_en: str,
        base_price: int,
        **fields: Any,
    ) -> ProductView:
        """`fields` are `Catalog.create_product`'s keyword options (pool, descriptions...)."""
        product = await self._catalog.create_product(
            sku, category_slug, name_zh, name_en, base_price, **fields
        )
        await self._audit.log(actor, "create_product", f"product:{sku}", None, product)
        return product

    async def update_product(self, actor: str, sku: str, **changes: Any) -> ProductView:
        before = await self._catalog.product_by_sku(sku)
        after = await self._catalog.update_product(sku, **changes)
        await self._audit.log(actor, "update_product", f"product:{sku}", before, after)
        return after

    async def set_active(self, actor: str, sku: str, active: bool) -> ProductView:
        before = await self._catalog.product_by_sku(sku)
        after = await self._catalog.set_active(sku, active)
        await self._audit.log(
            actor, "set_active", f"product:{sku}", {"active": before.active}, {"active": active}
        )
        return after

    async def import_codes(self, actor: str, sku: str, lines: Iterable[str]) -> ImportReport:
        """Stock codes; the audit row keeps the counts, never a code."""
        before = await self._catalog.product_by_sku(sku)
        report = await self._stock.import_codes(sku, lines)
        await self._audit.log(
            actor, "import_codes", f"product:{sku}", {"stock": before.stock}, report
        )
        return report

    async def reservations(self) -> list[ReservationView]:
        """Every open stock reservation, ending soonest first."""
        return await self._reservations.open()

    async def cancel_reservation(self, actor: str, reservation_id: int) -> int:
        """End a member's reservation, its codes back on sale; audited in its transaction."""
        return await self._reservations.cancel(actor, reservation_id)

    async def refund(self, actor: str, order_id: int, *, reason: str) -> OrderView:
        if not reason.strip():
            raise ShopError(ErrorCode.INVALID_INPUT, field="reason")
        async with self._db.read() as session:
            before = (
                await session.execute(
                    select(Order.member_id, Order.status, Order.total).where(Order.id == order_id)
                )
            ).one_or_none()
        if before is None:
            raise ShopError(ErrorCode.ORDER_NOT_FOUND, order=order_id)
        order = await self._orders.refund(order_id, actor=actor, reason=reason)
        await self._audit.log(
            actor,
            "refund",
            f"order:{order_id}",
            {"member_id": before.member_id, "status": before.status, "total": before.total},
            {"status": order.status, "reason": reason},
        )
        return order

    # --- broadcast (one transaction with the audit row) ---------------------------------

    async def start_broadcast(
        self, actor: str, audience: str, text: str, button: Button | None = None
    ) -> tuple[BroadcastView, int]:
        """Create the broadcast and its audience; the caller then runs `Broadcasts.run`."""
        async with self._db.transaction() as session:
            broadcast, audience_size = await self._broadcasts.create_in(
                session, actor, audience, text, button
            )
            await self._audit.record(
                session,
                actor,
                "broadcast",
                f"broadcast:{broadcast.id}",
                None,
                {
                    "audience": audience,
                    "recipients": audience_size,
                    "text": broadcast.text,
                    "button": broadcast.button,
                },
            )
        return broadcast, audience_size


@dataclass(frozen=True, slots=True)
class Operations:
    """The services for running the shop, built by `core.shop.build_shop`."""

    audit: Audit
    admin: AdminActions
    broadcasts: Broadcasts
    stats: Stats
    exports: Exports

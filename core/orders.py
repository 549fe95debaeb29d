"""Orders: quote, place (pay from the wallet, claim codes), reveal, refund.

`place` is the hot path and the one that must never go wrong, so it is one short
transaction with a fixed lock order (order key → member row → codes) and as few
statements as the rules allow:

1. the idempotency key is looked up (a repeated tap or update returns the first order);
2. the price facts are read in one joined SELECT and the price recomputed;
3. the order is inserted, the wallet debited with a guard (`balance >= total`), the
   codes claimed with `UPDATE ... RETURNING` and the ledger row written;
4. purchase points and the activity event are keyed by the order id.

Any refusal raises inside the transaction, so a failed purchase leaves nothing behind;
a crash after commit loses nothing either, since the codes are already the buyer's and
`reveal` shows them again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import activity, points
from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.members import load_member
from core.models import Code, Member, MemberPrice, Order, Product, TierPrice
from core.pricing import PricingInput, Quote, quote
from core.sql import insert_ignoring_conflict
from core.stock import claim_codes
from core.uow import Database
from core.vault import CodeVault
from core.wallet import post_entry

log = logging.getLogger(__name__)

PAID_STATUSES = ("paid", "delivered")
REFUNDABLE_STATUSES = ("paid", "delivered", "failed")
MAX_IDEMPOTENCY_KEY = 64


@dataclass(frozen=True, slots=True)
class OrderView:
    id: int
    member_id: int
    product_id: int
    sku: str
    product_names: dict[str, str]
    quantity: int
    tier_key: str
    unit_base_price: int
    unit_price: int
    discount: int
    points_used: int
    total: int
    status: str
    created_at: datetime

    def product_name(self, locale: str) -> str:
        return self.product_names.get(locale) or self.product_names["en"]


@dataclass(frozen=True, slots=True)
class Purchase:
    """A paid order with its codes in clear, for the buyer's eyes only."""

    order: OrderView
    codes: list[str]
    balance_after: int
    #: False when the idempotency key had been used: this is the first order again.
    created: bool
    #: The tier the purchase moved the member to (an upgrade or a fast-track trial).
    new_tier: str | None = None


class TierMove(Protocol):
    @property
    def to_tier(self) -> str: ...


#: Called after a purchase commits (tier promotion, fast track); failures are logged only.
PaidHook = Callable[[OrderView, bool], Awaitable[TierMove | None]]


def _view(order: Order, product: Product) -> OrderView:
    return OrderView(
        id=order.id,
        member_id=order.member_id,
        product_id=order.product_id,
        sku=product.sku,
        product_names={"zh_CN": product.name_zh, "en": product.name_en},
        quantity=order.quantity,
        tier_key=order.tier_key,
        unit_base_price=order.unit_base_price,
        unit_price=order.unit_price,
        discount=order.discount,
        points_used=order.points_used,
        total=order.total,
        status=order.status,
        created_at=order.created_at,
    )


class Orders:
    def __init__(
        self,
        db: Database,
        ladder: Ladder,
        vault: CodeVault,
        clock: Clock,
        on_paid: PaidHook | None = None,
    ) -> None:
        self._db = db
        self._ladder = ladder
        self._vault = vault
        self._clock = clock
        self._on_paid = on_paid

    # --- reading -------------------------------------------------------------------------

    async def _pricing_input(
        self, session: AsyncSession, member_id: int, product_id: int, *, with_points: bool
    ) -> PricingInput:
        row = (
            await session.execute(
                select(
                    Member.balance,
                    Member.tier_key,
                    Product.sku,
                    Product.active,
                    Product.pool,
                    Product.base_price,
                    Product.max_per_order,
                    TierPrice.price,
                    MemberPrice.price,
                )
                .select_from(Member)
                .join(Product, Product.id == product_id)
                .outerjoin(
                    TierPrice,
                    and_(TierPrice.product_id == Product.id, TierPrice.tier_key == Member.tier_key),
                )
                .outerjoin(
                    MemberPrice,
                    and_(MemberPrice.product_id == Product.id, MemberPrice.member_id == Member.id),
                )
                .where(Member.id == member_id)
            )
        ).one_or_none()
        if row is None:
            await load_member(session, member_id)
            raise ShopError(ErrorCode.PRODUCT_NOT_FOUND, product=product_id)
        available_points = (
            await points.available(session, member_id, self._clock.now()) if with_points else 0
        )
        return PricingInput(
            product_id=product_id,
            sku=row[2],
            active=row[3],
            pool=row[4],
            base_price=row[5],
            max_per_order=row[6],
            tier_key=row[1],
            tier_price=row[7],
            member_price=row[8],
            balance=row[0],
            available_points=available_points,
        )

    async def quote(
        self, member_id: int, product_id: int, quantity: int, *, use_points: bool = False
    ) -> Quote:
        """The breakdown the member is shown before paying, with stock taken into account."""
        async with self._db.read() as session:
            facts = await self._pricing_input(
                session, member_id, product_id, with_points=use_points
            )
            stock = await session.scalar(
                select(func.count())
                .select_from(Code)
                .where(Code.product_id == product_id, Code.order_id.is_(None))
            )
            return quote(self._ladder, facts, quantity, use_points=use_points, stock=stock or 0)

    async def get(self, member_id: int, order_id: int) -> OrderView:
        """One of the member's own orders; someone else's reads as not found."""
        async with self._db.read() as session:
            return await self._owned(session, member_id, order_id)

    async def _owned(self, session: AsyncSession, member_id: int, order_id: int) -> OrderView:
        row = (
            await session.execute(
                select(Order, Product)
                .join(Product, Product.id == Order.product_id)
                .where(Order.id == order_id, Order.member_id == member_id)
            )
        ).one_or_none()
        if row is None:
            raise ShopError(ErrorCode.ORDER_NOT_FOUND, order=order_id)
        return _view(*row)

    async def recent(self, member_id: int, *, limit: int = 10, offset: int = 0) -> list[OrderView]:
        async with self._db.read() as session:
            rows = await session.execute(
                select(Order, Product)
                .join(Product, Product.id == Order.product_id)
                .where(Order.member_id == member_id)
                .order_by(Order.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [_view(order, product) for order, product in rows]

    async def reveal(self, member_id: int, order_id: int) -> tuple[OrderView, list[str]]:
        """An order's codes in clear, only for the member who bought them."""
        async with self._db.read() as session:
            order = await self._owned(session, member_id, order_id)
            secrets = await session.scalars(
                select(Code.secret).where(Code.order_id == order_id).order_by(Code.id)
            )
            return order, [self._vault.decrypt(secret) for secret in secrets]

    # --- buying --------------------------------------------------------------------------

    async def place(
        self,
        member_id: int,
        product_id: int,
        quantity: int,
        *,
        idempotency_key: str,
        use_points: bool = False,
        expected_total: int | None = None,
    ) -> Purchase:
        """Pay for `quantity` codes from the wallet and hand them over, exactly once per key.

        `expected_total` is what the member was shown; if the price has moved since, the
        purchase is refused with PRICE_CHANGED carrying the new quote, and nothing changes.
        """
        if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise ShopError(ErrorCode.INVALID_INPUT, field="idempotency_key")
        now = self._clock.now()
        async with self._db.transaction() as session:
            existing = await self._by_key(session, member_id, idempotency_key)
            if existing is not None:
                return existing
            facts = await self._pricing_input(
                session, member_id, product_id, with_points=use_points
            )
            priced = quote(self._ladder, facts, quantity, use_points=use_points)
            if expected_total is not None and expected_total != priced.total:
                raise ShopError(ErrorCode.PRICE_CHANGED, quote=priced)
            order_id = await session.scalar(
                insert_ignoring_conflict(
                    session,
                    Order,
                    member_id=member_id,
                    product_id=product_id,
                    idempotency_key=idempotency_key,
                    quantity=quantity,
                    tier_key=priced.tier_key,
                    unit_base_price=priced.unit_base_price,
                    unit_price=priced.unit_price,
                    discount=priced.discount,
                    points_used=priced.points_used,
                    points_value=priced.points_value,
                    total=priced.total,
                    status="paid",
                    created_at=now,
                    paid_at=now,
                ).returning(Order.id)
            )
            if order_id is None:
                # A concurrent request with the same key committed first (PostgreSQL).
                replay = await self._by_key(session, member_id, idempotency_key)
                assert replay is not None
                return replay
            balance = await post_entry(
                session,
                member_id,
                -priced.total,
                kind="purchase",
                at=now,
                order_id=order_id,
                spend_delta=priced.total,
            )
            if priced.points_used:
                await points.redeem(
                    session, member_id, priced.points_used, order_id=order_id, at=now
                )
            secrets = await claim_codes(session, product_id, quantity, order_id, now)
            if len(secrets) < quantity:
                raise ShopError(ErrorCode.OUT_OF_STOCK, available=len(secrets), sku=facts.sku)
            await self._reward(session, member_id, order_id, priced.total, now)
            order = await self._owned(session, member_id, order_id)
        purchase = Purchase(
            order=order,
            codes=[self._vault.decrypt(secret) for secret in secrets],
            balance_after=balance,
            created=True,
        )
        moved = await self._after_paid(order)
        return replace(purchase, new_tier=moved.to_tier) if moved else purchase

    async def _reward(
        self, session: AsyncSession, member_id: int, order_id: int, total: int, at: datetime
    ) -> None:
        key = f"order:{order_id}"
        earned = total // 100 * self._ladder.points.purchase_points_per_yuan
        await points.award_points(
            session, self._ladder, member_id, source="purchase", source_key=key,
            amount=earned, at=at,
        )  # fmt: skip
        await activity.record(session, member_id, "purchase", key, at=at)

    async def _by_key(self, session: AsyncSession, member_id: int, key: str) -> Purchase | None:
        order_id = await session.scalar(
            select(Order.id).where(Order.member_id == member_id, Order.idempotency_key == key)
        )
        if order_id is None:
            return None
        order = await self._owned(session, member_id, order_id)
        secrets = await session.scalars(
            select(Code.secret).where(Code.order_id == order_id).order_by(Code.id)
        )
        balance = (await load_member(session, member_id)).balance
        return Purchase(
            order=order,
            codes=[self._vault.decrypt(secret) for secret in secrets],
            balance_after=balance,
            created=False,
        )

    async def _after_paid(self, order: OrderView) -> TierMove | None:
        if self._on_paid is None:
            return None
        try:
            return await self._on_paid(order, True)
        except Exception:
            # The purchase stands; a missed promotion is caught by the next evaluation.
            log.exception("after-purchase hook failed for order %s", order.id)
            return None

    async def mark_delivered(self, order_id: int) -> None:
        """The codes reached the buyer's chat."""
        async with self._db.transaction() as session:
            await session.execute(
                update(Order)
                .where(Order.id == order_id, Order.status == "paid")
                .values(status="delivered", delivered_at=self._clock.now())
            )

    # --- refunds -------------------------------------------------------------------------

    async def refund(self, order_id: int, *, actor: str, reason: str) -> OrderView:
        """Give the money back and undo what the order earned; the codes stay retired.

        Its spend stops counting toward tiers, its purchase points are taken back (never
        below zero, the shortfall recorded) and redeemed points are returned.
        """
        now = self._clock.now()
        async with self._db.transaction() as session:
            query = select(Order).where(Order.id == order_id)
            if self._db.is_postgres:
                query = query.with_for_update()
            order = await session.scalar(query)
            if order is None:
                raise ShopError(ErrorCode.ORDER_NOT_FOUND, order=order_id)
            if order.status not in REFUNDABLE_STATUSES:
                raise ShopError(ErrorCode.ORDER_NOT_REFUNDABLE, order=order_id, status=order.status)
            order.status, order.refunded_at, order.failure = "refunded", now, reason[:64]
            if order.total:
                await post_entry(
                    session,
                    order.member_id,
                    order.total,
                    kind="refund",
                    at=now,
                    order_id=order.id,
                    reason=reason,
                    actor=actor,
                    spend_delta=-order.total,
                )
            await points.reverse(session, order.member_id, f"order:{order.id}", at=now)
            await points.restore_redeemed(session, order.id, at=now)
            return await self._owned(session, order.member_id, order.id)

"""Orders: place (pay from the wallet, claim codes), reveal, refund.

What a member is shown before paying comes from `Catalog.quote`; the price charged is
worked out again here, from the purchase's own reads.

`place` is the hot path and the one that must never go wrong, so it is one short
transaction of Core statements, written once as a plain function over a sync
`Connection` and run by `Database.run` in a single hop (a writer thread on SQLite, the
async engine's greenlet on PostgreSQL):

1. one joined SELECT reads the idempotency key (a repeated tap or update returns the
   first order) and every price fact, locking the member row on PostgreSQL first, so
   the price is recomputed from what the purchase will be charged against and every
   purchase takes its locks in one order (member row → order key → codes);
2. the order is inserted (`ON CONFLICT DO NOTHING RETURNING`: a concurrent request with
   the same key gets the first order back), the wallet debited with a guard
   (`balance >= total`, backed by a CHECK), the ledger row written and the codes claimed
   with `UPDATE ... RETURNING`;
3. purchase points and the activity event are keyed by the order id;
4. the tier check (`core.tiers.moves.settlement_due_on`) starts from the member row step
   1 read and holds, its spend grown by this total, and measures only what could still
   move the member, so the usual purchase needs nothing after it commits; one that
   earns a move or a reward is settled in a transaction of its own (`on_paid`).

Risk control (`core.risk`) reads the member's window between steps 1 and 2, under the
same lock, and refuses a member at a limit. Every refusal the facts already decide
(price, tier, quantity, balance) is made before the first write and counted against
the member in the same transaction, so concurrent attempts are counted exactly; one
that only the writes discover (the last codes claimed by someone else) rolls the whole
transaction back and is counted just after it. Either way a failed purchase moves no
money and no code, and a crash after commit loses nothing, since the codes are already
the buyer's and `reveal` shows them again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, Row, Select, and_, bindparam, literal, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from core import activity, points, risk
from core.clock import Clock
from core.commission import CommissionCredit, commission_on, reverse_commission_on
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.models import (
    REFUNDABLE_STATUSES,
    Code,
    Member,
    MemberPrice,
    Order,
    OrderStatus,
    Product,
    TierPrice,
)
from core.prepared import Prepared
from core.pricing import PricingInput, Quote, quote
from core.sql import ignoring_conflict
from core.stock import claim_codes_on
from core.tiers.moves import ProgressReward, Promotion, settlement_due_on
from core.tiers.rules import Standing
from core.uow import Database, run_on
from core.vault import CodeVault
from core.wallet import post_entry_on

log = logging.getLogger(__name__)

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
    status: OrderStatus
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
    #: Progress rewards the purchase earned on the way to the next tier.
    rewards: tuple[ProgressReward, ...] = ()


#: Called after a purchase commits (tier promotion, fast track) with whether the tier
#: check inside the purchase found a settlement due; failures are logged only.
PaidHook = Callable[[OrderView, bool | None], Awaitable[Promotion | None]]


#: A row or SELECT of columns picked by position.
AnyRow = Row[*tuple[Any, ...]]
AnySelect = Select[*tuple[Any, ...]]

#: The columns an `OrderView` is built from.
_VIEW_COLUMNS = (
    Order.id,
    Order.member_id,
    Order.product_id,
    Product.sku,
    Product.name_zh,
    Product.name_en,
    Order.quantity,
    Order.tier_key,
    Order.unit_base_price,
    Order.unit_price,
    Order.discount,
    Order.points_used,
    Order.total,
    Order.status,
    Order.created_at,
)


def _views() -> AnySelect:
    return select(*_VIEW_COLUMNS).join(Product, Product.id == Order.product_id)


def _view(row: AnyRow) -> OrderView:
    """An `OrderView` from a row with `_VIEW_COLUMNS` (more may follow)."""
    return OrderView(
        id=row.id,
        member_id=row.member_id,
        product_id=row.product_id,
        sku=row.sku,
        product_names={"zh_CN": row.name_zh, "en": row.name_en},
        quantity=row.quantity,
        tier_key=row.tier_key,
        unit_base_price=row.unit_base_price,
        unit_price=row.unit_price,
        discount=row.discount,
        points_used=row.points_used,
        total=row.total,
        status=OrderStatus(row.status),
        created_at=row.created_at,
    )


def _tier_price(key: str) -> str:
    """The label of the product's price for tier `key` in `_facts_query`."""
    return f"tier_price_{key}"


@functools.cache
def _facts_query(*, with_points: bool, tiers: tuple[str, ...]) -> AnySelect:
    """Every fact a price depends on, in one SELECT (see `_facts` for the columns).

    Binds `member` and `product` (and `at` with points, for the spendable points at that
    moment). Outer joins tell a missing product (NULL product columns) from a missing
    member (no row). The product's tier price for each tier of the ladder (`tiers`, in
    ladder order) comes last, labelled by `_tier_price`, since a tier pays no more than
    any tier below it. Built once per ladder; executions only bind values.
    """
    member_id = bindparam("member", type_=Integer)
    product_id = bindparam("product", type_=Integer)
    spendable = points.available_points(member_id, bindparam("at")) if with_points else literal(0)
    tier_prices = [
        select(TierPrice.price)
        .where(TierPrice.product_id == Product.id, TierPrice.tier_key == key)
        .scalar_subquery()
        .label(_tier_price(key))
        for key in tiers
    ]
    return (
        select(
            Member.balance,
            Member.tier_key,
            Product.id.label("product_id"),
            Product.sku,
            Product.active,
            Product.pool,
            Product.base_price,
            Product.max_per_order,
            MemberPrice.price.label("member_price"),
            spendable.label("points"),
            Product.name_zh,
            Product.name_en,
            *tier_prices,
        )
        .select_from(Member)
        .outerjoin(Product, Product.id == product_id)
        .outerjoin(
            MemberPrice,
            and_(MemberPrice.product_id == Product.id, MemberPrice.member_id == Member.id),
        )
        .where(Member.id == member_id)
    )


#: The member row's tier standing, read (and locked) with the purchase's facts so the tier
#: check after the purchase starts from it (`_standing_after`).
_STANDING_COLUMNS = (
    Member.tier_source,
    Member.trial_until,
    Member.total_spent,
    Member.joint_campaigns,
    Member.growth_points,
)


@functools.cache
def _purchase_query(
    *, with_points: bool, lock: bool, tiers: tuple[str, ...], window: tuple[int, int]
) -> Prepared:
    """`_facts_query` plus the order already paid under the idempotency key `key`, if any.

    With `lock` (PostgreSQL) the member row is locked first (NO KEY UPDATE lets other
    inserts' FK checks through): the balance and tier priced are the ones charged, and
    concurrent purchases, tier moves and the same key queue on this one row in one order;
    the risk window is read after the lock (`risk.check_on`). Without it (SQLite, whose
    write lock is held from BEGIN) the window rides in this SELECT, `window` being the
    limits' offsets (`risk.window_offsets`), which saves the purchase a statement.
    """
    query = _facts_query(with_points=with_points, tiers=tiers)
    if not lock:
        query = query.add_columns(*risk.window_columns(*window))
    query = query.add_columns(*_STANDING_COLUMNS, Order.id.label("paid_order_id")).outerjoin(
        Order,
        and_(Order.member_id == Member.id, Order.idempotency_key == bindparam("key")),
    )
    return Prepared(query.with_for_update(of=Member, key_share=True) if lock else query)


def _facts_params(member_id: int, product_id: int, at: datetime | None) -> dict[str, Any]:
    params: dict[str, Any] = {"member": member_id, "product": product_id}
    if at is not None:
        params["at"] = at
    return params


def _facts(
    row: AnyRow | None, member_id: int, product_id: int, tiers: tuple[str, ...]
) -> PricingInput:
    if row is None:
        raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
    if row.product_id is None:
        raise ShopError(ErrorCode.PRODUCT_NOT_FOUND, product=product_id)
    prices = {key: getattr(row, _tier_price(key)) for key in tiers}
    return PricingInput(
        product_id=product_id,
        sku=row.sku,
        active=row.active,
        pool=row.pool,
        base_price=row.base_price,
        max_per_order=row.max_per_order,
        tier_key=row.tier_key,
        tier_prices={key: price for key, price in prices.items() if price is not None},
        member_price=row.member_price,
        balance=row.balance,
        available_points=int(row.points or 0),
    )


def _standing_after(row: AnyRow, member_id: int, total: int) -> Standing:
    """The member's tier standing once this purchase is written: the row the purchase
    read (and holds: the write lock on SQLite, the row lock on PostgreSQL), its spend
    grown by the total, which is exactly what the debit wrote."""
    return Standing(
        member_id=member_id,
        tier_key=row.tier_key,
        tier_source=row.tier_source,
        trial_until=row.trial_until,
        total_spent=row.total_spent + total,
        joint_campaigns=row.joint_campaigns,
        growth_points=row.growth_points,
    )


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One purchase as `place` was asked for it, at the moment it is made."""

    member_id: int
    product_id: int
    quantity: int
    #: The idempotency key: a repeat hands the first order back.
    key: str
    use_points: bool
    #: The total the member was shown, if any (see `Orders.place`).
    expected_total: int | None
    #: The most the caller will pay, if any (see `Orders.place`).
    max_total: int | None
    now: datetime


@dataclass(frozen=True, slots=True)
class _Paid:
    """What the purchase transaction hands back; secrets are decrypted outside it."""

    order: OrderView
    secrets: list[bytes]
    balance: int
    created: bool
    #: Whether the tier check in the purchase found a settlement due (None: not asked).
    settle: bool | None = None


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
        self._tiers = tuple(tier.key for tier in ladder.tiers)
        self._vault = vault
        self._clock = clock
        self._on_paid = on_paid

    # --- reading -------------------------------------------------------------------------

    async def get(self, member_id: int, order_id: int) -> OrderView:
        """One of the member's own orders; someone else's reads as not found."""
        async with self._db.read() as session:
            return await self._owned(session, member_id, order_id)

    async def _owned(self, session: AsyncSession, member_id: int, order_id: int) -> OrderView:
        row = (
            await session.execute(
                _views().where(Order.id == order_id, Order.member_id == member_id)
            )
        ).one_or_none()
        if row is None:
            raise ShopError(ErrorCode.ORDER_NOT_FOUND, order=order_id)
        return _view(row)

    async def recent(self, member_id: int, *, limit: int = 10, offset: int = 0) -> list[OrderView]:
        async with self._db.read() as session:
            rows = await session.execute(
                _views()
                .where(Order.member_id == member_id)
                .order_by(Order.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [_view(row) for row in rows]

    async def since(self, member_id: int, since: datetime, *, limit: int = 100) -> list[OrderView]:
        """The member's orders placed at or after `since`, oldest first (for polling: ask
        again from the last one's `created_at`)."""
        async with self._db.read() as session:
            rows = await session.execute(
                _views()
                .where(Order.member_id == member_id, Order.created_at >= since)
                .order_by(Order.created_at, Order.id)
                .limit(limit)
            )
            return [_view(row) for row in rows]

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
        max_total: int | None = None,
    ) -> Purchase:
        """Pay for `quantity` codes from the wallet and hand them over, exactly once per key.

        `expected_total` is what the member was shown; if the price has moved since, the
        purchase is refused with PRICE_CHANGED carrying the new quote, and nothing changes.
        `max_total` is the most a program buying by API will pay: a total above it is
        refused with PRICE_ABOVE_LIMIT (the new quote attached), again before any write.
        Both refusals count against the member like any other.

        A key that already paid for another product or quantity is refused with
        IDEMPOTENCY_CONFLICT instead of handing that order back: the caller reused a key
        for a different purchase, and neither answer it could expect is true.
        """
        if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise ShopError(ErrorCode.INVALID_INPUT, field="idempotency_key")
        attempt = _Attempt(
            member_id,
            product_id,
            quantity,
            idempotency_key,
            use_points=use_points,
            expected_total=expected_total,
            max_total=max_total,
            now=self._clock.now(),
        )
        paid = await self._attempt(attempt)
        if isinstance(paid, ShopError):
            raise paid
        if not paid.created and (paid.order.product_id, paid.order.quantity) != (
            product_id,
            quantity,
        ):
            raise ShopError(ErrorCode.IDEMPOTENCY_CONFLICT, key=idempotency_key)
        return await self._delivered(paid)

    async def _attempt(self, attempt: _Attempt) -> _Paid | ShopError:
        """The purchase transaction, and a refusal its writes ran into counted after it."""
        try:
            return await self._db.run(lambda conn: self._attempt_on(conn, attempt))
        except ShopError as refusal:
            code = refusal.code
            if risk.counts(refusal):
                await self._db.run(
                    lambda conn: risk.record_failure_on(
                        conn, attempt.member_id, attempt.key, code, attempt.now
                    )
                )
            raise

    async def _delivered(self, paid: _Paid) -> Purchase:
        purchase = Purchase(
            order=paid.order,
            codes=[self._vault.decrypt(secret) for secret in paid.secrets],
            balance_after=paid.balance,
            created=paid.created,
        )
        if not paid.created:
            return purchase
        moved = await self._after_paid(paid.order, paid.settle)
        if moved is None or (moved.change is None and not moved.rewards):
            return purchase  # the usual purchase: no move, no reward
        return replace(purchase, new_tier=moved.to_tier, rewards=moved.rewards)

    def _attempt_on(self, conn: Connection, attempt: _Attempt) -> _Paid | ShopError:
        """The purchase transaction; a refusal decided before any write is returned, so
        that what counts it commits, and one the writes run into raises."""
        member_id, key, now = attempt.member_id, attempt.key, attempt.now
        rules = self._ladder.risk
        lock = conn.dialect.name == "postgresql"
        query = _purchase_query(
            with_points=attempt.use_points,
            lock=lock,
            tiers=self._tiers,
            window=risk.window_offsets(rules),
        )
        params = _facts_params(member_id, attempt.product_id, now if attempt.use_points else None)
        params["key"] = key
        if not lock:
            params.update(risk.window_params(rules, now))
        row = query.first(conn, params)
        if row is None:
            raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
        if row.paid_order_id is not None:
            return self._replay_on(conn, member_id, key)
        if lock:
            verdict = risk.check_on(conn, rules, member_id, key, now)
            if verdict.paid:
                return self._replay_on(conn, member_id, key)
            limited = verdict.refusal
        else:
            limited = risk.refusal_on(conn, rules, member_id, now, risk.Window.of(row))
        if limited is not None:
            return limited
        try:
            facts = _facts(row, member_id, attempt.product_id, self._tiers)
            priced = self._price(
                facts,
                attempt.quantity,
                use_points=attempt.use_points,
                expected=attempt.expected_total,
                most=attempt.max_total,
            )
        except ShopError as refusal:
            risk.record_failure_on(conn, member_id, key, refusal.code, now)
            return refusal
        return self._purchase_on(conn, row, facts, priced, attempt)

    def _price(
        self,
        facts: PricingInput,
        quantity: int,
        *,
        use_points: bool,
        expected: int | None,
        most: int | None,
    ) -> Quote:
        """The price charged, or the refusal the facts already decide."""
        priced = quote(self._ladder, facts, quantity, use_points=use_points)
        if expected is not None and expected != priced.total:
            raise ShopError(ErrorCode.PRICE_CHANGED, quote=priced)
        if most is not None and priced.total > most:
            raise ShopError(
                ErrorCode.PRICE_ABOVE_LIMIT, total=priced.total, max_total=most, quote=priced
            )
        if priced.balance_after < 0:
            # The balance read is the one the debit will guard (the member row is held).
            raise ShopError(
                ErrorCode.INSUFFICIENT_BALANCE,
                balance=facts.balance,
                required=priced.total,
                missing=-priced.balance_after,
            )
        return priced

    def _purchase_on(
        self,
        conn: Connection,
        row: AnyRow,
        facts: PricingInput,
        priced: Quote,
        attempt: _Attempt,
    ) -> _Paid:
        """The purchase's writes; a refusal here (the claim came up short) raises."""
        member_id, product_id, quantity = attempt.member_id, attempt.product_id, attempt.quantity
        now = attempt.now
        order_id = ignoring_conflict(Order).scalar(
            conn,
            {
                "member_id": member_id,
                "product_id": product_id,
                "idempotency_key": attempt.key,
                "quantity": quantity,
                "tier_key": priced.tier_key,
                "unit_base_price": priced.unit_base_price,
                "unit_price": priced.unit_price,
                "discount": priced.discount,
                "points_used": priced.points_used,
                "points_value": priced.points_value,
                "total": priced.total,
                "status": OrderStatus.PAID.value,
                "created_at": now,
                "paid_at": now,
            },
        )
        if order_id is None:
            # A concurrent request with the same key committed first; nothing written yet.
            return self._replay_on(conn, member_id, attempt.key)
        balance = post_entry_on(
            conn, member_id, -priced.total, kind="purchase", at=now, order_id=order_id,
            spend_delta=priced.total,
        )  # fmt: skip
        if priced.points_used:
            points.redeem_on(conn, member_id, priced.points_used, order_id=order_id, at=now)
        secrets = claim_codes_on(conn, product_id, quantity, order_id, now, member_id)
        if len(secrets) < quantity:
            raise ShopError(ErrorCode.OUT_OF_STOCK, available=len(secrets), sku=facts.sku)
        key_of_order = f"order:{order_id}"
        earned = priced.total // 100 * self._ladder.points.purchase_points_per_yuan
        points.award_points_on(
            conn, self._ladder, member_id, source="purchase", source_key=key_of_order,
            amount=earned, at=now,
        )  # fmt: skip
        activity.record_on(conn, member_id, "purchase", key_of_order, at=now)
        settle = None
        if self._on_paid is not None:
            standing = _standing_after(row, member_id, priced.total)
            settle = settlement_due_on(conn, self._ladder, member_id, standing, now)
        order = OrderView(
            id=order_id,
            member_id=member_id,
            product_id=product_id,
            sku=facts.sku,
            product_names={"zh_CN": row.name_zh, "en": row.name_en},
            quantity=quantity,
            tier_key=priced.tier_key,
            unit_base_price=priced.unit_base_price,
            unit_price=priced.unit_price,
            discount=priced.discount,
            points_used=priced.points_used,
            total=priced.total,
            status=OrderStatus.PAID,
            created_at=now.astimezone(UTC),
        )
        return _Paid(order=order, secrets=secrets, balance=balance, created=True, settle=settle)

    def _replay_on(self, conn: Connection, member_id: int, key: str) -> _Paid:
        """The order an idempotency key already paid for, as it stands, with its codes."""
        row = conn.execute(
            _views()
            .add_columns(Member.balance)
            .join(Member, Member.id == Order.member_id)
            .where(Order.member_id == member_id, Order.idempotency_key == key)
        ).one()
        order = _view(row)
        secrets = conn.scalars(
            select(Code.secret).where(Code.order_id == order.id).order_by(Code.id)
        ).all()
        return _Paid(order=order, secrets=list(secrets), balance=row.balance, created=False)

    async def _after_paid(self, order: OrderView, settle: bool | None) -> Promotion | None:
        if self._on_paid is None:
            return None
        try:
            return await self._on_paid(order, settle)
        except Exception:
            # The purchase stands; a missed promotion is caught by the next evaluation.
            log.exception("after-purchase hook failed for order %s", order.id)
            return None

    async def mark_delivered(self, order_id: int) -> CommissionCredit | None:
        """The codes reached the buyer's chat; the buyer's referrer earns commission.

        Only the one call that moves the order from paid to delivered credits it, in the
        same transaction, so a redelivery or a racing delivery credits nothing more. That
        call alone returns the credit (None from every other, and when nothing was
        earned), so the referrer can be told exactly once.
        """
        now = self._clock.now()
        async with self._db.transaction() as session:
            moved = (
                await session.execute(
                    update(Order)
                    .where(Order.id == order_id, Order.status == OrderStatus.PAID.value)
                    .values(status=OrderStatus.DELIVERED.value, delivered_at=now)
                    .returning(Order.member_id, Order.total)
                )
            ).first()
            if moved is None:
                return None
            buyer_id, total = moved
            return await run_on(
                session, commission_on, self._ladder, order_id, buyer_id, total, now
            )

    # --- refunds -------------------------------------------------------------------------

    async def refund(self, order_id: int, *, actor: str, reason: str) -> OrderView:
        """Give the money back and undo what the order earned; the codes stay retired.

        Its spend stops counting toward tiers, its purchase points and its referrer's
        commission are taken back (never below zero, the shortfall recorded) and redeemed
        points are returned.
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
            order.status, order.refunded_at = OrderStatus.REFUNDED.value, now
            order.failure = reason[:64]
            if order.total:
                await run_on(
                    session,
                    post_entry_on,
                    order.member_id,
                    order.total,
                    kind="refund",
                    at=now,
                    order_id=order.id,
                    reason=reason,
                    actor=actor,
                    spend_delta=-order.total,
                )
            await run_on(session, reverse_commission_on, order.id, now)
            await points.reverse(session, order.member_id, f"order:{order.id}", at=now)
            await points.restore_redeemed(session, order.id, at=now)
            return await self._owned(session, order.member_id, order.id)

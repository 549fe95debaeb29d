"""The shop's tables.

Money is integer 分 and points are integers; every rule that must hold under
concurrency (one code per order, balance never negative, one award per natural key,
one check-in per day) is a constraint here, not only a check in Python.
Rows never leave `core/`: services return the DTOs in `core.dto`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, ClassVar, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def max_length(column: Any) -> int:
    """The size of a `String(n)` column, for code that cuts outside text to fit it."""
    column_type = column.type
    if not isinstance(column_type, String) or column_type.length is None:
        raise TypeError(f"{column} is not a String column with a length")
    return column_type.length


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


# --- members -------------------------------------------------------------------------


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        # Room on each page for the row's next version: purchases, check-ins and the
        # quarterly review update member rows all the time (migration 0015).
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    #: Telegram usernames are at most 32 characters; longer outside input is cut to fit.
    username: Mapped[str | None] = mapped_column(String(64), index=True)
    #: Telegram's first (64) + space + last name (64) can be 129 characters: `register` cuts
    #: the last one. Widening would rebuild `members` on SQLite, which every table refers to.
    display_name: Mapped[str] = mapped_column(String(128), default="")
    locale: Mapped[str | None] = mapped_column(String(8))
    referral_code: Mapped[str] = mapped_column(String(16), unique=True)
    #: Indexed: the tier metrics count a member's active referrals after every purchase.
    referrer_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    #: Wallet balance in 分; only ever changed together with a `wallet_entries` row.
    balance: Mapped[int] = mapped_column(Integer, default=0)
    #: Lifetime paid spend in 分, kept in the purchase statement itself (refunds subtract).
    total_spent: Mapped[int] = mapped_column(Integer, default=0)
    #: Growth points (成长值) from activity; separate from spendable points.
    growth_points: Mapped[int] = mapped_column(Integer, default=0)
    #: Joint campaigns taken part in, set by an admin (black-diamond rule).
    joint_campaigns: Mapped[int] = mapped_column(Integer, default=0)
    tier_key: Mapped[str] = mapped_column(String(32), default="member")
    #: Why the member holds the tier: rules, admin, trial or invite.
    tier_source: Mapped[str] = mapped_column(String(16), default="rules")
    #: Tier to fall back to when a fast-track trial ends.
    trial_base_tier: Mapped[str | None] = mapped_column(String(32))
    trial_until: Mapped[datetime | None]
    #: Downgrade protection (降级保护): the tier is kept until then, with a warning.
    protected_until: Mapped[datetime | None]
    quarters_below: Mapped[int] = mapped_column(Integer, default=0)
    unreachable: Mapped[bool] = mapped_column(Boolean, default=False)
    is_staff: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column()


class Violation(Base):
    __tablename__ = "violations"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    serious: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()


class TierChange(Base):
    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    from_tier: Mapped[str] = mapped_column(String(32))
    to_tier: Mapped[str] = mapped_column(String(32))
    #: An admin's typed reason (`cardshop set-tier --reason`), or the rule that moved them.
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64), default="system")
    created_at: Mapped[datetime] = mapped_column()


class TierReview(Base):
    """One quarterly review result per member; unique so a re-run changes nothing."""

    __tablename__ = "tier_reviews"
    __table_args__ = (UniqueConstraint("member_id", "quarter"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    quarter: Mapped[str] = mapped_column(String(7))  # e.g. 2026Q4
    tier_key: Mapped[str] = mapped_column(String(32))
    met_maintenance: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str] = mapped_column(String(16))  # kept, warned, protected, dropped
    created_at: Mapped[datetime] = mapped_column()


# --- catalog and stock ------------------------------------------------------------------


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name_zh: Mapped[str] = mapped_column(String(128))
    name_en: Mapped[str] = mapped_column(String(128))
    sort: Mapped[int] = mapped_column(Integer, default=0)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("base_price > 0", name="base_price_positive"),
        CheckConstraint("pool IN ('basic', 'selected', 'exclusive')", name="pool_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), index=True)
    name_zh: Mapped[str] = mapped_column(String(128))
    name_en: Mapped[str] = mapped_column(String(128))
    description_zh: Mapped[str] = mapped_column(Text, default="")
    description_en: Mapped[str] = mapped_column(Text, default="")
    base_price: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str] = mapped_column(String(16), default="basic")
    max_per_order: Mapped[int | None] = mapped_column(Integer)
    low_stock_threshold: Mapped[int] = mapped_column(Integer, default=5)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    sort: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column()


class CatalogRevision(Base):
    """One row counting the changes to the catalog, for the caches of every process.

    Database triggers (migration 0008) bump it in the transaction of every insert,
    update or delete on `categories`, `products` and `tier_prices`, whoever writes them
    (the bot, a `cardshop` command, another worker, a shell): a process that read the
    same revision in the same statement as its stock counts knows its copy of the
    catalog is current (`core.catalog`). No row yet means revision 0.
    """

    __tablename__ = "catalog_revision"

    id: Mapped[int] = mapped_column(primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)


class TierPrice(Base):
    """A fixed price for one tier on one product, instead of the tier's discount."""

    __tablename__ = "tier_prices"
    __table_args__ = (CheckConstraint("price > 0", name="price_positive"),)

    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), primary_key=True)
    tier_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    price: Mapped[int] = mapped_column(Integer)


class MemberPrice(Base):
    """A per-account price (strategic partners)."""

    __tablename__ = "member_prices"
    __table_args__ = (CheckConstraint("price > 0", name="price_positive"),)

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), primary_key=True)
    price: Mapped[int] = mapped_column(Integer)


class Code(Base):
    """One code (卡密), encrypted at rest; `digest` is a keyed hash for dedupe.

    The digest is unique across the shop: a code can be sold once, under one product.
    """

    __tablename__ = "codes"
    __table_args__ = (
        UniqueConstraint("digest"),
        Index(
            "ix_codes_available",
            "product_id",
            "id",
            sqlite_where=text("order_id IS NULL AND reserved_by IS NULL"),
            postgresql_where=text("order_id IS NULL AND reserved_by IS NULL"),
        ),
        Index(
            "ix_codes_reserved",
            "reserved_by",
            "product_id",
            "id",
            sqlite_where=text("order_id IS NULL AND reserved_by IS NOT NULL"),
            postgresql_where=text("order_id IS NULL AND reserved_by IS NOT NULL"),
        ),
        # An order's codes. Partial, so that no `order_id IS NULL` query can pick it: once
        # `ANALYZE` has run, SQLite would count stock through a plain index on `order_id`
        # (every unsold code, all products) instead of `ix_codes_available`.
        Index(
            "ix_codes_sold",
            "order_id",
            sqlite_where=text("order_id IS NOT NULL"),
            postgresql_where=text("order_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    #: The member holding this unsold code under a reservation (core/reservations.py).
    reserved_by: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    digest: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    added_at: Mapped[datetime] = mapped_column()
    sold_at: Mapped[datetime | None]


class Reservation(Base):
    """A member's hold on codes of one product until `expires_at` (库存预留).

    The held codes carry `reserved_by`; this row is the hold's bookkeeping (how many,
    until when, warned, how it ended). At most one open hold per member and product.
    """

    __tablename__ = "reservations"
    __table_args__ = (
        Index(
            "ux_reservations_open",
            "member_id",
            "product_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index("ix_reservations_expires", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    warned_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    #: expired, released (by the member) or cancelled (by an admin).
    end_reason: Mapped[str | None] = mapped_column(String(16))


# --- reseller API ---------------------------------------------------------------------------


class ApiKey(Base):
    """A member's reseller API key (core/api_keys.py): a public id and a secret kept
    encrypted with the codes' vault, since the server needs it back in clear to check
    each request's HMAC. Revoked keys stay, for the audit trail and the member's list."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    #: Fernet token of the secret (`CodeVault.encrypt`), never the secret itself.
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    label: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class ApiNonce(Base):
    """A nonce a signed request used, kept until its timestamp leaves the replay window
    (when no Redis holds them); the primary key refuses a second use."""

    __tablename__ = "api_nonces"
    __table_args__ = (Index("ix_api_nonces_expires_at", "expires_at"),)

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column()


# --- money ------------------------------------------------------------------------------


class OrderStatus(StrEnum):
    """Where an order stands: placed → paid → delivered, or failed → refunded."""

    PLACED = "placed"
    PAID = "paid"
    DELIVERED = "delivered"
    FAILED = "failed"
    REFUNDED = "refunded"


#: Paid for and not given back: what spend, sales and reviews count.
PAID_STATUSES: Final = (OrderStatus.PAID, OrderStatus.DELIVERED)
#: What a refund may still undo.
REFUNDABLE_STATUSES: Final = (*PAID_STATUSES, OrderStatus.FAILED)
#: Orders whose outcome is known, as the fulfilment rate counts them.
SETTLED_STATUSES: Final = (*REFUNDABLE_STATUSES, OrderStatus.REFUNDED)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("member_id", "idempotency_key"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("total >= 0", name="total_not_negative"),
        Index("ix_orders_member_created", "member_id", "created_at"),
        #: The tier metrics read spend and purchases by when orders were paid, and an
        #: active referral is one with an order paid in the last year (core/tiers/metrics.py).
        Index("ix_orders_member_paid", "member_id", "paid_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    idempotency_key: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    tier_key: Mapped[str] = mapped_column(String(32))
    unit_base_price: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(Integer)
    discount: Mapped[int] = mapped_column(Integer)
    points_used: Mapped[int] = mapped_column(Integer, default=0)
    points_value: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer)
    #: An `OrderStatus`.
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.PLACED.value)
    failure: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()
    paid_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    refunded_at: Mapped[datetime | None]


class PaymentState(StrEnum):
    """Where a top-up stands (see `Payment`)."""

    PENDING = "pending"
    PAID = "paid"
    CREDITED = "credited"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    EXPIRED = "expired"


class Payment(Base):
    """One top-up: money asked of a provider (Telegram Stars, 易支付) for a member's wallet.

    pending → credited (the ledger's `topup` row, with this id, in the same transaction);
    pending or expired → credited also when money arrives late, since money received is
    never dropped; → paid when the provider confirmed money that cannot be credited
    automatically (`note` says why, an admin decides); credited → refunding (wallet
    debited) → refunded, or back to credited when the provider refuses; pending → expired.
    A provider's charge id is unique per provider, and the ledger holds one `topup` row
    per payment, so a replayed or concurrent notification can credit nothing twice.
    """

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_charge_id"),
        CheckConstraint(
            "state IN ('pending', 'paid', 'credited', 'refunding', 'refunded', 'expired')",
            name="state_known",
        ),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("charge_amount > 0", name="charge_amount_positive"),
        Index("ix_payments_state_expires", "state", "expires_at"),
        Index("ix_payments_member_created", "member_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Our id at the provider (the Stars invoice payload, 易支付's out_trade_no): random,
    #: so nobody can guess another member's top-up.
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    provider: Mapped[str] = mapped_column(String(16))  # stars, epay
    method: Mapped[str] = mapped_column(String(16))  # stars, alipay, wxpay, qqpay
    #: 分 credited to the wallet.
    amount: Mapped[int] = mapped_column(Integer)
    #: What the provider charges: a number of Stars, or 分 asked at the gateway.
    charge_amount: Mapped[int] = mapped_column(Integer)
    charge_currency: Mapped[str] = mapped_column(String(8))  # XTR, CNY
    #: A `PaymentState`.
    state: Mapped[str] = mapped_column(String(16), default=PaymentState.PENDING.value)
    #: telegram_payment_charge_id or 易支付's trade_no, once the money came (live Stars
    #: charge ids run past 128 characters).
    provider_charge_id: Mapped[str | None] = mapped_column(String(255))
    #: Buy in one step: the order to place once the money lands (`core.payments.BuyIntent`).
    then_buy: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Why money came but was not credited, why a refund was refused, a shortfall.
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    credited_at: Mapped[datetime | None]
    refunded_at: Mapped[datetime | None]


class WalletEntry(Base):
    """The append-only wallet ledger; `balance_after` lets anyone audit the chain.

    A top-up's credit carries its payment's id, unique among `topup` rows: the database
    itself refuses a second credit of one payment. A referrer's `commission` and its
    `commission_rev` carry the order's id, each unique per order likewise.
    """

    __tablename__ = "wallet_entries"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('topup', 'purchase', 'refund', 'adjustment', 'topup_refund', "
            "'commission', 'commission_rev')",
            name="kind_known",
        ),
        CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
        Index("ix_wallet_entries_member_id", "member_id", "id"),
        Index(
            "uq_wallet_entries_topup_payment",
            "payment_id",
            unique=True,
            sqlite_where=text("kind = 'topup'"),
            postgresql_where=text("kind = 'topup'"),
        ),
        Index(
            "uq_wallet_entries_commission_order",
            "order_id",
            unique=True,
            sqlite_where=text("kind = 'commission'"),
            postgresql_where=text("kind = 'commission'"),
        ),
        Index(
            "uq_wallet_entries_commission_reversal_order",
            "order_id",
            unique=True,
            sqlite_where=text("kind = 'commission_rev'"),
            postgresql_where=text("kind = 'commission_rev'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Integer)
    balance_after: Mapped[int] = mapped_column(Integer)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    #: The top-up this row credits, takes back (`topup_refund`) or restores (`adjustment`).
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(64), default="system")
    created_at: Mapped[datetime] = mapped_column()


# --- points, check-ins, activity ---------------------------------------------------------


class PointLot(Base):
    """Points earned at once from one source; `source_key` makes every award happen once."""

    __tablename__ = "point_lots"
    __table_args__ = (
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_in_range"),
        Index("ix_point_lots_member_expiry", "member_id", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    source: Mapped[str] = mapped_column(String(16))
    source_key: Mapped[str] = mapped_column(String(96), unique=True)
    amount: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    earned_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime]
    warned_at: Mapped[datetime | None]


class PointSpend(Base):
    """Points taken from a lot: by an order (redemption), expiry or a reversal."""

    __tablename__ = "point_spends"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("point_lots.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    reason: Mapped[str] = mapped_column(String(16))  # redeem, expire, reverse
    amount: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column()


class PointShortfall(Base):
    """Points a reversal could not take back because they were already spent."""

    __tablename__ = "point_shortfalls"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    source_key: Mapped[str] = mapped_column(String(96), unique=True)
    amount: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column()


class CheckIn(Base):
    __tablename__ = "checkins"
    __table_args__ = (UniqueConstraint("member_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    day: Mapped[date] = mapped_column(Date)
    streak: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column()


class ActivityEvent(Base):
    """What a member did, feeding tier metrics; `ref` is unique per kind."""

    __tablename__ = "activity_events"
    __table_args__ = (
        UniqueConstraint("kind", "ref"),
        Index("ix_activity_events_member_kind", "member_id", "kind", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))  # purchase, checkin, review, ticket, active
    ref: Mapped[str] = mapped_column(String(96))
    growth: Mapped[int] = mapped_column(Integer, default=0)
    occurred_at: Mapped[datetime] = mapped_column()


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    rating: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column()


class RiskEvent(Base):
    """What risk control counts and flags (seed 003), per member.

    `failure`: a refused purchase, keyed by its idempotency key so a double tap or a
    redelivered update counts once. `trip`: a limit the member ran into, keyed by the
    oldest event it counted, so one stretch of refusals is flagged (and staff told) once;
    `retry_at` is when purchases open again, `notified_at` when staff were told.
    """

    __tablename__ = "risk_events"
    __table_args__ = (
        UniqueConstraint("member_id", "kind", "key"),
        CheckConstraint("kind IN ('failure', 'trip')", name="kind_known"),
        Index("ix_risk_events_member_kind_created", "member_id", "kind", "created_at"),
        Index(
            "ix_risk_events_unnotified",
            "id",
            sqlite_where=text("kind = 'trip' AND notified_at IS NULL"),
            postgresql_where=text("kind = 'trip' AND notified_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(96))
    #: The refusal's error code (failure) or the limit run into (trip: orders, failures).
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column()
    retry_at: Mapped[datetime | None]
    notified_at: Mapped[datetime | None]


# --- support ------------------------------------------------------------------------------


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        CheckConstraint("csat IS NULL OR csat BETWEEN 1 AND 5", name="csat_range"),
        Index("ix_tickets_status_due", "status", "first_response_due"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    category: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    tier_key: Mapped[str] = mapped_column(String(32))
    #: open → waiting (for the member, clock paused) → resolved → closed.
    status: Mapped[str] = mapped_column(String(16), default="open")
    first_response_due: Mapped[datetime]
    first_response_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    assigned_staff_id: Mapped[int | None] = mapped_column(BigInteger)
    reopened: Mapped[int] = mapped_column(Integer, default=0)
    warned_at: Mapped[datetime | None]
    breached_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    csat: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column()


class TicketMessage(Base):
    __tablename__ = "ticket_messages"
    __table_args__ = (Index("ix_ticket_messages_staff_msg", "staff_chat_message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    author: Mapped[str] = mapped_column(String(8))  # member, staff
    staff_telegram_id: Mapped[int | None] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    #: The copy of this message in the staff chat, so a reply there routes back by id.
    staff_chat_message_id: Mapped[int | None] = mapped_column(BigInteger)
    delivered: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column()


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ManagerAssignment(Base):
    __tablename__ = "manager_assignments"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), index=True)
    assigned_at: Mapped[datetime] = mapped_column()


class ManagerMessage(Base):
    """The thread between a VIP and their manager, both directions."""

    __tablename__ = "manager_messages"
    __table_args__ = (Index("ix_manager_messages_relay", "relay_message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    direction: Mapped[str] = mapped_column(String(8))  # in (member → manager), out
    text: Mapped[str] = mapped_column(Text)
    #: The relayed copy's message id in the manager's (or staff) chat.
    relay_message_id: Mapped[int | None] = mapped_column(BigInteger)
    delivered: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column()


# --- chat plumbing kept by the shop ---------------------------------------------------------


class ProcessedUpdate(Base):
    """Inbound update ids already handled, so a redelivered update has no second effect."""

    __tablename__ = "processed_updates"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[datetime] = mapped_column()


class ConversationState(Base):
    """What a chat is in the middle of (choosing a quantity, writing a ticket)."""

    __tablename__ = "conversation_states"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column()


# --- operations ---------------------------------------------------------------------------


class AuditEntry(Base):
    """One admin action (or a refused attempt): who, what, on what, and the state around it."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_actor", "actor", "id"),
        Index("ix_audit_log_action", "action", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))  # tg:123, cli:root
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(128), default="")
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column()


class JobRun(Base):
    """One run of a scheduled job for one period; unique so a restart never repeats it."""

    __tablename__ = "job_runs"
    __table_args__ = (UniqueConstraint("job", "period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(32))  # 2026Q3, 2026-11-22, 2026-11-22T10:05
    started_at: Mapped[datetime]
    #: Unset while running, or when the run crashed: the next tick runs it again.
    finished_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The worker running it, and until when its lease holds without a heartbeat: no
    #: other worker starts the run before then (`core.jobs`); unset when free.
    held_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]


class JobNotice(Base):
    """A notice a job sent, by natural key, so a retried run never sends it twice."""

    __tablename__ = "job_notices"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    created_at: Mapped[datetime] = mapped_column()


class LowStockAlert(Base):
    """A product the admins were told is low; deleted when a restock lifts it, to re-arm."""

    __tablename__ = "low_stock_alerts"

    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), primary_key=True)
    stock: Mapped[int] = mapped_column(Integer)
    alerted_at: Mapped[datetime] = mapped_column()


class Broadcast(Base):
    __tablename__ = "broadcasts"
    __table_args__ = (CheckConstraint("status IN ('running', 'finished')", name="status_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_by: Mapped[str] = mapped_column(String(64))
    #: `all` or a tier key, resolved into deliveries when the broadcast is created.
    audience: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    button_text: Mapped[str | None] = mapped_column(String(64))
    button_url: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None]


class BroadcastDelivery(Base):
    """One member of a broadcast's audience; claimed (`sending`) before the send."""

    __tablename__ = "broadcast_deliveries"
    __table_args__ = (
        UniqueConstraint("broadcast_id", "member_id"),
        CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'blocked', 'failed')", name="status_known"
        ),
        Index("ix_broadcast_deliveries_status", "broadcast_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcasts.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(64))
    sent_at: Mapped[datetime | None]
    #: When a worker took it (`sending`): a claim this old belongs to a dead worker.
    claimed_at: Mapped[datetime | None]

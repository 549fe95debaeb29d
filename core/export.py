"""CSV exports of orders, the wallet ledger and top-ups (对账) for a range of shop-local days.

The bytes are UTF-8 with a BOM, since Excel reads a BOM-less CSV in the system code page
and garbles Chinese product names. Amounts are yuan with two decimals; times are in the
shop's time zone. Free-text cells that a spreadsheet would run as a formula (`=`, `+`,
`-`, `@` first) are prefixed with `'`, so an exported reason can never run in Excel.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from core.errors import ErrorCode, ShopError
from core.members import load_member
from core.models import Member, Order, Payment, Product, WalletEntry
from core.money import format_plain
from core.payments.stars import XTR
from core.tiers.moves import Tiers
from core.uow import Database

BOM = "\ufeff"
#: Where `cardshop export` writes when given no --out, under DATA_DIR (not the working
#: directory, which is often the repository).
EXPORTS_DIR = "exports"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

ORDER_COLUMNS = (
    "order_id",
    "created_at",
    "paid_at",
    "member_id",
    "telegram_id",
    "sku",
    "product_zh",
    "product_en",
    "quantity",
    "tier",
    "unit_price",
    "discount",
    "points_used",
    "total",
    "status",
    "refunded_at",
)
LEDGER_COLUMNS = (
    "entry_id",
    "created_at",
    "member_id",
    "telegram_id",
    "kind",
    "amount",
    "balance_after",
    "order_id",
    "payment_id",
    "reason",
    "actor",
)
#: Top-ups by method, with the provider's own ids for reconciling against its statement.
PAYMENT_COLUMNS = (
    "payment_id",
    "created_at",
    "credited_at",
    "member_id",
    "telegram_id",
    "provider",
    "method",
    "amount",
    "charge_amount",
    "charge_currency",
    "state",
    "reference",
    "provider_charge_id",
    "refunded_at",
    "note",
)


def export_path(data_dir: Path, kind: str, date_from: date, date_to: date) -> Path:
    """`data/exports/orders-2026-11-01-2026-11-30.csv`, named as the bot names its files."""
    return data_dir / EXPORTS_DIR / f"{kind}-{date_from}-{date_to}.csv"


def _text(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    buffer.write(BOM)
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


class Exports:
    def __init__(self, db: Database, zone: ZoneInfo, tiers: Tiers) -> None:
        self._db = db
        self._zone = zone
        self._tiers = tiers

    def _range(self, date_from: date, date_to: date) -> tuple[datetime, datetime]:
        """Both days included, from local midnight to the local midnight after `date_to`."""
        if date_from > date_to:
            raise ShopError(ErrorCode.INVALID_INPUT, field="date_range", reason="reversed")
        start = datetime.combine(date_from, time.min, self._zone).astimezone(UTC)
        end = datetime.combine(date_to + timedelta(days=1), time.min, self._zone)
        return start, end.astimezone(UTC)

    def _local(self, moment: datetime | None) -> str:
        return moment.astimezone(self._zone).isoformat(timespec="seconds") if moment else ""

    async def orders_csv(
        self, date_from: date, date_to: date, member_id: int | None = None
    ) -> bytes:
        """Orders placed in the range, oldest first (one member's when `member_id` is given)."""
        start, end = self._range(date_from, date_to)
        query = (
            select(Order, Product.sku, Product.name_zh, Product.name_en, Member.telegram_id)
            .join(Product, Product.id == Order.product_id)
            .join(Member, Member.id == Order.member_id)
            .where(Order.created_at >= start, Order.created_at < end)
            .order_by(Order.created_at, Order.id)
        )
        if member_id is not None:
            query = query.where(Order.member_id == member_id)
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
        return _csv(
            ORDER_COLUMNS,
            (
                (
                    order.id,
                    self._local(order.created_at),
                    self._local(order.paid_at),
                    order.member_id,
                    telegram_id if telegram_id is not None else "",
                    _text(sku),
                    _text(name_zh),
                    _text(name_en),
                    order.quantity,
                    order.tier_key,
                    format_plain(order.unit_price),
                    format_plain(order.discount),
                    order.points_used,
                    format_plain(order.total),
                    order.status,
                    self._local(order.refunded_at),
                )
                for order, sku, name_zh, name_en, telegram_id in rows
            ),
        )

    async def own_orders_csv(self, member_id: int, date_from: date, date_to: date) -> bytes:
        """A member's own orders, if their tier may export (NOT_ALLOWED_FOR_TIER otherwise)."""
        async with self._db.read() as session:
            tier_key = (await load_member(session, member_id)).tier_key
        self._tiers.require(tier_key, "export")
        return await self.orders_csv(date_from, date_to, member_id)

    async def ledger_csv(
        self, date_from: date, date_to: date, member_id: int | None = None
    ) -> bytes:
        """Wallet ledger rows written in the range, in ledger order."""
        start, end = self._range(date_from, date_to)
        query = (
            select(WalletEntry, Member.telegram_id)
            .join(Member, Member.id == WalletEntry.member_id)
            .where(WalletEntry.created_at >= start, WalletEntry.created_at < end)
            .order_by(WalletEntry.id)
        )
        if member_id is not None:
            query = query.where(WalletEntry.member_id == member_id)
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
        return _csv(
            LEDGER_COLUMNS,
            (
                (
                    entry.id,
                    self._local(entry.created_at),
                    entry.member_id,
                    telegram_id if telegram_id is not None else "",
                    entry.kind,
                    format_plain(entry.amount),
                    format_plain(entry.balance_after),
                    entry.order_id or "",
                    entry.payment_id or "",
                    _text(entry.reason),
                    _text(entry.actor),
                )
                for entry, telegram_id in rows
            ),
        )

    async def payments_csv(self, date_from: date, date_to: date) -> bytes:
        """Top-ups started in the range, oldest first, each with its method and state.

        A Stars charge is a count of Stars (`XTR`), a gateway's is yuan; `amount` is
        always the yuan credited to the wallet.
        """
        start, end = self._range(date_from, date_to)
        query = (
            select(Payment, Member.telegram_id)
            .join(Member, Member.id == Payment.member_id)
            .where(Payment.created_at >= start, Payment.created_at < end)
            .order_by(Payment.created_at, Payment.id)
        )
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
        return _csv(
            PAYMENT_COLUMNS,
            (
                (
                    payment.id,
                    self._local(payment.created_at),
                    self._local(payment.credited_at),
                    payment.member_id,
                    telegram_id if telegram_id is not None else "",
                    payment.provider,
                    payment.method,
                    format_plain(payment.amount),
                    payment.charge_amount
                    if payment.charge_currency == XTR
                    else format_plain(payment.charge_amount),
                    payment.charge_currency,
                    payment.state,
                    payment.reference,
                    _text(payment.provider_charge_id or ""),
                    self._local(payment.refunded_at),
                    _text(payment.note),
                )
                for payment, telegram_id in rows
            ),
        )

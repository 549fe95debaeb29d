"""CSV exports: the rows of a shop-local date range, UTF-8 with BOM, tier-gated self-export."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from bot import cli
from core.clock import ManualClock
from core.errors import ErrorCode, ShopError
from core.shop import Shop
from tests.conftest import SHOP_ZONE, TEST_KEY
from tests.factories import make_member, make_product


def _rows(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


async def _history(shop: Shop) -> tuple[int, int, list[int]]:
    """Two buyers; orders on 11-20 (Shanghai), 11-21 23:50 and 11-22 00:10."""
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    gold = await make_member(shop.db, shop.clock, balance=50_000, tier="gold")
    plain = await make_member(shop.db, shop.clock, balance=50_000)
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1_000)
    orders = []
    for moment, buyer in [
        (datetime(2026, 11, 20, 12, 0, tzinfo=SHOP_ZONE), gold),
        (datetime(2026, 11, 21, 23, 50, tzinfo=SHOP_ZONE), plain),
        (datetime(2026, 11, 22, 0, 10, tzinfo=SHOP_ZONE), gold),
    ]:
        clock.set(moment)
        purchase = await shop.orders.place(buyer, product, 1, idempotency_key=moment.isoformat())
        orders.append(purchase.order.id)
    await shop.operations.admin.adjust("tg:1", plain, -100, reason="=HYPERLINK(1)")
    return gold, plain, orders


async def test_orders_csv_for_a_local_date_range(shop: Shop) -> None:
    gold, plain, orders = await _history(shop)
    exports = shop.operations.exports

    rows = _rows(await exports.orders_csv(date(2026, 11, 21), date(2026, 11, 21)))
    header, *body = rows
    assert header[:6] == ["order_id", "created_at", "paid_at", "member_id", "telegram_id", "sku"]
    assert len(body) == 1
    row = dict(zip(header, body[0], strict=True))
    assert row["order_id"] == str(orders[1])
    assert row["created_at"] == "2026-11-21T23:50:00+08:00"
    assert row["member_id"] == str(plain)
    assert row["product_zh"].startswith("商品")
    assert (row["quantity"], row["total"], row["status"]) == ("1", "9.50", "paid")

    both_days = _rows(await exports.orders_csv(date(2026, 11, 21), date(2026, 11, 22)))
    assert [r[0] for r in both_days[1:]] == [str(orders[1]), str(orders[2])]
    mine = _rows(await exports.orders_csv(date(2026, 11, 1), date(2026, 11, 30), gold))
    assert [r[0] for r in mine[1:]] == [str(orders[0]), str(orders[2])]

    with pytest.raises(ShopError) as reversed_range:
        await exports.orders_csv(date(2026, 11, 22), date(2026, 11, 21))
    assert reversed_range.value.code is ErrorCode.INVALID_INPUT


async def test_ledger_csv_escapes_formulas(shop: Shop) -> None:
    _, plain, _ = await _history(shop)
    rows = _rows(await shop.operations.exports.ledger_csv(date(2026, 11, 22), date(2026, 11, 22)))
    header, *body = rows
    entries = [dict(zip(header, r, strict=True)) for r in body]
    # Both members' opening top-ups were written at 10:00 on 11-22, like the adjustment.
    assert [(e["kind"], e["amount"]) for e in entries] == [
        ("topup", "500.00"),
        ("topup", "500.00"),
        ("purchase", "-8.50"),
        ("adjustment", "-1.00"),
    ]
    adjustment = entries[3]
    assert adjustment["member_id"] == str(plain)
    assert adjustment["reason"] == "'=HYPERLINK(1)"
    assert (adjustment["actor"], adjustment["balance_after"]) == ("tg:1", "489.50")


async def test_self_export_needs_the_tier_capability(shop: Shop) -> None:
    gold, plain, orders = await _history(shop)
    exports = shop.operations.exports
    day = date(2026, 11, 22)

    with pytest.raises(ShopError) as refused:
        await exports.own_orders_csv(plain, day - timedelta(days=5), day)
    assert refused.value.code is ErrorCode.NOT_ALLOWED_FOR_TIER
    assert refused.value.params == {"capability": "export", "required": "gold"}

    rows = _rows(await exports.own_orders_csv(gold, day - timedelta(days=5), day))
    assert [r[0] for r in rows[1:]] == [str(orders[0]), str(orders[2])]


async def test_export_command_writes_the_file_and_audits(
    shop: Shop,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, _, orders = await _history(shop)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    out = tmp_path / "orders.csv"

    argv = ["export", "orders", "--from", "2026-11-20", "--to", "2026-11-21", "--out", str(out)]
    assert await asyncio.to_thread(cli.main, argv) == 0

    rows = _rows(out.read_bytes())
    assert [r[0] for r in rows[1:]] == [str(orders[0]), str(orders[1])]
    (entry,) = await shop.operations.audit.recent(action="export")
    assert entry.actor.startswith("cli:")
    assert entry.after is not None
    assert (entry.target, entry.after["from"], entry.after["to"]) == (
        "orders",
        "2026-11-20",
        "2026-11-21",
    )

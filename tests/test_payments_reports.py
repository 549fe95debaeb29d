"""Top-ups in the shop's reports: stats and exports by method, `cardshop payments`."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot import cli
from bot.handlers.admin_stats import money_in_line
from bot.i18n import Translator
from core.clock import ManualClock
from core.config import Settings
from core.errors import ErrorCode, ShopError
from core.payments import PaymentView
from core.shop import Shop
from tests.conftest import START, TEST_KEY
from tests.factories import make_member

KEY = "k"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "stars_per_yuan": Decimal(2),
            "public_url": "https://shop.example.com",
            "epay_url": "https://pay.example.com",
            "epay_pid": "1001",
            "epay_key": SecretStr(KEY),
            "epay_methods": ("alipay", "wxpay"),
        }
    )


def _rows(data: bytes) -> list[dict[str, str]]:
    header, *body = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    return [dict(zip(header, row, strict=True)) for row in body]


async def _stars(shop: Shop, member: int, telegram_id: int, amount: int, charge: str):
    checkout = await shop.payments.start(member, amount, "stars")
    assert checkout.invoice is not None
    invoice = checkout.invoice
    return await shop.payments.credit_stars(
        telegram_id, invoice.payload, "XTR", invoice.stars, charge
    )


async def _epay(shop: Shop, member: int, amount: int, trade_no: str) -> PaymentView:
    reference = (await shop.payments.start(member, amount, "alipay")).payment.reference
    params = {
        "pid": "1001",
        "trade_no": trade_no,
        "out_trade_no": reference,
        "type": "alipay",
        "money": f"{amount // 100}.{amount % 100:02d}",
        "trade_status": "TRADE_SUCCESS",
    }
    text = "&".join(f"{k}={v}" for k, v in sorted(params.items())) + KEY
    credit = await shop.payments.credit_epay(
        {**params, "sign": hashlib.md5(text.encode()).hexdigest()}
    )
    return credit.payment


async def _scene(shop: Shop) -> tuple[int, list[PaymentView]]:
    """Kept: Stars ¥10 and ¥5, 支付宝 ¥12.50; refunded: Stars ¥3; pending: 微信 ¥20."""
    member = await make_member(shop.db, shop.clock, telegram_id=8001)
    kept = [
        (await _stars(shop, member, 8001, 1000, "s1")).payment,
        (await _stars(shop, member, 8001, 500, "s2")).payment,
        await _epay(shop, member, 1250, "E1"),
    ]
    refunded = (await _stars(shop, member, 8001, 300, "s3")).payment

    async def refunder(_: PaymentView) -> None:
        return None

    await shop.payments.refund("tg:1", refunded.id, refunder)
    await shop.payments.start(member, 2000, "wxpay")
    return member, kept


async def test_stats_count_money_in_by_method(shop: Shop) -> None:
    await _scene(shop)

    summary = await shop.operations.stats.summary(1)

    assert {m: (t.count, t.amount) for m, t in summary.top_ups.items()} == {
        "stars": (2, 1500),
        "alipay": (1, 1250),
    }
    assert (await shop.operations.stats.summary(7)).top_ups == summary.top_ups


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en", "Money in: ¥27.50 (⭐ Telegram Stars ¥15.00 ×2, Alipay ¥12.50 ×1)"),
        ("zh_CN", "充值到账：¥27.50（⭐ Telegram 星星 ¥15.00 ×2、支付宝 ¥12.50 ×1）"),
    ],
)
async def test_the_admin_stats_screen_shows_money_in_by_method(
    shop: Shop, locale: str, expected: str
) -> None:
    await _scene(shop)
    summary = await shop.operations.stats.summary(1)
    t: Any = Translator(locale, currency="CNY", zone=shop.settings.zone)

    assert money_in_line(t, summary) == expected


async def test_the_payments_export_has_every_top_up_with_its_method(shop: Shop) -> None:
    member, kept = await _scene(shop)

    rows = _rows(await shop.operations.exports.payments_csv(date(2026, 11, 22), date(2026, 11, 22)))

    assert [(r["method"], r["amount"], r["state"]) for r in rows] == [
        ("stars", "10.00", "credited"),
        ("stars", "5.00", "credited"),
        ("alipay", "12.50", "credited"),
        ("stars", "3.00", "refunded"),
        ("wxpay", "20.00", "pending"),
    ]
    stars, _, alipay, *_ = rows
    assert (stars["charge_amount"], stars["charge_currency"]) == ("20", "XTR")
    assert (alipay["charge_amount"], alipay["charge_currency"]) == ("12.50", "CNY")
    assert alipay["provider_charge_id"] == "E1"
    assert stars["credited_at"] == "2026-11-22T10:00:00+08:00"
    assert stars["member_id"] == str(member)
    assert stars["telegram_id"] == "8001"
    assert (
        _rows(await shop.operations.exports.payments_csv(date(2026, 11, 21), date(2026, 11, 21)))
        == []
    )

    ledger = _rows(await shop.operations.exports.ledger_csv(date(2026, 11, 22), date(2026, 11, 22)))
    assert [(e["kind"], e["payment_id"]) for e in ledger][:3] == [
        ("topup", str(p.id)) for p in kept
    ]


async def test_recent_lists_a_bounded_number(shop: Shop) -> None:
    for limit in (0, 501):
        with pytest.raises(ShopError) as refused:
            await shop.payments.recent(limit=limit)
        assert refused.value.code is ErrorCode.INVALID_INPUT


async def cardshop(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv), clock=ManualClock(START))


@pytest.fixture
def shell(shop: Shop, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shop:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return shop


async def test_cardshop_payments_lists_them_newest_first(
    shell: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    _, kept = await _scene(shell)
    other = await make_member(shell.db, shell.clock, telegram_id=8002)
    await shell.payments.start(other, 100, "stars")

    assert await cardshop("payments", "--limit", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "3 payments"
    assert lines[0].startswith("#6 2026-11-22 10:00 member #")
    assert " stars 1.00 (2 XTR) pending T" in lines[0]
    assert " wxpay 20.00 (20.00 CNY) pending " in lines[1]

    assert await cardshop("payments", "--state", "credited", "--member", "8001") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "3 payments"
    assert [line.split()[0] for line in lines[:-1]] == [f"#{p.id}" for p in reversed(kept)]
    assert lines[0].endswith(" charge E1")

    assert await cardshop("payments", "--state", "refunded") == 0
    (refunded, count) = capsys.readouterr().out.splitlines()
    assert " stars 3.00 (6 XTR) refunded " in refunded
    assert count == "1 payment"


async def test_cardshop_stats_and_export_show_top_ups(
    shell: Shop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _scene(shell)

    assert await cardshop("stats", "--days", "1") == 0
    assert "top-ups: alipay 12.50 (1), stars 15.00 (2)" in capsys.readouterr().out.splitlines()

    out = tmp_path / "payments.csv"
    argv = ["export", "payments", "--from", "2026-11-22", "--to", "2026-11-22", "--out", str(out)]
    assert await cardshop(*argv) == 0
    assert len(_rows(out.read_bytes())) == 5
    (entry,) = await shell.operations.audit.recent(action="export")
    assert entry.target == "payments"

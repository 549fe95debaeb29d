"""Referral commission: once per delivered order, reversed on refund, never for loops."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from bot import cli
from bot.adapters.terminal import chat as terminal_chat
from bot.app import build_runtime
from core.clock import ManualClock
from core.commission import commission_amount
from core.models import Member, WalletEntry
from core.shop import Shop
from core.wallet import post_entry_on
from tests.conftest import START, TEST_KEY
from tests.factories import make_member, make_product


async def _refer(shop: Shop, member: int, referrer: int) -> None:
    async with shop.db.transaction() as session:
        await session.execute(
            update(Member).where(Member.id == member).values(referrer_id=referrer)
        )


async def _rows(shop: Shop, kind: str, member: int) -> list[tuple[int, int | None, str]]:
    async with shop.db.read() as session:
        rows = await session.execute(
            select(WalletEntry.amount, WalletEntry.order_id, WalletEntry.reason)
            .where(WalletEntry.kind == kind, WalletEntry.member_id == member)
            .order_by(WalletEntry.id)
        )
        return [(r.amount, r.order_id, r.reason) for r in rows]


async def _bought(shop: Shop, buyer: int, *, price: int = 10_000, key: str = "k") -> int:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=price)
    purchase = await shop.orders.place(buyer, product, 1, idempotency_key=key)
    return purchase.order.id


def test_the_amount_is_floored_to_the_fen() -> None:
    assert commission_amount(999, 3) == 29
    assert commission_amount(10_000, 5) == 500
    assert commission_amount(1, 5) == 0


async def test_a_delivered_order_earns_once_even_when_redelivered(shop: Shop) -> None:
    referrer = await make_member(shop.db, shop.clock, tier="platinum")
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    await _refer(shop, buyer, referrer)
    order = await _bought(shop, buyer)  # member tier: 95% of 10,000 = 9,500

    await shop.orders.mark_delivered(order)
    await shop.orders.mark_delivered(order)

    assert await _rows(shop, "commission", referrer) == [(285, order, f"referral order {order}")]
    assert await shop.wallet.balance(referrer) == 285


async def test_fifty_concurrent_deliveries_credit_once(shop: Shop) -> None:
    referrer = await make_member(shop.db, shop.clock, tier="diamond")
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    await _refer(shop, buyer, referrer)
    order = await _bought(shop, buyer)

    credits = await asyncio.gather(*(shop.orders.mark_delivered(order) for _ in range(50)))

    assert [amount for amount, _, _ in await _rows(shop, "commission", referrer)] == [475]
    assert await shop.wallet.balance(referrer) == 475
    # Only the delivery that credited returns the credit, so the referrer is told once.
    [credit] = [credit for credit in credits if credit is not None]
    assert (credit.order_id, credit.referrer_id, credit.amount) == (order, referrer, 475)
    assert credit.buyer_name == "b***"


async def test_the_database_refuses_a_second_commission_for_one_order(shop: Shop) -> None:
    referrer = await make_member(shop.db, shop.clock, tier="platinum")
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    await _refer(shop, buyer, referrer)
    order = await _bought(shop, buyer)
    await shop.orders.mark_delivered(order)

    with pytest.raises(IntegrityError):
        await shop.db.run(
            lambda conn: post_entry_on(
                conn, referrer, 1, kind="commission", at=shop.clock.now(), order_id=order
            )
        )


async def test_a_refund_takes_the_commission_back(shop: Shop) -> None:
    referrer = await make_member(shop.db, shop.clock, tier="platinum")
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    await _refer(shop, buyer, referrer)
    order = await _bought(shop, buyer)
    await shop.orders.mark_delivered(order)

    await shop.orders.refund(order, actor="admin:1", reason="invalid code")

    reversal = await _rows(shop, "commission_rev", referrer)
    assert [(a, o) for a, o, _ in reversal] == [(-285, order)]
    assert reversal[0][2].endswith("shortfall=0")
    assert await shop.wallet.balance(referrer) == 0


async def test_a_spent_commission_is_reversed_to_zero_and_the_shortfall_recorded(
    shop: Shop,
) -> None:
    referrer = await make_member(shop.db, shop.clock, tier="platinum")
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    await _refer(shop, buyer, referrer)
    order = await _bought(shop, buyer)
    await shop.orders.mark_delivered(order)
    await shop.db.run(
        lambda conn: post_entry_on(
            conn, referrer, -200, kind="adjustment", at=shop.clock.now(), reason="spent"
        )
    )

    await shop.orders.refund(order, actor="admin:1", reason="invalid code")

    reversal = await _rows(shop, "commission_rev", referrer)
    assert [(a, o) for a, o, _ in reversal] == [(-85, order)]
    assert reversal[0][2].endswith("shortfall=200")
    assert await shop.wallet.balance(referrer) == 0


async def test_a_refund_of_an_order_without_commission_reverses_nothing(shop: Shop) -> None:
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    order = await _bought(shop, buyer)
    await shop.orders.mark_delivered(order)
    await shop.orders.refund(order, actor="admin:1", reason="x")
    async with shop.db.read() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(WalletEntry)
            .where(WalletEntry.kind.in_(("commission", "commission_rev")))
        )
    assert count == 0


async def test_self_referral_and_loops_earn_nothing(shop: Shop) -> None:
    selfish = await make_member(shop.db, shop.clock, balance=20_000, tier="platinum")
    await _refer(shop, selfish, selfish)
    first = await make_member(shop.db, shop.clock, balance=20_000, tier="platinum")
    second = await make_member(shop.db, shop.clock, balance=20_000, tier="platinum")
    await _refer(shop, first, second)
    await _refer(shop, second, first)

    for buyer in (selfish, first, second):
        await shop.orders.mark_delivered(await _bought(shop, buyer, key=f"k{buyer}"))

    for member in (selfish, first, second):
        assert await _rows(shop, "commission", member) == []


async def test_a_tier_without_the_capability_earns_nothing(shop: Shop) -> None:
    referrer = await make_member(shop.db, shop.clock, tier="gold")
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    await _refer(shop, buyer, referrer)
    await shop.orders.mark_delivered(await _bought(shop, buyer))

    assert await _rows(shop, "commission", referrer) == []


async def test_the_summary_and_report_count_joined_buyers_and_commission(shop: Shop) -> None:
    referrer = await make_member(shop.db, shop.clock, tier="platinum")
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    idle = await make_member(shop.db, shop.clock)
    await _refer(shop, buyer, referrer)
    await _refer(shop, idle, referrer)
    await shop.orders.mark_delivered(await _bought(shop, buyer))

    summary = await shop.referrals.summary(referrer)
    assert (summary.joined, summary.bought, summary.earned) == (2, 1, 285)
    assert [(line.amount, line.buyer_name) for line in summary.recent] == [(285, "b***")]
    report = await shop.referrals.report()
    assert [(r.member_id, r.joined, r.bought, r.earned) for r in report] == [(referrer, 2, 1, 285)]


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        (
            "en",
            [
                "👥 Referrals",
                "Your referral code: {code}",
                "Your tier earns 3% of what the members you brought buy.",
                "1 member joined with your code",
                "1 of them bought in the past year",
                "Commission earned: ¥2.85",
                "b*** +¥2.85",
            ],
        ),
        (
            "zh_CN",
            [
                "👥 我的推广",
                "您的推广码：{code}",
                "您的等级可获得推广会员消费额的 3% 作为返利。",
                "已有 1 位会员通过您的推广码加入",
                "其中 1 位近一年内有消费",
                "累计返利：¥2.85",
                "b*** +¥2.85",
            ],
        ),
    ],
)
async def test_the_referrals_screen_renders(shop: Shop, lang: str, expected: list[str]) -> None:
    referrer = await shop.members.register(7070, language_code=lang)
    await shop.operations.admin.set_tier("test", referrer.id, "platinum", reason="test")
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    await _refer(shop, buyer, referrer.id)
    await shop.orders.mark_delivered(await _bought(shop, buyer))

    out = io.StringIO()
    script = io.StringIO("/referrals\n")
    await terminal_chat(build_runtime(shop), user_id=7070, lang=lang, stdin=script, stdout=out)

    shown = out.getvalue()
    for line in expected:
        assert line.format(code=referrer.referral_code) in shown, (line, shown)


async def test_the_cli_reports_every_referrer(
    shop: Shop,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    referrer = await make_member(shop.db, shop.clock, tier="platinum")
    buyer = await make_member(shop.db, shop.clock, balance=20_000)
    await _refer(shop, buyer, referrer)
    await shop.orders.mark_delivered(await _bought(shop, buyer))

    code = await asyncio.to_thread(cli.main, ["referrals"], clock=ManualClock(START))

    assert code == 0
    out = capsys.readouterr().out
    assert f"member #{referrer} " in out
    assert "joined 1, bought 1, commission 2.85" in out
    assert out.endswith("1 referrer\n")

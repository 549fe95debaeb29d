"""Wallet top-ups on both databases: Stars and 易支付 credited exactly once.

Races are real tasks started at once with `asyncio.gather` through the shop's own
service; the outcome is read back from the database (and the ledger is checked against
every balance after each test by the `db` fixture).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from core.clock import ManualClock
from core.config import Settings
from core.errors import ErrorCode, ShopError
from core.models import Member, Payment, WalletEntry
from core.payments import (
    BuyIntent,
    ForgedNotificationError,
    PaymentState,
    PreCheckoutRefusal,
)
from core.payments.epay import money_to_fen, sign
from core.shop import Shop
from core.uow import Database
from tests.conftest import ledger_drift
from tests.factories import make_member

EPAY_KEY = "merchant-secret-key"
EPAY_PID = "1001"
TELEGRAM_ID = 777_001


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "stars_per_yuan": Decimal("2.5"),
            "public_url": "https://shop.example.com",
            "epay_url": "https://pay.example.com",
            "epay_pid": EPAY_PID,
            "epay_key": SecretStr(EPAY_KEY),
        }
    )


def md5_sign(params: Mapping[str, str], key: str) -> str:
    """易支付's signature written out again here, so a test never trusts core's to check
    core's: sorted non-empty parameters but sign/sign_type, `k=v&...`, then the key."""
    pairs = sorted((k, v) for k, v in params.items() if k not in ("sign", "sign_type") and v)
    return hashlib.md5(("&".join(f"{k}={v}" for k, v in pairs) + key).encode()).hexdigest()


def notify(reference: str, money: str, *, trade_no: str = "2026112210000001", **extra: str):
    """A notification as the gateway sends it, signed with the merchant key."""
    params = {
        "pid": EPAY_PID,
        "trade_no": trade_no,
        "out_trade_no": reference,
        "type": "alipay",
        "name": "Wallet top-up",
        "money": money,
        "trade_status": "TRADE_SUCCESS",
        **extra,
    }
    return {**params, "sign": md5_sign(params, EPAY_KEY), "sign_type": "MD5"}


async def _member(shop: Shop, telegram_id: int = TELEGRAM_ID, balance: int = 0) -> int:
    return await make_member(shop.db, shop.clock, telegram_id=telegram_id, balance=balance)


async def _ledger(db: Database, member_id: int) -> list[tuple[str, int, int | None]]:
    async with db.read() as session:
        rows = await session.execute(
            select(WalletEntry.kind, WalletEntry.amount, WalletEntry.payment_id)
            .where(WalletEntry.member_id == member_id)
            .order_by(WalletEntry.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def _stars_topup(shop: Shop, member: int, amount: int = 1000) -> tuple[str, int]:
    checkout = await shop.payments.start(member, amount, "stars")
    assert checkout.invoice is not None
    return checkout.invoice.payload, checkout.invoice.stars


# --- starting -------------------------------------------------------------------------


async def test_methods_are_the_configured_ones_stars_first(shop: Shop) -> None:
    assert shop.payments.methods() == ("stars", "alipay", "wxpay")


async def test_nothing_configured_offers_nothing(settings: Settings, db: Database, clock) -> None:
    from core.shop import build_shop

    bare = build_shop(
        settings.model_copy(update={"stars_per_yuan": None, "public_url": None}), db=db,
        clock=clock,
    )  # fmt: skip
    assert bare.payments.methods() == ()
    with pytest.raises(ShopError) as refused:
        await bare.payments.start(await _member(bare), 1000, "alipay")
    assert refused.value.code is ErrorCode.PAYMENT_METHOD_UNAVAILABLE


async def test_a_stars_invoice_charges_the_rate_rounded_up(shop: Shop) -> None:
    member = await _member(shop)

    checkout = await shop.payments.start(member, 1001, "stars")

    # ¥10.01 at 2.5 Stars per yuan is 25.025 Stars: 26 asked, ¥10.01 credited.
    assert checkout.url is None
    assert checkout.invoice is not None
    assert checkout.invoice.stars == 26
    assert checkout.invoice.amount == 1001
    assert checkout.invoice.payload == checkout.payment.reference
    assert len(checkout.invoice.payload.encode()) <= 128
    payment = checkout.payment
    assert (payment.state, payment.provider, payment.method) == (
        PaymentState.PENDING, "stars", "stars",
    )  # fmt: skip
    assert (payment.charge_amount, payment.charge_currency) == (26, "XTR")
    assert payment.expires_at - payment.created_at == timedelta(minutes=30)


async def test_an_epay_checkout_is_a_signed_submit_url(shop: Shop) -> None:
    member = await _member(shop)

    checkout = await shop.payments.start(member, 1250, "wxpay")

    assert checkout.invoice is None
    assert checkout.url is not None
    url = urlsplit(checkout.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://pay.example.com/submit.php"
    params = dict(parse_qsl(url.query, keep_blank_values=True))
    assert params["sign"] == md5_sign(params, EPAY_KEY)
    assert params["sign_type"] == "MD5"
    assert params["pid"] == EPAY_PID
    assert params["type"] == "wxpay"
    assert params["money"] == "12.50"
    assert params["out_trade_no"] == checkout.payment.reference
    assert params["notify_url"] == "https://shop.example.com/pay/epay/notify"
    assert params["return_url"] == "https://shop.example.com/pay/epay/return"


async def test_references_are_unguessable_and_distinct(shop: Shop) -> None:
    member = await _member(shop)
    references = {(await shop.payments.start(member, 100, "stars")).payment.reference
                  for _ in range(20)}  # fmt: skip
    assert len(references) == 20
    assert all(len(r) >= 20 and r.isalnum() for r in references)


@pytest.mark.parametrize("amount", [99, 500_001, 0, -100])
async def test_an_amount_outside_the_bounds_is_refused(shop: Shop, amount: int) -> None:
    member = await _member(shop)
    with pytest.raises(ShopError) as refused:
        await shop.payments.start(member, amount, "stars")
    assert refused.value.code is ErrorCode.TOPUP_AMOUNT_OUT_OF_RANGE
    assert refused.value.params == {"amount": amount, "min": 100, "max": 500_000}
    assert await shop.payments.recent() == []


async def test_the_daily_ceiling_counts_pending_and_credited_not_expired(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member = await _member(shop)
    lapsed = await shop.payments.start(member, 400_000, "stars")
    clock.advance(timedelta(minutes=31))
    assert (await shop.payments.status(member, lapsed.payment.id)).state is PaymentState.EXPIRED
    payload, stars = await _stars_topup(shop, member, 500_000)
    await shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, "charge-1")
    for _ in range(2):
        await shop.payments.start(member, 500_000, "alipay")
    # credited ¥5,000 + pending 2 × ¥5,000 = ¥15,000 of ¥20,000; the expired ¥4,000 is free.
    await shop.payments.start(member, 500_000, "stars")

    with pytest.raises(ShopError) as refused:
        await shop.payments.start(member, 100, "stars")

    assert refused.value.code is ErrorCode.TOPUP_DAILY_LIMIT
    assert refused.value.params == {"amount": 100, "left": 0, "max": 2_000_000}


async def test_the_daily_ceiling_holds_under_concurrent_starts(shop: Shop) -> None:
    member = await _member(shop)
    results = await asyncio.gather(
        *(shop.payments.start(member, 300_000, "alipay") for _ in range(10)),
        return_exceptions=True,
    )
    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ShopError)]
    assert len(started) == 6  # 6 × ¥3,000 = ¥18,000; a seventh would pass ¥20,000
    assert len(refused) == 4
    assert {e.code for e in refused} == {ErrorCode.TOPUP_DAILY_LIMIT}


async def test_a_foreign_member_is_refused(shop: Shop) -> None:
    with pytest.raises(ShopError) as refused:
        await shop.payments.start(424242, 1000, "stars")
    assert refused.value.code is ErrorCode.MEMBER_NOT_FOUND


# --- Stars ----------------------------------------------------------------------------


async def test_pre_checkout_accepts_the_members_own_pending_invoice(shop: Shop) -> None:
    member = await _member(shop)
    payload, stars = await _stars_topup(shop, member)
    assert await shop.payments.pre_checkout(TELEGRAM_ID, payload, "XTR", stars) is None


async def test_pre_checkout_refusals(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member = await _member(shop)
    await _member(shop, telegram_id=TELEGRAM_ID + 1)
    payload, stars = await _stars_topup(shop, member)
    epay = (await shop.payments.start(member, 1000, "alipay")).payment.reference
    check = shop.payments.pre_checkout

    assert await check(TELEGRAM_ID, "T-nothing", "XTR", stars) is PreCheckoutRefusal.UNKNOWN
    assert await check(TELEGRAM_ID, epay, "XTR", 1000) is PreCheckoutRefusal.UNKNOWN
    assert await check(TELEGRAM_ID + 1, payload, "XTR", stars) is PreCheckoutRefusal.NOT_YOURS
    assert await check(TELEGRAM_ID, payload, "XTR", stars - 1) is (
        PreCheckoutRefusal.AMOUNT_MISMATCH
    )
    assert await check(TELEGRAM_ID, payload, "USD", stars) is PreCheckoutRefusal.AMOUNT_MISMATCH
    clock.advance(timedelta(minutes=30))
    assert await check(TELEGRAM_ID, payload, "XTR", stars) is PreCheckoutRefusal.EXPIRED
    clock.advance(timedelta(minutes=-30))
    await shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, "charge-1")
    assert await check(TELEGRAM_ID, payload, "XTR", stars) is PreCheckoutRefusal.NOT_PENDING


async def test_pre_checkout_without_stars_configured_is_unavailable(
    settings: Settings, db: Database, clock
) -> None:
    from core.shop import build_shop

    bare = build_shop(settings.model_copy(update={"stars_per_yuan": None}), db=db, clock=clock)
    refusal = await bare.payments.pre_checkout(TELEGRAM_ID, "Tanything", "XTR", 10)
    assert refusal is PreCheckoutRefusal.UNAVAILABLE


async def test_a_successful_payment_credits_the_wallet_once(shop: Shop) -> None:
    member = await _member(shop, balance=500)
    payload, stars = await _stars_topup(shop, member, 1000)

    first = await shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, "charge-1")
    again = [
        await shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, "charge-1")
        for _ in range(3)
    ]

    assert first.created
    assert (first.balance_before, first.balance_after) == (500, 1500)
    assert (first.telegram_id, first.payment.state) == (TELEGRAM_ID, PaymentState.CREDITED)
    assert first.payment.provider_charge_id == "charge-1"
    assert first.payment.credited_at == shop.clock.now()
    assert [c.created for c in again] == [False, False, False]
    assert all(c.balance_after == 1500 and c.payment == first.payment for c in again)
    assert await shop.wallet.balance(member) == 1500
    ledger = await _ledger(shop.db, member)
    assert ledger == [("topup", 500, None), ("topup", 1000, first.payment.id)]


async def test_the_same_successful_payment_three_times_at_once_credits_once(shop: Shop) -> None:
    member = await _member(shop)
    payload, stars = await _stars_topup(shop, member, 2000)

    credits = await asyncio.gather(
        *(
            shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, "charge-1")
            for _ in range(3)
        )
    )

    assert sorted(c.created for c in credits) == [False, False, True]
    assert await shop.wallet.balance(member) == 2000
    assert len(await _ledger(shop.db, member)) == 1


async def test_many_members_paying_at_once_each_get_their_money(shop: Shop) -> None:
    members = [await _member(shop, telegram_id=900_000 + i) for i in range(10)]
    invoices = [await _stars_topup(shop, m, 100 * (i + 1)) for i, m in enumerate(members)]

    credits = await asyncio.gather(
        *(
            shop.payments.credit_stars(900_000 + i, payload, "XTR", stars, f"c{i}")
            for i, (payload, stars) in enumerate(invoices)
            for _ in range(2)
        )
    )

    assert sum(c.created for c in credits) == 10
    for i, member in enumerate(members):
        assert await shop.wallet.balance(member) == 100 * (i + 1)


async def test_an_expired_invoice_paid_late_is_still_credited(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member = await _member(shop)
    checkout = await shop.payments.start(member, 1000, "stars")
    assert checkout.invoice is not None
    clock.advance(timedelta(hours=2))
    assert (await shop.payments.status(member, checkout.payment.id)).state is (PaymentState.EXPIRED)

    credit = await shop.payments.credit_stars(
        TELEGRAM_ID, checkout.invoice.payload, "XTR", checkout.invoice.stars, "late"
    )

    assert credit.created
    assert credit.payment.state is PaymentState.CREDITED
    assert await shop.wallet.balance(member) == 1000


async def test_two_charges_for_one_invoice_are_both_credited(shop: Shop) -> None:
    member = await _member(shop)
    payload, stars = await _stars_topup(shop, member, 1000)

    credits = await asyncio.gather(
        *(
            shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, charge)
            for charge in ("charge-a", "charge-b", "charge-a", "charge-b")
        )
    )

    assert sum(c.created for c in credits) == 2
    assert await shop.wallet.balance(member) == 2000
    payments = await shop.payments.recent(member_id=member)
    assert {p.provider_charge_id for p in payments} == {"charge-a", "charge-b"}
    assert all(p.state is PaymentState.CREDITED for p in payments)
    second = next(p for p in payments if p.reference != payload)
    assert second.note == f"paid again for {payload}"
    ledger = await _ledger(shop.db, member)
    assert sorted(pid for _, _, pid in ledger) == sorted(p.id for p in payments)


async def test_a_stars_payment_that_differs_from_its_invoice_is_held_for_an_admin(
    shop: Shop,
) -> None:
    member = await _member(shop)
    payload, stars = await _stars_topup(shop, member, 1000)

    credit = await shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars - 1, "short")
    again = await shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars - 1, "short")

    assert not credit.created
    assert not again.created
    assert credit.payment.state is PaymentState.PAID
    assert credit.payment.provider_charge_id == "short"
    assert f"paid {stars - 1} XTR, invoiced {stars} XTR" in credit.payment.note
    assert await shop.wallet.balance(member) == 0
    assert await shop.payments.recent(state=PaymentState.PAID) == [credit.payment]


async def test_an_unknown_payload_credits_nothing(shop: Shop) -> None:
    await _member(shop)
    with pytest.raises(ShopError) as refused:
        await shop.payments.credit_stars(TELEGRAM_ID, "Tunknown", "XTR", 25, "charge-x")
    assert refused.value.code is ErrorCode.PAYMENT_NOT_FOUND


# --- 易支付 ----------------------------------------------------------------------------


def test_the_signature_is_md5_of_the_sorted_non_empty_parameters_then_the_key() -> None:
    params = {
        "type": "alipay",
        "pid": "1001",
        "out_trade_no": "T1",
        "money": "1.00",
        "name": "x",
        "sitename": "",
        "sign_type": "MD5",
    }
    text = "money=1.00&name=x&out_trade_no=T1&pid=1001&type=alipay" + "k"
    assert sign(params, "k") == hashlib.md5(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("money", "fen"), [("12", 1200), ("12.5", 1250), ("12.50", 1250), ("0.01", 1)]
)
def test_gateway_money_is_read_exactly(money: str, fen: int) -> None:
    assert money_to_fen(money) == fen


@pytest.mark.parametrize("money", ["12.505", "1e3", "-1.00", "NaN", "", " 1.00", "１.00"])
def test_gateway_money_that_is_not_plain_yuan_is_refused(money: str) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        money_to_fen(money)


async def _epay(shop: Shop, member: int, amount: int = 1250) -> str:
    return (await shop.payments.start(member, amount, "alipay")).payment.reference


async def test_a_signed_notify_credits_once_and_a_replay_changes_nothing(shop: Shop) -> None:
    member = await _member(shop)
    reference = await _epay(shop, member)

    first = await shop.payments.credit_epay(notify(reference, "12.50"))
    again = await shop.payments.credit_epay(notify(reference, "12.5"))

    assert first.created
    assert (first.balance_before, first.balance_after) == (0, 1250)
    assert first.payment.provider_charge_id == "2026112210000001"
    assert not again.created
    assert again.balance_after == 1250
    assert await _ledger(shop.db, member) == [("topup", 1250, first.payment.id)]


async def test_one_notify_ten_times_at_once_credits_once(shop: Shop) -> None:
    member = await _member(shop)
    reference = await _epay(shop, member)
    params = notify(reference, "12.50")

    credits = await asyncio.gather(*(shop.payments.credit_epay(params) for _ in range(10)))

    assert sum(c.created for c in credits) == 1
    assert await shop.wallet.balance(member) == 1250
    assert len(await _ledger(shop.db, member)) == 1


def _tampered(params: dict[str, str], **changes: str) -> dict[str, str]:
    return {**params, **changes}


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda ref: _tampered(notify(ref, "12.50"), money="125.00"), id="tampered"),
        pytest.param(lambda ref: _tampered(notify(ref, "12.50"), sign="0" * 32), id="bad-sign"),
        pytest.param(lambda ref: {**notify(ref, "12.50"), "sign": ""}, id="empty-sign"),
        pytest.param(
            lambda ref: {k: v for k, v in notify(ref, "12.50").items() if k != "sign"},
            id="no-sign",
        ),
        pytest.param(lambda ref: notify(ref, "1.00"), id="signed-wrong-amount"),
        pytest.param(lambda ref: notify("T" + "0" * 24, "12.50"), id="unknown-order"),
        pytest.param(lambda ref: notify(ref, "12.50", pid="2002"), id="wrong-merchant"),
        pytest.param(
            lambda ref: notify(ref, "12.50", trade_status="WAIT_BUYER_PAY"), id="not-paid"
        ),
        pytest.param(
            lambda ref: {
                **(p := {k: v for k, v in notify(ref, "12.50").items() if k != "sign"}),
                "sign": md5_sign(p, "another-key"),
            },
            id="other-key",
        ),
        pytest.param(lambda ref: notify(ref, "12.50", trade_no=""), id="no-trade-no"),
        pytest.param(lambda ref: notify(ref, "1250"), id="fen-as-yuan"),
    ],
)
async def test_a_forged_notify_raises_and_changes_nothing(shop: Shop, forge: Any) -> None:
    member = await _member(shop)
    reference = await _epay(shop, member)
    before = await shop.payments.get(reference)

    with pytest.raises(ForgedNotificationError):
        await shop.payments.credit_epay(forge(reference))

    assert await shop.payments.get(reference) == before
    assert await shop.wallet.balance(member) == 0
    assert await _ledger(shop.db, member) == []


async def test_a_notify_for_a_stars_payment_is_unknown(shop: Shop) -> None:
    member = await _member(shop)
    payload, _ = await _stars_topup(shop, member, 1250)
    with pytest.raises(ForgedNotificationError, match="unknown order"):
        await shop.payments.credit_epay(notify(payload, "12.50"))
    assert await shop.wallet.balance(member) == 0


async def test_a_notify_for_an_expired_top_up_still_credits(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member = await _member(shop)
    reference = await _epay(shop, member)
    clock.advance(timedelta(days=1))
    payment = await shop.payments.get(reference)
    assert payment is not None
    assert (await shop.payments.status(member, payment.id)).state is PaymentState.EXPIRED

    credit = await shop.payments.credit_epay(notify(reference, "12.50"))

    assert credit.created
    assert await shop.wallet.balance(member) == 1250


# --- reading --------------------------------------------------------------------------


async def test_status_is_the_members_own(shop: Shop) -> None:
    member = await _member(shop)
    other = await _member(shop, telegram_id=TELEGRAM_ID + 1)
    payment = (await shop.payments.start(member, 1000, "stars")).payment

    assert await shop.payments.status(member, payment.id) == payment
    with pytest.raises(ShopError) as refused:
        await shop.payments.status(other, payment.id)
    assert refused.value.code is ErrorCode.PAYMENT_NOT_FOUND


async def test_recent_filters_by_state_and_member(shop: Shop) -> None:
    member = await _member(shop)
    other = await _member(shop, telegram_id=TELEGRAM_ID + 1)
    payload, stars = await _stars_topup(shop, member)
    await shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, "c1")
    pending = (await shop.payments.start(other, 2000, "alipay")).payment

    everything = await shop.payments.recent()
    assert [p.member_id for p in everything] == [other, member]
    assert await shop.payments.recent(state=PaymentState.PENDING) == [pending]
    assert [p.state for p in await shop.payments.recent(member_id=member)] == [
        PaymentState.CREDITED
    ]
    assert len(await shop.payments.recent(limit=1)) == 1


async def test_a_buy_intent_rides_with_the_payment(shop: Shop) -> None:
    member = await _member(shop)
    intent = BuyIntent(
        product_id=7, quantity=2, use_points=True, idempotency_key="k-1", expected_total=1900
    )
    checkout = await shop.payments.start(member, 1000, "stars", then_buy=intent)
    assert checkout.invoice is not None

    credit = await shop.payments.credit_stars(
        TELEGRAM_ID, checkout.invoice.payload, "XTR", checkout.invoice.stars, "c"
    )

    assert checkout.payment.then_buy == intent
    assert credit.payment.then_buy == intent


# --- what the database holds --------------------------------------------------------------


async def test_the_database_refuses_a_second_credit_of_one_payment(shop: Shop) -> None:
    """The partial unique index and the unique charge id, without the service's checks."""
    member = await _member(shop)
    payload, stars = await _stars_topup(shop, member)
    credit = await shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, "c1")
    now = shop.clock.now()
    second_credit = WalletEntry(
        member_id=member, kind="topup", amount=1000, balance_after=2000,
        payment_id=credit.payment.id, created_at=now,
    )  # fmt: skip
    same_charge = Payment(
        reference="Tdup", member_id=member, provider="stars", method="stars", amount=100,
        charge_amount=3, charge_currency="XTR", state="credited", provider_charge_id="c1",
        note="", created_at=now, expires_at=now,
    )  # fmt: skip

    for row in (second_credit, same_charge):
        with pytest.raises(IntegrityError):
            async with shop.db.transaction() as session:
                session.add(row)


async def test_the_ledger_check_sees_a_balance_moved_without_its_ledger(shop: Shop) -> None:
    member = await _member(shop, balance=1000)
    async with shop.db.transaction() as session:
        await session.execute(update(Member).where(Member.id == member).values(balance=1500))

    assert await ledger_drift(shop.db) == [("balance", member, 1500, 1000)]

    async with shop.db.transaction() as session:
        await session.execute(update(Member).where(Member.id == member).values(balance=1000))
        await session.execute(
            update(WalletEntry).where(WalletEntry.member_id == member).values(balance_after=900)
        )
    drift = await ledger_drift(shop.db)
    assert [(what.split()[0], m, rec, run) for what, m, rec, run in drift] == [
        ("entry", member, 900, 1000)
    ]
    async with shop.db.transaction() as session:
        await session.execute(
            update(WalletEntry).where(WalletEntry.member_id == member).values(balance_after=1000)
        )


async def test_a_long_stars_charge_id_is_kept_whole(shop: Shop) -> None:
    member = await _member(shop)
    payload, stars = await _stars_topup(shop, member)
    charge_id = "stxhi4w_" + "x" * 200

    credit = await shop.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, charge_id)

    assert credit.created
    assert credit.payment.provider_charge_id == charge_id


async def test_a_payment_by_someone_else_is_held_for_an_admin(shop: Shop) -> None:
    member = await _member(shop)
    payload, stars = await _stars_topup(shop, member)

    credit = await shop.payments.credit_stars(TELEGRAM_ID + 5, payload, "XTR", stars, "c1")

    assert not credit.created
    assert credit.payment.state is PaymentState.PAID
    assert credit.payment.note == f"paid by Telegram user {TELEGRAM_ID + 5}, not the member"
    assert await shop.wallet.balance(member) == 0


async def test_a_top_up_started_before_a_restart_is_credited_after_it(
    shop: Shop, settings: Settings, clock: ManualClock
) -> None:
    from core.shop import build_shop

    member = await _member(shop)
    payload, stars = await _stars_topup(shop, member)
    epay = await _epay(shop, member)
    restarted = build_shop(settings, clock=clock)
    try:
        assert await restarted.payments.pre_checkout(TELEGRAM_ID, payload, "XTR", stars) is None
        by_stars = await restarted.payments.credit_stars(TELEGRAM_ID, payload, "XTR", stars, "c")
        by_epay = await restarted.payments.credit_epay(notify(epay, "12.50"))
    finally:
        await restarted.close()

    assert by_stars.created
    assert by_epay.created
    assert await shop.wallet.balance(member) == 1000 + 1250

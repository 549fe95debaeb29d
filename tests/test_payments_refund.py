"""Refunds of top-ups on both databases: debit first, then the provider, restore on refusal.

The refunder stands for the bot's `refundStarPayment`; Telegram's `refunded_payment`
is `refunded_by_provider`, raced against the refund and against itself.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from core.config import Settings
from core.errors import ErrorCode, ShopError
from core.models import AuditEntry, WalletEntry
from core.payments import PaymentState, PaymentView
from core.shop import Shop
from core.uow import Database
from tests.factories import make_member, make_product, tiers_file_with

TELEGRAM_ID = 777_002


@pytest.fixture
def settings(settings: Settings, tmp_path) -> Settings:
    return settings.model_copy(
        update={
            "stars_per_yuan": Decimal(2),
            "public_url": "https://shop.example.com",
            "epay_url": "https://pay.example.com",
            "epay_pid": "1001",
            "epay_key": SecretStr("k"),
            "tiers_file": tiers_file_with(tmp_path, max_orders=1000, max_failures=1000),
        }
    )


class Refunder:
    """The provider's side of a refund: records each call, refuses when told to."""

    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[PaymentView] = []
        self.refuse = refuse

    async def __call__(self, payment: PaymentView) -> None:
        self.calls.append(payment)
        await asyncio.sleep(0)
        if self.refuse is not None:
            raise RuntimeError(self.refuse)


async def _credited(shop: Shop, amount: int = 1000, *, charge: str = "charge-1") -> PaymentView:
    member = await make_member(shop.db, shop.clock, telegram_id=TELEGRAM_ID)
    checkout = await shop.payments.start(member, amount, "stars")
    assert checkout.invoice is not None
    credit = await shop.payments.credit_stars(
        TELEGRAM_ID, checkout.invoice.payload, "XTR", checkout.invoice.stars, charge
    )
    assert credit.created
    return credit.payment


async def _ledger(db: Database, member_id: int) -> list[tuple[str, int, int | None]]:
    async with db.read() as session:
        rows = await session.execute(
            select(WalletEntry.kind, WalletEntry.amount, WalletEntry.payment_id)
            .where(WalletEntry.member_id == member_id)
            .order_by(WalletEntry.id)
        )
        return [(kind, amount, payment) for kind, amount, payment in rows]


async def _audit(db: Database) -> list[tuple[str, str, dict | None]]:
    async with db.read() as session:
        rows = await session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.after).order_by(AuditEntry.id)
        )
        return [(actor, action, after) for actor, action, after in rows]


async def test_a_refund_debits_then_asks_the_provider(shop: Shop) -> None:
    paid = await _credited(shop)
    refunder = Refunder()

    refunded = await shop.payments.refund("tg:1", paid.id, refunder)

    assert [p.state for p in refunder.calls] == [PaymentState.REFUNDING]
    # When the provider is asked, the money is already out of the wallet.
    assert refunded.state is PaymentState.REFUNDED
    assert refunded.refunded_at == shop.clock.now()
    assert await shop.wallet.balance(paid.member_id) == 0
    assert await _ledger(shop.db, paid.member_id) == [
        ("topup", 1000, paid.id),
        ("topup_refund", -1000, paid.id),
    ]
    audit = await _audit(shop.db)
    assert [(actor, action) for actor, action, _ in audit] == [
        ("tg:1", "refund_payment"),
        ("tg:1", "refund_payment"),
    ]
    assert audit[0][2] == {"state": "refunding", "balance": 0, "amount": 1000}
    assert audit[1][2] == {"state": "refunded"}


async def test_a_refund_of_money_already_spent_is_refused_and_changes_nothing(
    shop: Shop,
) -> None:
    paid = await _credited(shop, 1000)
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=100, codes=1)
    await shop.orders.place(paid.member_id, product, 1, idempotency_key="spend")
    ledger = await _ledger(shop.db, paid.member_id)
    refunder = Refunder()

    with pytest.raises(ShopError) as refused:
        await shop.payments.refund("tg:1", paid.id, refunder)

    assert refused.value.code is ErrorCode.INSUFFICIENT_BALANCE
    assert refused.value.params == {"balance": 905, "required": 1000, "missing": 95}
    assert refunder.calls == []
    assert (await shop.payments.get(paid.reference)) == paid
    assert await _ledger(shop.db, paid.member_id) == ledger
    assert await _audit(shop.db) == []


async def test_a_refund_the_provider_refuses_is_restored(shop: Shop) -> None:
    paid = await _credited(shop)
    refunder = Refunder(refuse="CHARGE_ALREADY_REFUNDED")

    with pytest.raises(ShopError) as refused:
        await shop.payments.refund("tg:1", paid.id, refunder)

    assert refused.value.code is ErrorCode.PAYMENT_REFUND_REFUSED
    assert refused.value.params == {"payment": paid.id, "reason": "CHARGE_ALREADY_REFUNDED"}
    assert len(refunder.calls) == 1
    after = await shop.payments.get(paid.reference)
    assert after is not None
    assert after.state is PaymentState.CREDITED
    assert after.note == "refund refused: CHARGE_ALREADY_REFUNDED"
    assert await shop.wallet.balance(paid.member_id) == 1000
    assert await _ledger(shop.db, paid.member_id) == [
        ("topup", 1000, paid.id),
        ("topup_refund", -1000, paid.id),
        ("adjustment", 1000, paid.id),
    ]
    assert [after for _, _, after in await _audit(shop.db)][-1] == {
        "state": "credited", "balance": 1000, "refused": "CHARGE_ALREADY_REFUNDED",
    }  # fmt: skip

    # Refused once, the payment can be refunded again.
    again = await shop.payments.refund("tg:1", paid.id, Refunder())
    assert again.state is PaymentState.REFUNDED
    assert await shop.wallet.balance(paid.member_id) == 0


async def test_only_a_credited_stars_payment_is_refundable(shop: Shop) -> None:
    paid = await _credited(shop)
    pending = (await shop.payments.start(paid.member_id, 1000, "stars")).payment
    epay = (await shop.payments.start(paid.member_id, 1000, "alipay")).payment
    await shop.payments.refund("tg:1", paid.id, Refunder())
    refunder = Refunder()

    for payment in (pending, epay, paid):
        with pytest.raises(ShopError) as refused:
            await shop.payments.refund("tg:1", payment.id, refunder)
        assert refused.value.code is ErrorCode.PAYMENT_NOT_REFUNDABLE
        assert refused.value.params["payment"] == payment.id
    with pytest.raises(ShopError) as missing:
        await shop.payments.refund("tg:1", 99_999, refunder)
    assert missing.value.code is ErrorCode.PAYMENT_NOT_FOUND
    assert refunder.calls == []


async def test_three_refunds_of_one_payment_at_once_refund_once(shop: Shop) -> None:
    paid = await _credited(shop)
    refunder = Refunder()

    results = await asyncio.gather(
        *(shop.payments.refund("tg:1", paid.id, refunder) for _ in range(3)),
        return_exceptions=True,
    )

    done = [r for r in results if isinstance(r, PaymentView)]
    refused = [r for r in results if isinstance(r, ShopError)]
    assert len(done) == 1
    assert {e.code for e in refused} == {ErrorCode.PAYMENT_NOT_REFUNDABLE}
    assert len(refused) == 2
    assert len(refunder.calls) == 1
    assert await shop.wallet.balance(paid.member_id) == 0


# --- refunded_payment -------------------------------------------------------------------


async def test_refunded_payment_after_our_refund_changes_nothing(shop: Shop) -> None:
    paid = await _credited(shop)
    refunded = await shop.payments.refund("tg:1", paid.id, Refunder())
    ledger = await _ledger(shop.db, paid.member_id)

    again = await shop.payments.refunded_by_provider("stars", "charge-1")

    assert again == refunded
    assert await _ledger(shop.db, paid.member_id) == ledger


async def test_refunded_payment_arriving_during_our_refund_debits_once(shop: Shop) -> None:
    paid = await _credited(shop)

    async def refund_and_tell(payment: PaymentView) -> None:
        # Telegram sends refunded_payment while the refund call is still answering.
        told = await shop.payments.refunded_by_provider("stars", payment.provider_charge_id or "")
        assert told is not None
        assert told.state is PaymentState.REFUNDED

    refunded = await shop.payments.refund("tg:1", paid.id, refund_and_tell)

    assert refunded.state is PaymentState.REFUNDED
    assert await _ledger(shop.db, paid.member_id) == [
        ("topup", 1000, paid.id),
        ("topup_refund", -1000, paid.id),
    ]


async def test_a_refund_refused_after_the_provider_refunded_is_not_restored(shop: Shop) -> None:
    paid = await _credited(shop)

    async def refunded_then_timed_out(payment: PaymentView) -> None:
        await shop.payments.refunded_by_provider("stars", "charge-1")
        raise TimeoutError("no answer from Telegram")

    with pytest.raises(ShopError) as refused:
        await shop.payments.refund("tg:1", paid.id, refunded_then_timed_out)

    assert refused.value.code is ErrorCode.PAYMENT_REFUND_REFUSED
    after = await shop.payments.get(paid.reference)
    assert after is not None
    assert after.state is PaymentState.REFUNDED
    assert await shop.wallet.balance(paid.member_id) == 0
    assert len(await _ledger(shop.db, paid.member_id)) == 2


async def test_a_refund_made_elsewhere_takes_what_is_left(shop: Shop) -> None:
    paid = await _credited(shop, 1000)
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=700, codes=1)
    await shop.orders.place(paid.member_id, product, 1, idempotency_key="spend")
    left = await shop.wallet.balance(paid.member_id)
    assert left == 1000 - 665

    refunded = await shop.payments.refunded_by_provider("stars", "charge-1")

    assert refunded is not None
    assert refunded.state is PaymentState.REFUNDED
    assert refunded.note == "refunded by stars: 665 分 already spent"
    assert await shop.wallet.balance(paid.member_id) == 0
    assert (await _ledger(shop.db, paid.member_id))[-1] == ("topup_refund", -left, paid.id)


async def test_a_refund_made_elsewhere_twice_at_once_debits_once(shop: Shop) -> None:
    paid = await _credited(shop, 1000)
    member = paid.member_id
    other = await shop.payments.start(member, 500, "stars")
    assert other.invoice is not None
    await shop.payments.credit_stars(
        TELEGRAM_ID, other.invoice.payload, "XTR", other.invoice.stars, "charge-2"
    )

    results = await asyncio.gather(
        *(shop.payments.refunded_by_provider("stars", "charge-1") for _ in range(5))
    )

    assert {r.state for r in results if r is not None} == {PaymentState.REFUNDED}
    assert await shop.wallet.balance(member) == 500
    assert [row for row in await _ledger(shop.db, member) if row[0] == "topup_refund"] == [
        ("topup_refund", -1000, paid.id)
    ]


async def test_a_refund_of_an_unknown_charge_is_none(shop: Shop) -> None:
    await _credited(shop)
    assert await shop.payments.refunded_by_provider("stars", "someone-elses") is None
    assert await shop.payments.refunded_by_provider("epay", "charge-1") is None

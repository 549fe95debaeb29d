"""易支付 end to end at the core: the shop's pay link, notify and query against the
gateway stand-in (`tests/epay`), whose signing code is its own, on both databases.

The bot's HTTP server (`bot/http.py`) is stood in for by the few lines it runs for a
notify: `credit_epay(params)` → `success`, a refusal → `fail`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from aiohttp import web
from pydantic import SecretStr

from core.clock import ManualClock
from core.config import Settings
from core.payments import ForgedNotificationError, PaymentState
from core.shop import Shop
from tests.epay import EpayGateway
from tests.factories import make_member

PID = "1001"
KEY = "89unJUB8HZ54Hj7x4nUj56HN4nUzUJ8i"


class NotifyEndpoint:
    """`/pay/epay/notify` answering as the bot does; `down` answers 503 that many times."""

    def __init__(self) -> None:
        self.shop: Shop | None = None
        self.down = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        assert self.shop is not None
        if self.down:
            self.down -= 1
            return web.Response(status=503, text="restarting")
        try:
            await self.shop.payments.credit_epay(dict(request.query))
        except ForgedNotificationError:
            return web.Response(status=400, text="fail")
        return web.Response(text="success")


@pytest.fixture
async def endpoint() -> AsyncIterator[NotifyEndpoint]:
    endpoint = NotifyEndpoint()
    app = web.Application()
    app.router.add_get("/pay/epay/notify", endpoint.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    endpoint.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield endpoint
    await runner.cleanup()


@pytest.fixture
async def gateway(clock: ManualClock) -> AsyncIterator[EpayGateway]:
    async with EpayGateway(
        {PID: KEY}, notify_delays=(0.01,) * 5, wall_clock=lambda: clock.now().timestamp()
    ) as gateway:
        yield gateway


@pytest.fixture
def settings(settings: Settings, gateway: EpayGateway, endpoint: NotifyEndpoint) -> Settings:
    return settings.model_copy(
        update={
            "stars_per_yuan": Decimal(2),
            "public_url": endpoint.url,
            "epay_url": gateway.url.rstrip("/"),
            "epay_pid": PID,
            "epay_key": SecretStr(KEY),
            "epay_methods": ("alipay", "wxpay", "qqpay"),
        }
    )


@pytest.fixture
def shop(shop: Shop, endpoint: NotifyEndpoint) -> Shop:
    endpoint.shop = shop
    return shop


async def _open(shop: Shop, gateway: EpayGateway, amount: int = 1999, method: str = "qqpay"):
    member = await make_member(shop.db, shop.clock, telegram_id=66_001)
    checkout = await shop.payments.start(member, amount, method)
    assert checkout.url is not None
    submission = await gateway.visit(checkout.url)
    assert submission.ok, submission.error
    return member, checkout.payment


async def test_the_gateway_takes_the_link_and_its_notify_credits_once(
    shop: Shop, gateway: EpayGateway
) -> None:
    member, payment = await _open(shop, gateway)
    order = gateway.order(payment.reference)
    assert (order.money, order.type, order.pid) == ("19.99", "qqpay", PID)

    await gateway.pay(payment.reference)
    attempts = await gateway.notified(payment.reference)

    assert [a.acknowledged for a in attempts] == [True]
    assert await shop.wallet.balance(member) == 1999
    credited = await shop.payments.get(payment.reference)
    assert credited is not None
    assert credited.state is PaymentState.CREDITED
    assert credited.provider_charge_id == order.trade_no


async def test_a_notify_retried_until_success_credits_once(
    shop: Shop, gateway: EpayGateway, endpoint: NotifyEndpoint
) -> None:
    member, payment = await _open(shop, gateway)
    endpoint.down = 2

    await gateway.pay(payment.reference)
    attempts = await gateway.notified(payment.reference)

    assert [a.acknowledged for a in attempts] == [False, False, True]
    replays = await gateway.replay_notify(payment.reference, times=10)
    assert all(r.acknowledged for r in replays)
    assert await shop.wallet.balance(member) == 1999


async def test_forged_tampered_wrong_merchant_and_unknown_notifies_are_refused(
    shop: Shop, gateway: EpayGateway, endpoint: NotifyEndpoint
) -> None:
    member, payment = await _open(shop, gateway)
    reference = payment.reference

    attempts = [
        await gateway.notify_forged_signature(reference),
        await gateway.notify_tampered_amount(reference, "0.01"),
        await gateway.notify_tampered_amount(reference, "0.01", resign=False),
        await gateway.notify_wrong_pid(reference, "2002"),
        await gateway.notify_unknown_order(endpoint.url + "/pay/epay/notify"),
    ]

    assert [(a.status, a.body) for a in attempts] == [(400, "fail")] * 5
    assert await shop.payments.get(reference) == payment
    assert await shop.wallet.balance(member) == 0


async def test_a_payment_whose_notifies_never_arrived_is_found_by_the_query(
    shop: Shop, gateway: EpayGateway, endpoint: NotifyEndpoint
) -> None:
    member, payment = await _open(shop, gateway)
    endpoint.down = 100

    await gateway.pay(payment.reference)
    attempts = await gateway.notified(payment.reference)
    assert not any(a.acknowledged for a in attempts)
    report = await shop.payments.reconcile()

    assert [c.payment.reference for c in report.credits] == [payment.reference]
    assert [q.answer["status"] for q in gateway.queries] == [1]
    assert await shop.wallet.balance(member) == 1999

"""The payments job on both databases: 易支付 orders asked about at a gateway on 127.0.0.1.

The gateway here answers only `api.php?act=order` the way 易支付 gateways do (JSON under
text/html, `code` 1 for a known order, `status` 1 once paid); it never notifies, which
is exactly the case the job is for.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from core.clock import ManualClock
from core.config import Settings
from core.jobs import Event, TopUpCredited
from core.payments import PaymentState
from core.shop import Shop, build_jobs
from tests.factories import make_member

PID = "1001"
KEY = "gateway-key"
TELEGRAM_ID = 777_003


@dataclass
class Gateway:
    """Orders the gateway knows, by out_trade_no, and every query it was asked."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    queries: list[dict[str, str]] = field(default_factory=list)
    broken: bool = False
    url: str = ""
    #: Hold every query until this many are in flight at once (0: answer at once).
    together: int = 0
    _in_flight: int = 0
    _all_in: asyncio.Event = field(default_factory=asyncio.Event)

    def paid(self, reference: str, money: str, *, trade_no: str = "2026112299990001") -> None:
        self.orders[reference] = {"status": 1, "money": money, "trade_no": trade_no}

    def unpaid(self, reference: str, money: str) -> None:
        self.orders[reference] = {"status": 0, "money": money, "trade_no": ""}

    async def api(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.queries.append(query)
        if self.together:
            self._in_flight += 1
            if self._in_flight >= self.together:
                self._all_in.set()
            await self._all_in.wait()
        if self.broken:
            return web.Response(status=502, text="bad gateway")
        if query.get("act") != "order" or query.get("pid") != PID or query.get("key") != KEY:
            return web.Response(text=json.dumps({"code": -2, "msg": "KEY校验失败"}))
        order = self.orders.get(query.get("out_trade_no", ""))
        if order is None:
            return web.Response(text=json.dumps({"code": -1, "msg": "订单号不存在"}))
        answer = {
            "code": 1,
            "msg": "查询订单号成功！",
            "pid": PID,
            "out_trade_no": query["out_trade_no"],
            "type": "alipay",
            "name": "Wallet top-up",
            **order,
        }
        return web.Response(text=json.dumps(answer, ensure_ascii=False), content_type="text/html")


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gateway = Gateway()
    app = web.Application()
    app.router.add_get("/api.php", gateway.api)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    gateway.url = f"http://{host}:{port}/"
    yield gateway
    await runner.cleanup()


@pytest.fixture
def settings(settings: Settings, gateway: Gateway) -> Settings:
    return settings.model_copy(
        update={
            "stars_per_yuan": Decimal(2),
            "public_url": "https://shop.example.com",
            "epay_url": gateway.url.rstrip("/"),
            "epay_pid": PID,
            "epay_key": SecretStr(KEY),
        }
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def notify(self, event: Event) -> None:
        self.events.append(event)


def _notify(reference: str, money: str, trade_no: str) -> dict[str, str]:
    params = {
        "pid": PID,
        "trade_no": trade_no,
        "out_trade_no": reference,
        "type": "alipay",
        "name": "Wallet top-up",
        "money": money,
        "trade_status": "TRADE_SUCCESS",
    }
    text = "&".join(f"{k}={v}" for k, v in sorted(params.items())) + KEY
    return {**params, "sign": hashlib.md5(text.encode()).hexdigest(), "sign_type": "MD5"}


async def _start(shop: Shop, amount: int = 1250) -> tuple[int, str]:
    member = await make_member(shop.db, shop.clock, telegram_id=TELEGRAM_ID)
    return member, (await shop.payments.start(member, amount, "alipay")).payment.reference


async def test_a_top_up_paid_without_a_notify_is_credited_by_the_query(
    shop: Shop, gateway: Gateway
) -> None:
    member, reference = await _start(shop)
    gateway.paid(reference, "12.50")

    report = await shop.payments.reconcile()

    assert gateway.queries == [{"act": "order", "pid": PID, "key": KEY, "out_trade_no": reference}]
    assert (report.queried, report.failed, report.expired) == (1, 0, 0)
    [credit] = report.credits
    assert credit.created
    assert (credit.balance_before, credit.balance_after) == (0, 1250)
    assert credit.payment.provider_charge_id == "2026112299990001"
    assert await shop.wallet.balance(member) == 1250

    # Asked again, nothing is pending; the notify arriving late is a replay.
    assert (await shop.payments.reconcile()).credits == ()
    late = await shop.payments.credit_epay(_notify(reference, "12.50", "2026112299990001"))
    assert not late.created
    assert await shop.wallet.balance(member) == 1250


async def test_an_unpaid_top_up_is_asked_about_until_it_expires(
    shop: Shop, gateway: Gateway
) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member, reference = await _start(shop)
    gateway.unpaid(reference, "12.50")

    first = await shop.payments.reconcile()
    clock.advance(timedelta(minutes=30))
    due = await shop.payments.reconcile()
    after = await shop.payments.reconcile()

    assert (first.queried, first.credits, first.expired) == (1, (), 0)
    assert (due.queried, due.credits, due.expired) == (1, (), 1)
    assert (after.queried, after.expired) == (0, 0)
    payment = await shop.payments.get(reference)
    assert payment is not None
    assert payment.state is PaymentState.EXPIRED
    assert await shop.wallet.balance(member) == 0


async def test_a_payment_in_the_last_minute_is_credited_not_expired(
    shop: Shop, gateway: Gateway
) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member, reference = await _start(shop)
    clock.advance(timedelta(minutes=45))
    gateway.paid(reference, "12.50")

    report = await shop.payments.reconcile()

    assert (len(report.credits), report.expired) == (1, 0)
    assert await shop.wallet.balance(member) == 1250


async def test_a_gateway_answer_with_other_money_credits_nothing(
    shop: Shop, gateway: Gateway
) -> None:
    member, reference = await _start(shop)
    gateway.paid(reference, "125.00")

    report = await shop.payments.reconcile()

    assert (report.queried, report.credits, report.failed) == (1, (), 1)
    payment = await shop.payments.get(reference)
    assert payment is not None
    assert payment.state is PaymentState.PENDING
    assert await shop.wallet.balance(member) == 0


async def test_a_gateway_that_is_down_is_counted_and_asked_again(
    shop: Shop, gateway: Gateway
) -> None:
    member, reference = await _start(shop)
    gateway.paid(reference, "12.50")
    gateway.broken = True

    down = await shop.payments.reconcile()
    gateway.broken = False
    up = await shop.payments.reconcile()

    assert (down.queried, down.failed, down.credits) == (0, 1, ())
    assert len(up.credits) == 1
    assert await shop.wallet.balance(member) == 1250


async def test_an_order_the_gateway_does_not_know_stays_pending(
    shop: Shop, gateway: Gateway
) -> None:
    _, reference = await _start(shop)

    report = await shop.payments.reconcile()

    assert (report.queried, report.credits, report.failed) == (1, (), 0)
    payment = await shop.payments.get(reference)
    assert payment is not None
    assert payment.state is PaymentState.PENDING


async def test_the_query_and_the_notify_racing_credit_once(shop: Shop, gateway: Gateway) -> None:
    member, reference = await _start(shop)
    gateway.paid(reference, "12.50", trade_no="T-1")
    params = _notify(reference, "12.50", "T-1")

    results = await asyncio.gather(
        shop.payments.reconcile(),
        *(shop.payments.credit_epay(params) for _ in range(5)),
        shop.payments.reconcile(),
    )

    reports, credits = [results[0], results[-1]], results[1:-1]
    created = sum(len(r.credits) for r in reports) + sum(c.created for c in credits)
    assert created == 1
    assert await shop.wallet.balance(member) == 1250


async def test_stars_invoices_left_unpaid_expire(shop: Shop, gateway: Gateway) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member = await make_member(shop.db, shop.clock, telegram_id=TELEGRAM_ID)
    invoice = (await shop.payments.start(member, 1000, "stars")).payment
    clock.advance(timedelta(minutes=31))

    report = await shop.payments.reconcile()

    assert report.expired == 1
    assert gateway.queries == []
    payment = await shop.payments.get(invoice.reference)
    assert payment is not None
    assert payment.state is PaymentState.EXPIRED


async def test_the_payments_job_tells_the_member_once(shop: Shop, gateway: Gateway) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member, reference = await _start(shop)
    gateway.paid(reference, "12.50")
    recorder = Recorder()

    reports = {r.job: r for r in await build_jobs(shop, recorder).run_due()}
    clock.advance(timedelta(minutes=1))
    later = {r.job: r for r in await build_jobs(shop, recorder).run_due()}

    assert reports["payments"].result == {
        "queried": 1, "credited": 1, "told": 1, "failed": 0, "expired": 0,
    }  # fmt: skip
    assert later["payments"].result == {
        "queried": 0, "credited": 0, "told": 0, "failed": 0, "expired": 0,
    }  # fmt: skip
    [event] = recorder.events
    assert isinstance(event, TopUpCredited)
    assert event.credit.payment.reference == reference
    assert (event.credit.telegram_id, event.credit.balance_after) == (TELEGRAM_ID, 1250)
    assert await shop.wallet.balance(member) == 1250


async def test_the_gateway_is_asked_about_several_orders_at_once(
    shop: Shop, gateway: Gateway
) -> None:
    """A gateway that answers nobody until three queries wait: asked one at a time, the
    first would time out; asked together, all three are credited."""
    members = [await make_member(shop.db, shop.clock, telegram_id=7000 + i) for i in range(3)]
    for member in members:
        payment = (await shop.payments.start(member, 1000, "alipay")).payment
        gateway.paid(payment.reference, "10.00", trade_no=f"T{member}")
    gateway.together = 3

    report = await shop.payments.reconcile()

    assert (len(report.credits), report.failed) == (3, 0)
    for member in members:
        assert await shop.wallet.balance(member) == 1000

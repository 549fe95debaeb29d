"""The 易支付 stand-in signs, refuses, answers queries and notifies as real gateways do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web

from tests.epay import EpayGateway, sign, signing_string

PID = "1001"
KEY = "k3yForTests"


@dataclass
class Shop:
    """The shop's notify endpoint: records every notify and answers from `answers`."""

    url: str = ""
    answers: list[str] = field(default_factory=list)
    received: list[dict[str, str]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    expected: int = 0

    async def notify(self, request: web.Request) -> web.Response:
        self.received.append(dict(request.query))
        if self.gate is not None:
            # Held until `expected` notifies are in flight at once.
            if len(self.received) >= self.expected:
                self.gate.set()
            await asyncio.wait_for(self.gate.wait(), 5)
        body = self.answers.pop(0) if self.answers else "success"
        return web.Response(text=body)


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    recorder = Shop()
    app = web.Application()
    app.router.add_get("/pay/epay/notify", recorder.notify)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield recorder
    await runner.cleanup()


@pytest.fixture
async def gateway() -> AsyncIterator[EpayGateway]:
    async with EpayGateway({PID: KEY, "2002": "other-key"}, notify_delays=[0.01] * 4) as stub:
        yield stub


def order_params(shop: Shop, **changes: str) -> dict[str, str]:
    """What the shop sends to submit.php, signed with the merchant key unless `sign` is given."""
    params = {
        "pid": PID,
        "type": "alipay",
        "out_trade_no": "T7xKq2",
        "notify_url": f"{shop.url}/pay/epay/notify",
        "return_url": f"{shop.url}/pay/epay/return",
        "name": "充值 ¥10",
        "money": "10.00",
        "sitename": "卡盟",
        **changes,
    }
    params.setdefault("sign", sign(params, KEY))
    params["sign_type"] = "MD5"
    return params


def link(gateway: EpayGateway, params: dict[str, str]) -> str:
    return f"{gateway.url}submit.php?{urlencode(params)}"


async def paid_order(gateway: EpayGateway, shop: Shop, out_trade_no: str = "T7xKq2") -> None:
    assert (await gateway.visit(link(gateway, order_params(shop, out_trade_no=out_trade_no)))).ok


async def query(gateway: EpayGateway, **params: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway.url}api.php", params={"act": "order", **params}) as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        answer: dict[str, Any] = await response.json()
        return answer


# ----------------------------------------------------------------- signing


def test_signature_is_md5_of_sorted_nonempty_params_then_the_key():
    params = {
        "pid": "1001",
        "type": "alipay",
        "out_trade_no": "T1",
        "notify_url": "http://shop/n",
        "return_url": "http://shop/r",
        "name": "充值 ¥10",
        "money": "10.00",
        "sitename": "",
        "sign": "ignored",
        "sign_type": "MD5",
    }

    assert signing_string(params) == (
        "money=10.00&name=充值 ¥10&notify_url=http://shop/n&out_trade_no=T1"
        "&pid=1001&return_url=http://shop/r&type=alipay"
    )
    # md5sum of the string above followed by the key "k3y", computed outside Python.
    assert sign(params, "k3y") == "0cc3c9e29b8d8cd040bc8924f53c565e"


# -------------------------------------------------------------- submit.php


async def test_a_signed_link_opens_the_cashier_and_records_the_order(
    gateway: EpayGateway, shop: Shop
):
    params = order_params(shop, money="10")

    submission = await gateway.visit(link(gateway, params))

    assert submission.ok
    order = gateway.order("T7xKq2")
    assert submission.order is order
    assert (order.pid, order.type, order.name, order.money) == (PID, "alipay", "充值 ¥10", "10.00")
    assert (order.status, order.endtime, order.sitename) == (0, None, "卡盟")
    assert order.notify_url == f"{shop.url}/pay/epay/notify"
    assert len(order.trade_no) == 19
    # The buyer opening the same link again gets the same order.
    assert (await gateway.visit(link(gateway, params))).order is order
    assert len(gateway.orders) == 1


async def test_submit_by_post_form(gateway: EpayGateway, shop: Shop):
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{gateway.url}submit.php", data=order_params(shop)) as response,
    ):
        page = await response.text()

    assert response.status == 200
    assert gateway.order("T7xKq2").trade_no in page
    assert gateway.submissions[-1].method == "POST"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sign": "0" * 32}, "签名校验失败，请返回重试！"),
        ({"pid": "9999"}, "商户不存在！"),
        ({"pid": ""}, "PID不存在"),
        ({"notify_url": ""}, "通知地址(notify_url)不能为空"),
        ({"money": "-1"}, "金额不合法"),
        ({"money": "0.00"}, "金额不合法"),
        ({"money": "1.005"}, "金额不合法"),
        ({"type": "paypal"}, "支付方式(type)不存在"),
        ({"out_trade_no": "T 1"}, "订单号(out_trade_no)格式不正确"),
    ],
)
async def test_submit_refusals_are_pages_with_the_gateways_message(
    gateway: EpayGateway, shop: Shop, changes: dict[str, str], message: str
):
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gateway.url}submit.php", params=order_params(shop, **changes)) as response,
    ):
        page = await response.text()

    assert (response.status, response.content_type) == (200, "text/html")
    assert message in page
    assert gateway.submissions[-1].error == message
    assert gateway.orders == {}


async def test_the_signature_is_exact_and_covers_every_value(gateway: EpayGateway, shop: Shop):
    upper = order_params(shop)
    upper["sign"] = upper["sign"].upper()
    tampered = order_params(shop)
    tampered["money"] = "0.01"

    refusals = [(await gateway.visit(link(gateway, p))).error for p in (upper, tampered)]

    assert refusals == ["签名校验失败，请返回重试！"] * 2
    assert gateway.orders == {}


async def test_an_order_number_cannot_be_reused_for_another_amount(
    gateway: EpayGateway, shop: Shop
):
    await paid_order(gateway, shop)

    again = await gateway.visit(link(gateway, order_params(shop, money="20.00")))
    await gateway.pay("T7xKq2")
    reopened = await gateway.visit(link(gateway, order_params(shop)))

    assert again.error == "该订单号已存在，请更换订单号"
    assert reopened.error == "该订单已完成支付，请勿重复提交"
    assert gateway.order("T7xKq2").money == "10.00"


async def test_visit_refuses_a_link_to_another_host(gateway: EpayGateway, shop: Shop):
    with pytest.raises(ValueError, match="does not lead to this gateway"):
        await gateway.visit("https://pay.example.com/submit.php?pid=1001")


# ----------------------------------------------------------------- api.php


async def test_order_query_reports_status_before_and_after_payment(
    gateway: EpayGateway, shop: Shop
):
    await paid_order(gateway, shop)
    before = await query(gateway, pid=PID, key=KEY, out_trade_no="T7xKq2")
    order = await gateway.pay("T7xKq2")
    after = await query(gateway, pid=PID, key=KEY, out_trade_no="T7xKq2")
    by_trade_no = await query(gateway, pid=PID, key=KEY, trade_no=order.trade_no)

    assert before["code"] == 1
    assert (before["status"], before["endtime"]) == (0, None)
    assert after == by_trade_no
    assert after["status"] == 1
    assert after["endtime"] == order.endtime
    assert {k: after[k] for k in ("trade_no", "out_trade_no", "type", "pid", "name", "money")} == {
        "trade_no": order.trade_no,
        "out_trade_no": "T7xKq2",
        "type": "alipay",
        "pid": 1001,
        "name": "充值 ¥10",
        "money": "10.00",
    }
    assert [q.answer["status"] for q in gateway.queries] == [0, 1, 1]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pid": PID, "key": "wrong", "out_trade_no": "T7xKq2"}, "KEY校验失败"),
        ({"pid": "9999", "key": KEY, "out_trade_no": "T7xKq2"}, "商户不存在"),
        ({"pid": PID, "key": KEY, "out_trade_no": "T-unknown"}, "订单号不存在"),
        ({"pid": "2002", "key": "other-key", "out_trade_no": "T7xKq2"}, "订单号不存在"),
        ({"pid": PID, "key": KEY}, "订单号不能为空"),
    ],
)
async def test_order_query_refusals(
    gateway: EpayGateway, shop: Shop, params: dict[str, str], message: str
):
    await paid_order(gateway, shop)

    assert await query(gateway, **params) == {"code": -1, "msg": message}


# ------------------------------------------------------------------ notify


async def test_notify_is_retried_until_the_body_is_exactly_success(
    gateway: EpayGateway, shop: Shop
):
    shop.answers = ["fail", "<p>success</p>", "success\n"]
    await paid_order(gateway, shop)

    order = await gateway.pay("T7xKq2")
    attempts = await gateway.notified("T7xKq2")

    assert [a.acknowledged for a in attempts] == [False, False, True]
    assert [a.body for a in attempts] == ["fail", "<p>success</p>", "success\n"]
    notify = shop.received[0]
    assert shop.received == [notify] * 3
    assert notify == {
        "pid": PID,
        "trade_no": order.trade_no,
        "out_trade_no": "T7xKq2",
        "type": "alipay",
        "name": "充值 ¥10",
        "money": "10.00",
        "trade_status": "TRADE_SUCCESS",
        "sign": sign(notify, KEY),
        "sign_type": "MD5",
    }
    assert order.paid


async def test_notify_gives_up_when_the_schedule_is_used_up(gateway: EpayGateway, shop: Shop):
    shop.answers = ["fail"] * 10
    await paid_order(gateway, shop)

    await gateway.pay("T7xKq2")
    attempts = await gateway.notified("T7xKq2")

    assert len(attempts) == 1 + len(gateway.notify_delays)
    assert not any(a.acknowledged for a in attempts)


async def test_an_unreachable_shop_is_retried_and_recorded(gateway: EpayGateway, shop: Shop):
    params = order_params(shop, notify_url="http://127.0.0.1:9/pay/epay/notify")
    assert (await gateway.visit(link(gateway, params))).ok
    gateway.notify_delays = [0.01]

    await gateway.pay("T7xKq2", type="wxpay")
    attempts = await gateway.notified("T7xKq2")

    assert len(attempts) == 2
    assert all(a.status is None and (a.error or "").startswith("connection") for a in attempts)


async def test_without_a_type_the_buyer_picks_one_at_the_cashier(gateway: EpayGateway, shop: Shop):
    assert (await gateway.visit(link(gateway, order_params(shop, type="")))).ok

    order = await gateway.pay("T7xKq2", type="wxpay")

    assert order.type == "wxpay"
    assert shop.received[0]["type"] == "wxpay"


async def test_return_url_carries_the_signed_result(gateway: EpayGateway, shop: Shop):
    await paid_order(gateway, shop)
    with pytest.raises(ValueError, match="not paid"):
        gateway.return_url("T7xKq2")
    await gateway.pay("T7xKq2")

    url = gateway.return_url("T7xKq2")

    assert url.startswith(f"{shop.url}/pay/epay/return?")
    query_string = dict(parse_qsl(urlsplit(url).query))
    assert query_string["sign"] == sign(query_string, KEY)
    assert query_string["trade_status"] == "TRADE_SUCCESS"


# ----------------------------------------------------------- attackers


async def test_forged_and_tampered_notifies(gateway: EpayGateway, shop: Shop):
    await paid_order(gateway, shop)
    other = order_params(shop, out_trade_no="T-other")
    assert (await gateway.visit(link(gateway, other))).ok

    forged = await gateway.notify_forged_signature("T7xKq2")
    tampered = await gateway.notify_tampered_amount("T7xKq2", "0.01")
    tampered_unsigned = await gateway.notify_tampered_amount("T7xKq2", "0.01", resign=False)
    wrong_pid = await gateway.notify_wrong_pid("T7xKq2", "2002")
    unknown = await gateway.notify_unknown_order(f"{shop.url}/pay/epay/notify")
    closed = await gateway.send_notify("T7xKq2", changes={"trade_status": "TRADE_CLOSED"})

    def valid(params: dict[str, str]) -> bool:
        return params["sign"] == sign(params, KEY)

    assert [a.kind for a in gateway.notify_attempts] == [
        "forged",
        "tampered",
        "tampered",
        "wrong_pid",
        "unknown_order",
        "custom",
    ]
    assert shop.received == [a.params for a in gateway.notify_attempts]
    assert not valid(forged.params)
    assert (tampered.params["money"], valid(tampered.params)) == ("0.01", True)
    assert (tampered_unsigned.params["money"], valid(tampered_unsigned.params)) == ("0.01", False)
    assert (wrong_pid.params["pid"], valid(wrong_pid.params)) == ("2002", True)
    assert (unknown.params["out_trade_no"], valid(unknown.params)) == ("T-never-submitted", True)
    assert (closed.params["trade_status"], valid(closed.params)) == ("TRADE_CLOSED", True)
    # Nobody paid: the attackers changed nothing at the gateway.
    assert not gateway.order("T7xKq2").paid
    assert not gateway.order("T-other").paid


async def test_replay_sends_the_genuine_notify_concurrently(gateway: EpayGateway, shop: Shop):
    await paid_order(gateway, shop)
    with pytest.raises(ValueError, match="not paid"):
        await gateway.replay_notify("T7xKq2")
    await gateway.pay("T7xKq2")
    genuine = shop.received[0]
    # Every replayed notify is held until all ten are in flight: proof they overlap.
    shop.gate = asyncio.Event()
    shop.expected = 1 + 10

    replays = await gateway.replay_notify("T7xKq2", 10)

    assert len(replays) == 10
    assert all(r.kind == "replay" and r.acknowledged for r in replays)
    assert shop.received[1:] == [genuine] * 10

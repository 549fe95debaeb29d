"""A local stand-in for a 易支付 (epay) gateway, for running the shop's 易支付 flow end to end.

The shop is pointed at `EpayGateway.url` (`EPAY_URL`) with one of the merchants the gateway
was built with (`EPAY_PID`, `EPAY_KEY`). It answers as the widespread 彩虹易支付 does:

- `submit.php` (GET or POST form) checks the merchant and the MD5 signature, takes the order
  and shows the cashier page; a refusal is a page with the gateway's message (HTTP 200, as
  real gateways answer).
- `api.php?act=order&pid=&key=&out_trade_no=` (or `trade_no=`) answers JSON, `code` 1 with the
  order or -1 with `msg`.
- `pay(out_trade_no)` plays the buyer paying: the order is marked paid under a `trade_no` of
  the gateway's own and its `notify_url` is called by GET with the signed notify parameters,
  again on the `notify_delays` schedule until the body reads exactly `success`.

Tests drive the buyer and attackers in-process (`visit`, `pay`, `send_notify` and the forged
notify helpers) and read back `orders`, `submissions`, `notify_attempts` and `queries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from tests.epay.records import EpayOrder, NotifyAttempt, OrderQuery, Submission
from tests.epay.signing import sign

#: Payment methods a 易支付 gateway offers: 支付宝, 微信支付, QQ钱包.
PAY_TYPES = frozenset({"alipay", "wxpay", "qqpay"})
#: Seconds between notify retries after the first attempt, the kind of schedule real
#: gateways keep (then they give up); tests pass a short one.
NOTIFY_DELAYS = (15.0, 15.0, 30.0, 180.0, 1800.0, 1800.0, 1800.0, 1800.0, 3600.0)
#: The gateway's clock: 易支付 runs on China time and prints it plainly.
GATEWAY_TZ = ZoneInfo("Asia/Shanghai")

_OUT_TRADE_NO = re.compile(r"[a-zA-Z0-9._\-|]+")
_MONEY = re.compile(r"[0-9]+(\.[0-9]{1,2})?")

_ERROR_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>站点提示信息</title></head>
<body><div class="container"><h3>站点提示信息</h3><div class="msg">{message}</div></div></body>
</html>"""
_CASHIER_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>收银台</title></head>
<body><div class="cashier">
<p class="name">{name}</p><p class="money">¥{money}</p>
<p>订单号 <span class="trade_no">{trade_no}</span></p>
<p>商户订单号 <span class="out_trade_no">{out_trade_no}</span></p>
<p>支付方式 <span class="type">{type}</span></p>
</div></body></html>"""


class EpayGateway:
    """The gateway plus the buyer's side, for the merchants (pid → key) it is built with.

    Use as `async with EpayGateway({"1001": "key"}) as gateway:` (or `await start()` /
    `await stop()`); it listens on 127.0.0.1 on a free port. `notify_delays` and
    `notify_timeout` are plain attributes a test may change at any time.
    """

    def __init__(
        self,
        merchants: Mapping[str, str],
        *,
        notify_delays: Sequence[float] = NOTIFY_DELAYS,
        notify_timeout: float = 10.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not merchants:
            raise ValueError("a gateway needs at least one merchant (pid → key)")
        self.merchants = dict(merchants)
        self.notify_delays: Sequence[float] = tuple(notify_delays)
        self.notify_timeout = notify_timeout
        self.orders: dict[tuple[str, str], EpayOrder] = {}
        self.submissions: list[Submission] = []
        self.notify_attempts: list[NotifyAttempt] = []
        self.queries: list[OrderQuery] = []
        #: Unix time for `addtime` / `endtime` and trade numbers: a test hands in its
        #: shop's clock so nothing depends on the day the suite runs.
        self._wall_clock = wall_clock
        self._trade_numbers = itertools.count(10001)
        self._notifying: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """What `EPAY_URL` is set to: `http://127.0.0.1:<port>/`."""
        if self._port is None:
            raise RuntimeError("EpayGateway is not started")
        return f"http://127.0.0.1:{self._port}/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/submit.php", self._handle_submit)
        app.router.add_route("*", "/api.php", self._handle_api)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Stops notifying (pending retries are dropped) and closes the server."""
        for task in self._notifying.values():
            task.cancel()
        for task in self._notifying.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------ the buyer side

    def order(self, out_trade_no: str, pid: str | None = None) -> EpayOrder:
        """The order the shop submitted as `out_trade_no` (for `pid` if several merchants)."""
        found = [
            order
            for (order_pid, number), order in self.orders.items()
            if number == out_trade_no and pid in (None, order_pid)
        ]
        if len(found) != 1:
            raise LookupError(
                f"{len(found)} orders {out_trade_no!r} at the gateway; the buyer must open "
                "the pay link first (visit(url)), and several merchants need pid="
            )
        return found[0]

    async def visit(self, url: str) -> Submission:
        """The buyer's browser opens the shop's pay link; returns what the gateway made of it."""
        if not url.startswith(self.url):
            raise ValueError(f"{url!r} does not lead to this gateway ({self.url})")
        session = self._client()
        async with session.get(url) as response:
            await response.read()
        sent = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        return next(s for s in reversed(self.submissions) if s.params == sent)

    async def pay(
        self, out_trade_no: str, *, pid: str | None = None, type: str | None = None
    ) -> EpayOrder:
        """The buyer pays: the order is marked paid and the shop notified.

        Returns after the first notify; retries follow in the background on the
        `notify_delays` schedule until the shop answers `success` (see `notified`). `type`
        is the method the buyer chose at the cashier when the shop sent none.
        """
        order = self.order(out_trade_no, pid)
        if order.paid:
            raise ValueError(f"order {out_trade_no!r} is already paid")
        order.status = 1
        order.endtime = self._now()
        order.type = order.type or type or "alipay"
        if await self._attempt(order, "notify", self._notify_params(order)):
            return order
        key = (order.pid, order.out_trade_no)
        self._notifying[key] = asyncio.create_task(self._retry_notify(order))
        return order

    async def notified(
        self,
        out_trade_no: str,
        *,
        pid: str | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a plain deadline reads best in scenarios
    ) -> list[NotifyAttempt]:
        """Waits until the gateway stops notifying the paid order; returns its attempts.

        It stops when the shop answers `success` or when `notify_delays` is used up; the
        last attempt says which.
        """
        order = self.order(out_trade_no, pid)
        task = self._notifying.get((order.pid, order.out_trade_no))
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        return [
            attempt
            for attempt in self.notify_attempts
            if attempt.kind == "notify"
            and attempt.out_trade_no == out_trade_no
            and attempt.params.get("pid") == order.pid
        ]

    def return_url(self, out_trade_no: str, *, pid: str | None = None) -> str:
        """Where the gateway sends the buyer's browser after paying: `return_url` + signed query."""
        order = self.order(out_trade_no, pid)
        if not order.paid:
            raise ValueError(f"order {out_trade_no!r} is not paid")
        return _with_query(order.return_url, self._notify_params(order))

    # --------------------------------------------------------- attacker helpers

    async def send_notify(
        self,
        out_trade_no: str,
        *,
        pid: str | None = None,
        changes: Mapping[str, str] | None = None,
        key: str | None = None,
        signature: str | None = None,
        kind: str = "custom",
    ) -> NotifyAttempt:
        """One notify for the order, as the gateway would send it, with `changes` applied.

        Signed after the changes with `key` (the order's merchant key by default) unless a
        `signature` is given. Sent once, never retried, and the order is not touched.
        """
        order = self.order(out_trade_no, pid)
        params = self._notify_params(order, paid=True)
        params.update(changes or {})
        params["sign"] = signature or sign(params, key or self.merchants[order.pid])
        return await self._send(kind, order.notify_url, params)

    async def notify_forged_signature(
        self, out_trade_no: str, *, pid: str | None = None
    ) -> NotifyAttempt:
        """A genuine-looking notify signed with a key that is not the merchant's."""
        return await self.send_notify(
            out_trade_no, pid=pid, key="not-the-merchant-key", kind="forged"
        )

    async def notify_tampered_amount(
        self, out_trade_no: str, money: str, *, pid: str | None = None, resign: bool = True
    ) -> NotifyAttempt:
        """A notify for `money` instead of the order's amount.

        With `resign` it is correctly signed with the merchant key, so only the shop's check
        that `money` is what it asked for can catch it; without, the original signature is
        kept and the signature check catches it.
        """
        order = self.order(out_trade_no, pid)
        original = sign(self._notify_params(order, paid=True), self.merchants[order.pid])
        return await self.send_notify(
            out_trade_no,
            pid=pid,
            changes={"money": money},
            signature=None if resign else original,
            kind="tampered",
        )

    async def notify_wrong_pid(
        self, out_trade_no: str, other_pid: str, *, pid: str | None = None
    ) -> NotifyAttempt:
        """The order's notify under another merchant id, signed with the order's merchant key.

        The signature checks out, so only the shop's check of the merchant id can refuse it.
        """
        return await self.send_notify(
            out_trade_no, pid=pid, changes={"pid": other_pid}, kind="wrong_pid"
        )

    async def notify_unknown_order(
        self,
        notify_url: str,
        *,
        pid: str | None = None,
        out_trade_no: str = "T-never-submitted",
        money: str = "10.00",
        type: str = "alipay",
    ) -> NotifyAttempt:
        """A correctly signed notify for an order the shop never created."""
        merchant = pid or next(iter(self.merchants))
        params = {
            "pid": merchant,
            "trade_no": self._trade_no(),
            "out_trade_no": out_trade_no,
            "type": type,
            "name": "充值",
            "money": money,
            "trade_status": "TRADE_SUCCESS",
            "sign_type": "MD5",
        }
        params["sign"] = sign(params, self.merchants[merchant])
        return await self._send("unknown_order", notify_url, params)

    async def replay_notify(
        self, out_trade_no: str, times: int = 10, *, pid: str | None = None
    ) -> list[NotifyAttempt]:
        """The paid order's genuine notify sent `times` times at once (a replay, a retry storm)."""
        order = self.order(out_trade_no, pid)
        if not order.paid:
            raise ValueError(f"order {out_trade_no!r} is not paid: nothing genuine to replay")
        params = self._notify_params(order)
        sends = [self._send("replay", order.notify_url, dict(params)) for _ in range(times)]
        return list(await asyncio.gather(*sends))

    # ------------------------------------------------------------- notifying

    def _notify_params(self, order: EpayOrder, *, paid: bool = False) -> dict[str, str]:
        """The notify parameters of a paid order (or as if paid), signed with the merchant key."""
        if not (order.paid or paid):
            raise ValueError(f"order {order.out_trade_no!r} is not paid")
        params = {
            "pid": order.pid,
            "trade_no": order.trade_no,
            "out_trade_no": order.out_trade_no,
            "type": order.type or "alipay",
            "name": order.name,
            "money": order.money,
            "trade_status": "TRADE_SUCCESS",
        }
        if order.param:
            params["param"] = order.param
        params["sign"] = sign(params, self.merchants[order.pid])
        params["sign_type"] = "MD5"
        return params

    async def _retry_notify(self, order: EpayOrder) -> None:
        for delay in self.notify_delays:
            await asyncio.sleep(delay)
            if await self._attempt(order, "notify", self._notify_params(order)):
                return

    async def _attempt(self, order: EpayOrder, kind: str, params: dict[str, str]) -> bool:
        return (await self._send(kind, order.notify_url, params)).acknowledged

    async def _send(self, kind: str, notify_url: str, params: dict[str, str]) -> NotifyAttempt:
        """GETs `notify_url` with `params` and records the answer (or the failure)."""
        url = _with_query(notify_url, params)
        status: int | None = None
        body: str | None = None
        error: str | None = None
        try:
            async with self._client().get(
                url, timeout=aiohttp.ClientTimeout(total=self.notify_timeout)
            ) as response:
                status = response.status
                body = (await response.read()).decode("utf-8", errors="replace")
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as exc:
            error = f"connection failed: {exc}"
        attempt = NotifyAttempt(
            kind, params.get("out_trade_no", ""), url, params, status, body, error
        )
        self.notify_attempts.append(attempt)
        return attempt

    # ------------------------------------------------------------------ HTTP

    async def _handle_submit(self, request: web.Request) -> web.Response:
        params = await _request_params(request)
        try:
            order = self._take_order(params)
        except _RefusedError as refusal:
            self.submissions.append(Submission(request.method, params, refusal.message, None))
            page = _ERROR_PAGE.format(message=html.escape(refusal.message))
            return web.Response(text=page, content_type="text/html")
        self.submissions.append(Submission(request.method, params, None, order))
        page = _CASHIER_PAGE.format(
            **{
                name: html.escape(str(getattr(order, name)))
                for name in ("name", "money", "trade_no", "out_trade_no", "type")
            }
        )
        return web.Response(text=page, content_type="text/html")

    def _take_order(self, params: dict[str, str]) -> EpayOrder:
        """The order for a submit.php visit: checked as 彩虹易支付 checks it, then kept."""
        pid = params.get("pid", "")
        if not pid:
            raise _RefusedError("PID不存在")
        key = self.merchants.get(pid)
        if key is None:
            raise _RefusedError("商户不存在！")
        if params.get("sign_type", "MD5") != "MD5":
            raise _RefusedError("签名类型(sign_type)不支持")
        if params.get("sign", "") != sign(params, key):
            raise _RefusedError("签名校验失败，请返回重试！")
        out_trade_no = params.get("out_trade_no", "")
        for field, label in (
            ("out_trade_no", "订单号"),
            ("notify_url", "通知地址"),
            ("return_url", "回调地址"),
            ("name", "商品名称"),
            ("money", "金额"),
        ):
            if not params.get(field):
                raise _RefusedError(f"{label}({field})不能为空")
        if not _OUT_TRADE_NO.fullmatch(out_trade_no):
            raise _RefusedError("订单号(out_trade_no)格式不正确")
        money = _money(params["money"])
        pay_type = params.get("type", "")
        if pay_type and pay_type not in PAY_TYPES:
            raise _RefusedError("支付方式(type)不存在")
        existing = self.orders.get((pid, out_trade_no))
        if existing is not None:
            # The buyer opening the same link again gets the same unpaid order back.
            if existing.paid:
                raise _RefusedError("该订单已完成支付，请勿重复提交")
            if (existing.money, existing.name, existing.notify_url) != (
                money,
                params["name"],
                params["notify_url"],
            ):
                raise _RefusedError("该订单号已存在，请更换订单号")
            return existing
        order = EpayOrder(
            pid=pid,
            trade_no=self._trade_no(),
            out_trade_no=out_trade_no,
            type=pay_type,
            name=params["name"],
            money=money,
            notify_url=params["notify_url"],
            return_url=params["return_url"],
            sitename=params.get("sitename", ""),
            param=params.get("param", ""),
            addtime=self._now(),
        )
        self.orders[(pid, out_trade_no)] = order
        return order

    async def _handle_api(self, request: web.Request) -> web.Response:
        params = await _request_params(request)
        answer = self._answer_query(params)
        self.queries.append(OrderQuery(params, answer))
        return web.json_response(answer)

    def _answer_query(self, params: dict[str, str]) -> dict[str, Any]:
        """api.php: `act=order` with the merchant's pid and key, by out_trade_no or trade_no."""
        if params.get("act") != "order":
            return {"code": -1, "msg": "No Act!"}
        pid = params.get("pid", "")
        key = self.merchants.get(pid)
        if key is None:
            return {"code": -1, "msg": "商户不存在"}
        if params.get("key") != key:
            return {"code": -1, "msg": "KEY校验失败"}
        order: EpayOrder | None
        if params.get("trade_no"):
            order = next(
                (o for o in self.orders.values() if o.trade_no == params["trade_no"]), None
            )
        elif params.get("out_trade_no"):
            order = self.orders.get((pid, params["out_trade_no"]))
        else:
            return {"code": -1, "msg": "订单号不能为空"}
        if order is None or order.pid != pid:
            return {"code": -1, "msg": "订单号不存在"}
        return {
            "code": 1,
            "msg": "查询订单号成功！",
            "trade_no": order.trade_no,
            "out_trade_no": order.out_trade_no,
            "type": order.type,
            # PHP's intval: a numeric merchant id comes back as a number.
            "pid": int(order.pid) if order.pid.isdigit() else order.pid,
            "addtime": order.addtime,
            "endtime": order.endtime,
            "name": order.name,
            "money": order.money,
            "param": order.param,
            "buyer": "",
            "status": order.status,
        }

    # ------------------------------------------------------------------ misc

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("EpayGateway is not started")
        return self._session

    def _now(self) -> str:
        return datetime.fromtimestamp(self._wall_clock(), GATEWAY_TZ).strftime("%Y-%m-%d %H:%M:%S")

    def _trade_no(self) -> str:
        """The gateway's own order number: the time to the second plus a serial."""
        stamp = datetime.fromtimestamp(self._wall_clock(), GATEWAY_TZ).strftime("%Y%m%d%H%M%S")
        return f"{stamp}{next(self._trade_numbers)}"


class _RefusedError(Exception):
    """submit.php shows `message` on its error page instead of taking the order."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _money(value: str) -> str:
    """The amount as the gateway stores it, two decimals; refused unless a positive number."""
    try:
        amount = Decimal(value) if _MONEY.fullmatch(value) else Decimal(0)
    except InvalidOperation:
        amount = Decimal(0)
    if amount <= 0:
        raise _RefusedError("金额不合法")
    return f"{amount.quantize(Decimal('0.01'))}"


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """`url` with `params` appended the way PHP's http_build_query encodes them."""
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


async def _request_params(request: web.Request) -> dict[str, str]:
    """Query parameters, then form fields for a POST, as PHP's $_REQUEST sees them."""
    params = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        form = await request.post()
        params.update({name: str(value) for name, value in form.items()})
    return params

"""易支付 (epay): the aggregator nearly every 卡盟 uses for 支付宝, 微信 and QQ钱包.

The protocol, as the common gateways (the open-source "彩虹易支付" and its clones) speak
it: every request and notification carries `sign`, the MD5 (lowercase hex) of the
parameters except `sign` and `sign_type` and those with an empty value, sorted by
name and joined as `k=v&k=v` with the raw (not URL-encoded) values, followed directly
by the merchant key. The buyer is sent to `submit.php` with the signed order; the
gateway calls `notify_url` with the signed result (`trade_status=TRADE_SUCCESS`) until
it reads exactly `success`; `api.php?act=order` (merchant id and key) tells an
order's state when a notification never came.

A notification is trusted only when its signature (compared in constant time), the
merchant id, and the amount (exact, as a decimal of yuan) hold; anything else raises
`ForgedNotificationError` and moves nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp

from core.models import Payment, max_length
from core.money import format_plain
from core.payments.providers import Charge, Notification
from core.payments.views import EPAY, ForgedNotificationError, PaymentView

log = logging.getLogger(__name__)

#: The success a notification must report; other states (WAIT_BUYER_PAY...) move nothing.
TRADE_SUCCESS = "TRADE_SUCCESS"
#: The only signing variant the shop speaks (EPAY_SIGN_TYPE).
MD5 = "MD5"
CNY = "CNY"
#: Parameters outside the signed text.
UNSIGNED = frozenset({"sign", "sign_type"})
#: A gateway amount: yuan with at most two decimals ("12", "12.5", "12.50").
_MONEY = re.compile(r"[0-9]{1,9}(\.[0-9]{1,2})?")
#: What the gateway is shown as the order's name (its pages and the payer's receipt).
ORDER_NAME = "Wallet top-up"
#: How long one gateway query may take before the job moves on.
QUERY_TIMEOUT_SECONDS = 10.0

REFERENCE_MAX = max_length(Payment.reference)
CHARGE_ID_MAX = max_length(Payment.provider_charge_id)


def sign(params: Mapping[str, str], key: str) -> str:
    """易支付's signature of `params` under the merchant `key`."""
    text = "&".join(
        f"{name}={value}"
        for name, value in sorted(params.items())
        if name not in UNSIGNED and value != ""
    )
    return hashlib.md5((text + key).encode()).hexdigest()


def signature_holds(params: Mapping[str, str], key: str) -> bool:
    """Whether `params["sign"]` is `sign(params, key)`, compared in constant time."""
    given = params.get("sign", "")
    return hmac.compare_digest(sign(params, key).encode(), given.lower().encode())


def money_to_fen(money: str) -> int:
    """The gateway's `money` in 分, exactly; ValueError for anything but plain yuan."""
    if not _MONEY.fullmatch(money):
        raise ValueError(f"not an amount of yuan: {money!r}")
    return int(Decimal(money) * 100)


class EpayProvider:
    name = EPAY
    refunds = False

    def __init__(
        self,
        url: str,
        pid: str,
        key: str,
        *,
        notify_url: str,
        return_url: str,
        methods: tuple[str, ...],
    ) -> None:
        self._root = url.rstrip("/")
        self._pid = pid
        self._key = key
        self._notify_url = notify_url
        self._return_url = return_url
        self.methods = methods

    def charge(self, amount: int) -> Charge:
        return Charge(amount, CNY)

    def order_params(self, payment: PaymentView) -> dict[str, str]:
        """The signed order `submit.php` receives for `payment`."""
        params = {
            "pid": self._pid,
            "type": payment.method,
            "out_trade_no": payment.reference,
            "notify_url": self._notify_url,
            "return_url": self._return_url,
            "name": ORDER_NAME,
            "money": format_plain(payment.charge_amount),
        }
        return {**params, "sign": sign(params, self._key), "sign_type": MD5}

    def create(self, payment: PaymentView) -> str:
        """The gateway's payment page for `payment` (a GET to submit.php)."""
        return f"{self._root}/submit.php?{urlencode(self.order_params(payment))}"

    def verify(self, params: Mapping[str, str]) -> Notification:
        if not signature_holds(params, self._key):
            raise ForgedNotificationError("bad signature")
        if params.get("sign_type", MD5).upper() != MD5:
            raise ForgedNotificationError(f"sign_type {params.get('sign_type')!r}")
        if params.get("pid") != self._pid:
            raise ForgedNotificationError(f"merchant {params.get('pid')!r} is not ours")
        if params.get("trade_status") != TRADE_SUCCESS:
            raise ForgedNotificationError(f"trade_status {params.get('trade_status')!r}")
        return self._notification(params)

    def _notification(self, fields: Mapping[str, Any]) -> Notification:
        reference = str(fields.get("out_trade_no") or "")
        charge_id = str(fields.get("trade_no") or "")
        if not 0 < len(reference) <= REFERENCE_MAX or not 0 < len(charge_id) <= CHARGE_ID_MAX:
            raise ForgedNotificationError("out_trade_no or trade_no missing or too long")
        try:
            amount = money_to_fen(str(fields.get("money", "")))
        except ValueError as exc:
            raise ForgedNotificationError(str(exc)) from None
        return Notification(reference, charge_id, amount, CNY)

    async def query(self, payment: PaymentView) -> Notification | None:
        """`api.php?act=order`: the money if the gateway says the order was paid.

        Network and gateway errors raise (the caller counts them and asks again on its
        next run); an order the gateway does not know, or knows unpaid, is None.
        """
        params = {
            "act": "order",
            "pid": self._pid,
            "key": self._key,
            "out_trade_no": payment.reference,
        }
        timeout = aiohttp.ClientTimeout(total=QUERY_TIMEOUT_SECONDS)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{self._root}/api.php", params=params) as response,
        ):
            response.raise_for_status()
            # Gateways answer JSON under any content type (often text/html).
            answer = json.loads(await response.text())
        if not isinstance(answer, dict) or str(answer.get("code")) != "1":
            return None
        if str(answer.get("status")) != "1":
            return None
        if str(answer.get("pid", self._pid)) != self._pid:
            raise ForgedNotificationError(f"query answered for merchant {answer.get('pid')!r}")
        if str(answer.get("out_trade_no", payment.reference)) != payment.reference:
            raise ForgedNotificationError("query answered for another order")
        return self._notification({**answer, "out_trade_no": payment.reference})

"""What the 易支付 stand-in remembers, in shapes a test can assert on directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EpayOrder:
    """An order as the gateway holds it once the buyer opened the pay link.

    `money` is the gateway's own rendering with two decimals ("10.00" even when the shop
    sent "10"): notifies and queries report it that way. `status` is 1 once paid.
    """

    pid: str
    trade_no: str
    out_trade_no: str
    type: str
    name: str
    money: str
    notify_url: str
    return_url: str
    sitename: str
    param: str
    addtime: str
    endtime: str | None = None
    status: int = 0

    @property
    def paid(self) -> bool:
        return self.status == 1


@dataclass(frozen=True)
class Submission:
    """One visit of `submit.php`: what came in and the error page shown, if any."""

    method: str
    params: dict[str, str]
    error: str | None
    order: EpayOrder | None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class NotifyAttempt:
    """One GET of a notify URL and how the shop answered.

    `kind` says who sent it: "notify" for the gateway's own notifying after `pay` (retried
    until acknowledged), "replay" for `replay_notify`, and "forged", "tampered",
    "unknown_order", "wrong_pid" or "custom" for the attacker helpers.
    """

    kind: str
    out_trade_no: str
    url: str
    params: dict[str, str]
    status: int | None
    body: str | None
    error: str | None

    @property
    def acknowledged(self) -> bool:
        """The shop answered `success`, the one answer that stops a gateway retrying."""
        return self.body is not None and self.body.strip() == "success"


@dataclass(frozen=True)
class OrderQuery:
    """One call of `api.php` and the JSON it was answered with."""

    params: dict[str, str]
    answer: dict[str, Any]

"""What the payment services hand out: frozen DTOs, never rows, and the one exception.

Shared by the service and the providers, so neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from core.models import PaymentState

#: The providers the shop speaks today (a third one adds its name here and a `Provider`).
STARS = "stars"
EPAY = "epay"


class ForgedNotificationError(Exception):
    """A notification that must not move money: bad signature, wrong merchant, tampered
    amount, unknown order, or not a success. Nothing was changed; the reason is the
    message, for the log (never shown to whoever sent it)."""


@dataclass(frozen=True, slots=True)
class BuyIntent:
    """Buy in one step: the order to place once the top-up lands, with the key the
    confirmation drew, so placing it twice (a replay, a restart) buys once."""

    product_id: int
    quantity: int
    use_points: bool
    idempotency_key: str
    expected_total: int

    def as_json(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "quantity": self.quantity,
            "use_points": self.use_points,
            "idempotency_key": self.idempotency_key,
            "expected_total": self.expected_total,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> BuyIntent | None:
        if data is None:
            return None
        return cls(
            product_id=int(data["product_id"]),
            quantity=int(data["quantity"]),
            use_points=bool(data["use_points"]),
            idempotency_key=str(data["idempotency_key"]),
            expected_total=int(data["expected_total"]),
        )


@dataclass(frozen=True, slots=True)
class PaymentView:
    id: int
    reference: str
    member_id: int
    provider: str
    method: str
    #: 分 credited to the wallet.
    amount: int
    #: Stars, or 分 asked at the gateway.
    charge_amount: int
    charge_currency: str
    state: PaymentState
    provider_charge_id: str | None
    then_buy: BuyIntent | None
    note: str
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None
    credited_at: datetime | None
    refunded_at: datetime | None


@dataclass(frozen=True, slots=True)
class StarsInvoice:
    """What the bot's `sendInvoice` needs: the payload naming the top-up, the Stars to
    charge, and the 分 credited (for the invoice's text)."""

    payload: str
    stars: int
    amount: int


@dataclass(frozen=True, slots=True)
class Checkout:
    """A started top-up and how to pay it: exactly one of `invoice` (Stars) or `url`
    (the gateway's page) is set."""

    payment: PaymentView
    invoice: StarsInvoice | None
    url: str | None


@dataclass(frozen=True, slots=True)
class Credit:
    """Money a provider reported, as the wallet took it.

    `created` is True exactly once per payment: for the call that credited it. A replay
    (the same charge again, from a retry, a redelivery or a concurrent call) gets False
    and must tell nobody. A payment left `paid` (money came but could not be credited;
    `payment.note` says why) also comes back with False; the balance did not move.
    """

    payment: PaymentView
    created: bool
    balance_before: int
    balance_after: int
    telegram_id: int | None
    locale: str | None


class PreCheckoutRefusal(StrEnum):
    """Why a Stars payment was refused before it was taken (the bot words each)."""

    UNKNOWN = "unknown"
    NOT_YOURS = "not_yours"
    NOT_PENDING = "not_pending"
    EXPIRED = "expired"
    AMOUNT_MISMATCH = "amount_mismatch"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """One reconciliation run: gateway orders asked about, the ones found paid and
    credited here (to tell their members), queries that failed, top-ups expired."""

    queried: int
    credits: tuple[Credit, ...]
    failed: int
    expired: int

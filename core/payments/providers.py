"""The provider interface: what the top-up flow asks of a payment provider.

The flow (`core.payments.service`) knows no provider by name: it prices a top-up with
`charge`, hands the buyer what `create` returns, trusts money only through `verify`
(a notification) or `query` (asking the provider), and refunds only where `refunds`
says the provider can. A third gateway (USDT-TRC20, another aggregator) is one more
class with these members, registered in `core.shop.payment_providers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from core.payments.views import PaymentView, StarsInvoice


@dataclass(frozen=True, slots=True)
class Charge:
    """What the provider asks of the payer for a top-up: an amount in its own unit."""

    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Notification:
    """A provider's word that money arrived for one of our references.

    `charge_id` is the provider's own id for that money (unique per provider in
    `payments`); `amount` is in the provider's unit, compared exactly with the charge.
    """

    reference: str
    charge_id: str
    amount: int
    currency: str


class Provider(Protocol):
    """One payment provider. Implementations hold no state that changes."""

    #: `payments.provider`: stars, epay.
    name: str
    #: The methods the buyer picks (`payments.method`), in the order shown.
    methods: tuple[str, ...]
    #: Whether a credited payment can be given back through this provider.
    refunds: bool

    def charge(self, amount: int) -> Charge:
        """What to ask for `amount` 分 credited."""
        ...

    def create(self, payment: PaymentView) -> StarsInvoice | str:
        """How the buyer pays a new top-up: an invoice to send, or a URL to open."""
        ...

    def verify(self, params: Mapping[str, str]) -> Notification:
        """A notification checked as the provider signs it; ForgedNotificationError if not."""
        ...

    async def query(self, payment: PaymentView) -> Notification | None:
        """Ask the provider whether a top-up was paid: the money, or None when not (yet)."""
        ...

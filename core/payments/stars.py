"""Telegram Stars (`XTR`): what Telegram requires for digital goods sold inside its apps.

The invoice (`sendInvoice` with an empty provider token and one price) is sent by the
bot; core only prices it and names the top-up in its payload. Telegram itself vouches
for a `successful_payment` (it reaches the bot over its own authenticated channel), so
`verify` only reads the update's fields; the flow compares currency and amount exactly.
Refunds go through the bot's `refundStarPayment`, handed to `Payments.refund`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal

from core.payments.providers import Charge, Notification
from core.payments.views import STARS, ForgedNotificationError, PaymentView, StarsInvoice

#: Telegram's currency code for Stars.
XTR = "XTR"
#: Telegram's limit on an invoice payload, in bytes.
MAX_PAYLOAD_BYTES = 128


class StarsProvider:
    name = STARS
    methods: tuple[str, ...] = (STARS,)
    refunds = True

    def __init__(self, stars_per_yuan: Decimal) -> None:
        if stars_per_yuan <= 0:
            raise ValueError("stars_per_yuan must be positive")
        self._rate = stars_per_yuan

    def stars_for(self, amount: int) -> int:
        """Stars for `amount` 分 at the shop's rate, rounded up: the shop never credits
        more than was paid for, and at least one Star is asked."""
        stars = (Decimal(amount) * self._rate / 100).to_integral_value(rounding=ROUND_CEILING)
        return max(int(stars), 1)

    def charge(self, amount: int) -> Charge:
        return Charge(self.stars_for(amount), XTR)

    def create(self, payment: PaymentView) -> StarsInvoice:
        payload = payment.reference
        if not 0 < len(payload.encode()) <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"an invoice payload is 1-{MAX_PAYLOAD_BYTES} bytes")
        return StarsInvoice(payload=payload, stars=payment.charge_amount, amount=payment.amount)

    @staticmethod
    def verify(params: Mapping[str, str]) -> Notification:
        """`successful_payment`'s fields: payload, currency, total_amount, charge_id.

        Static: Telegram's word needs no setting, so money is recorded even after the
        shop stopped offering Stars."""
        try:
            reference, charge_id = params["payload"], params["charge_id"]
            amount = int(params["total_amount"])
            currency = params["currency"]
        except (KeyError, ValueError) as exc:
            raise ForgedNotificationError(f"incomplete successful_payment: {exc}") from None
        if not reference or not charge_id:
            raise ForgedNotificationError("successful_payment without payload or charge id")
        return Notification(reference, charge_id, amount, currency)

    async def query(self, payment: PaymentView) -> Notification | None:
        """Telegram tells the bot of every Stars payment; nothing to ask it afterwards."""
        return None

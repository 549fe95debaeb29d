"""Wallet top-ups: Telegram Stars and 易支付 behind one provider interface.

`Payments` (service.py) is the flow; `Provider` (providers.py) what a gateway plugs in
(`StarsProvider` in stars.py, `EpayProvider` in epay.py); views.py the DTOs handed out.
"""

from core.models import PaymentState
from core.payments.epay import EpayProvider
from core.payments.providers import Charge, Notification, Provider
from core.payments.service import Payments, Refunder
from core.payments.stars import StarsProvider
from core.payments.views import (
    EPAY,
    STARS,
    BuyIntent,
    Checkout,
    Credit,
    ForgedNotificationError,
    PaymentView,
    PreCheckoutRefusal,
    ReconcileReport,
    StarsInvoice,
)

__all__ = [
    "EPAY",
    "STARS",
    "BuyIntent",
    "Charge",
    "Checkout",
    "Credit",
    "EpayProvider",
    "ForgedNotificationError",
    "Notification",
    "PaymentState",
    "PaymentView",
    "Payments",
    "PreCheckoutRefusal",
    "Provider",
    "ReconcileReport",
    "Refunder",
    "StarsInvoice",
    "StarsProvider",
]

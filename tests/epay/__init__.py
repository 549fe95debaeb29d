"""A local 易支付 (epay) gateway for end-to-end tests of the shop's payments; see `gateway`."""

from tests.epay.gateway import NOTIFY_DELAYS, PAY_TYPES, EpayGateway
from tests.epay.records import EpayOrder, NotifyAttempt, OrderQuery, Submission
from tests.epay.signing import sign, signing_string

__all__ = [
    "NOTIFY_DELAYS",
    "PAY_TYPES",
    "EpayGateway",
    "EpayOrder",
    "NotifyAttempt",
    "OrderQuery",
    "Submission",
    "sign",
    "signing_string",
]

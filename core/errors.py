"""Typed domain errors with stable codes.

`core/` holds no user-facing text: the bot looks the code up in its catalogs and fills
in `params` (amounts in 分, tier keys, times), so every refusal reads naturally in the
member's language.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INSUFFICIENT_BALANCE = "insufficient_balance"
    INSUFFICIENT_POINTS = "insufficient_points"
    OUT_OF_STOCK = "out_of_stock"
    NOT_ALLOWED_FOR_TIER = "not_allowed_for_tier"
    QUANTITY_OUT_OF_RANGE = "quantity_out_of_range"
    ALREADY_CHECKED_IN = "already_checked_in"
    PRODUCT_NOT_FOUND = "product_not_found"
    CATEGORY_NOT_FOUND = "category_not_found"
    PRODUCT_INACTIVE = "product_inactive"
    MEMBER_NOT_FOUND = "member_not_found"
    ORDER_NOT_FOUND = "order_not_found"
    ORDER_NOT_REFUNDABLE = "order_not_refundable"
    PRICE_CHANGED = "price_changed"
    INVALID_AMOUNT = "invalid_amount"
    UNKNOWN_TIER = "unknown_tier"
    NO_HIGHER_TIER = "no_higher_tier"
    TICKET_NOT_FOUND = "ticket_not_found"
    TICKET_CLOSED = "ticket_closed"
    INVALID_RATING = "invalid_rating"
    TICKET_NOT_RESOLVED = "ticket_not_resolved"
    ALREADY_RATED = "already_rated"
    STAFF_NOT_FOUND = "staff_not_found"
    NO_MANAGER_ACCESS = "no_manager_access"
    ALREADY_REVIEWED = "already_reviewed"
    INVALID_INPUT = "invalid_input"
    RATE_LIMITED = "rate_limited"
    #: A top-up below `min` or above `max` (分); params amount, min, max.
    TOPUP_AMOUNT_OUT_OF_RANGE = "topup_amount_out_of_range"
    #: The member's top-ups today would pass the daily ceiling; params amount, left, max.
    TOPUP_DAILY_LIMIT = "topup_daily_limit"
    #: A payment method the shop does not offer (not configured); param method.
    PAYMENT_METHOD_UNAVAILABLE = "payment_method_unavailable"
    #: No such payment, or not the member's; param payment.
    PAYMENT_NOT_FOUND = "payment_not_found"
    #: Only a credited payment of a provider that refunds can be refunded; params payment, state.
    PAYMENT_NOT_REFUNDABLE = "payment_not_refundable"
    #: The provider refused the refund; the wallet was restored; params payment, reason.
    PAYMENT_REFUND_REFUSED = "payment_refund_refused"
    #: No such open reservation, or not the member's; param reservation.
    RESERVATION_NOT_FOUND = "reservation_not_found"
    #: The member's tier has no `api` capability (now); param tier.
    API_NOT_ALLOWED = "api_not_allowed"
    #: The member already holds the tier's most un-revoked API keys; param max.
    API_KEY_LIMIT = "api_key_limit"
    #: No such API key of the member's; param key.
    API_KEY_NOT_FOUND = "api_key_not_found"
    #: The recomputed total passes the caller's ceiling; params total, max_total, quote.
    PRICE_ABOVE_LIMIT = "price_above_limit"
    #: An idempotency key already paid for another product or quantity; param key.
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"


class ShopError(Exception):
    """A refusal the member can be told about; nothing was changed."""

    def __init__(self, code: ErrorCode, **params: Any) -> None:
        super().__init__(f"{code.value} {params}" if params else code.value)
        self.code = code
        self.params = params

"""What a member reads when the shop says no.

`core/` refuses with `ShopError(code, **params)` and no text; this module turns every
code into a sentence in the member's language, with amounts as money and tiers by
name. The `match` is exhaustive, so mypy fails when a new code has no message. When a
refusal arrives without the detail a sentence needs, the plain sentence is used.
"""

from __future__ import annotations

import datetime as dt
from typing import assert_never

from bot.conversation import escape
from bot.i18n import Translator
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder


def _money(error: ShopError, name: str, t: Translator) -> str | None:
    value = error.params.get(name)
    return t.money(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _number(error: ShopError, name: str, t: Translator) -> str | None:
    value = error.params.get(name)
    return t.number(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _tier(error: ShopError, name: str, t: Translator, ladder: Ladder) -> str | None:
    key = error.params.get(name)
    if not isinstance(key, str):
        return None
    try:
        return escape(ladder.tier(key).name(t.locale))
    except ShopError:
        return escape(key)


def render_error(error: ShopError, t: Translator, ladder: Ladder) -> str:
    """The member-facing sentence for `error`."""
    code = error.code
    match code:
        case ErrorCode.INSUFFICIENT_BALANCE:
            balance, missing = _money(error, "balance", t), _money(error, "missing", t)
            if balance and missing:
                return t._(
                    "Your balance is {balance}, {missing} short for this. Please top up first."
                ).format(balance=balance, missing=missing)
            return t._("Your balance is not enough for this. Please top up first.")
        case ErrorCode.INSUFFICIENT_POINTS:
            available, needed = _number(error, "available", t), _number(error, "needed", t)
            count = error.params.get("available")
            if available and needed and isinstance(count, int):
                return t.ngettext(
                    "You have {available} point, but this needs {needed}.",
                    "You have {available} points, but this needs {needed}.",
                    count,
                ).format(available=available, needed=needed)
            return t._("You do not have enough points for this.")
        case ErrorCode.OUT_OF_STOCK:
            left = error.params.get("available")
            if isinstance(left, int) and left > 0:
                return t._(
                    "Only {available} left in stock. Please choose a smaller quantity."
                ).format(available=t.number(left))
            return t._("Sorry, this item is sold out for now.")
        case ErrorCode.NOT_ALLOWED_FOR_TIER:
            tier = _tier(error, "required", t, ladder)
            if tier:
                return t._("This is available from {tier} up.").format(tier=tier)
            return t._("Your member level does not include this.")
        case ErrorCode.QUANTITY_OUT_OF_RANGE:
            low, high = _number(error, "min", t), _number(error, "max", t)
            if low and high:
                return t._("Please choose a quantity from {min} to {max}.").format(
                    min=low, max=high
                )
            return t._("That quantity is not allowed.")
        case ErrorCode.ALREADY_CHECKED_IN:
            next_at = error.params.get("next_at")
            if isinstance(next_at, dt.datetime):
                return t._("You have already checked in today. Come back after {time}.").format(
                    time=t.datetime(next_at)
                )
            return t._("You have already checked in today.")
        case ErrorCode.PRODUCT_NOT_FOUND:
            return t._("This item does not exist.")
        case ErrorCode.CATEGORY_NOT_FOUND:
            return t._("This category does not exist.")
        case ErrorCode.PRODUCT_INACTIVE:
            return t._("This item is no longer on sale.")
        case ErrorCode.MEMBER_NOT_FOUND:
            return t._("No such member.")
        case ErrorCode.ORDER_NOT_FOUND:
            return t._("No such order.")
        case ErrorCode.ORDER_NOT_REFUNDABLE:
            return t._("This order cannot be refunded.")
        case ErrorCode.PRICE_CHANGED:
            return t._("The price has just changed. Please check the new price and confirm again.")
        case ErrorCode.INVALID_AMOUNT:
            most = _money(error, "max", t)
            if most:
                return t._("That amount is not valid. The most per transaction is {max}.").format(
                    max=most
                )
            return t._("That amount is not valid. Please send a number such as 100 or 12.5.")
        case ErrorCode.UNKNOWN_TIER:
            return t._("No such member level.")
        case ErrorCode.NO_HIGHER_TIER:
            return t._("You are already at the highest level.")
        case ErrorCode.TICKET_NOT_FOUND:
            return t._("No such ticket.")
        case ErrorCode.TICKET_CLOSED:
            return t._("This ticket is closed. Please open a new one.")
        case ErrorCode.INVALID_RATING:
            low, high = _number(error, "min", t), _number(error, "max", t)
            if low and high:
                return t._("Please rate from {min} to {max}.").format(min=low, max=high)
            return t._("That rating is not valid.")
        case ErrorCode.TICKET_NOT_RESOLVED:
            return t._("This ticket has not been resolved yet.")
        case ErrorCode.ALREADY_RATED:
            return t._("You have already rated this.")
        case ErrorCode.STAFF_NOT_FOUND:
            return t._("No such staff member.")
        case ErrorCode.NO_MANAGER_ACCESS:
            return t._("A dedicated manager comes with the higher member levels.")
        case ErrorCode.ALREADY_REVIEWED:
            return t._("You have already reviewed this order.")
        case ErrorCode.INVALID_INPUT:
            return t._("That input is not valid. Please check it and try again.")
        case ErrorCode.RATE_LIMITED:
            wait = error.params.get("retry_after")
            if isinstance(wait, int) and not isinstance(wait, bool) and wait > 0:
                return t.ngettext(
                    "Too many purchases in a short time. Please try again in {seconds} second.",
                    "Too many purchases in a short time. Please try again in {seconds} seconds.",
                    wait,
                ).format(seconds=t.number(wait))
            return t._("Too many requests. Please wait a moment and try again.")
        case ErrorCode.TOPUP_AMOUNT_OUT_OF_RANGE:
            low, high = _money(error, "min", t), _money(error, "max", t)
            if low and high:
                return t._("A top-up can be from {min} to {max}.").format(min=low, max=high)
            return t._("That top-up amount is not allowed.")
        case ErrorCode.TOPUP_DAILY_LIMIT:
            left, most = _money(error, "left", t), _money(error, "max", t)
            if most and error.params.get("left") == 0:
                return t._(
                    "You have reached today's top-up limit of {max}. Please try again tomorrow."
                ).format(max=most)
            if left and most:
                return t._(
                    "Top-ups are limited to {max} a day: you can top up {left} more today."
                ).format(max=most, left=left)
            return t._("You have reached today's top-up limit. Please try again tomorrow.")
        case ErrorCode.PAYMENT_METHOD_UNAVAILABLE:
            return t._("This payment method is not available right now. Please choose another.")
        case ErrorCode.PAYMENT_NOT_FOUND:
            return t._("No such payment.")
        case ErrorCode.PAYMENT_NOT_REFUNDABLE:
            return t._("This payment cannot be refunded.")
        case ErrorCode.PAYMENT_REFUND_REFUSED:
            reason = error.params.get("reason")
            if isinstance(reason, str) and reason:
                return t._(
                    "The payment provider refused the refund ({reason}). The balance is unchanged."
                ).format(reason=escape(reason))
            return t._("The payment provider refused the refund. The balance is unchanged.")
        case ErrorCode.RESERVATION_NOT_FOUND:
            return t._("This reservation has ended already.")
        case ErrorCode.API_NOT_ALLOWED:
            tier = _tier(error, "tier", t, ladder)
            if tier:
                return t._("API access is not part of {tier}.").format(tier=tier)
            return t._("Your member level does not include API access.")
        case ErrorCode.API_KEY_LIMIT:
            most = error.params.get("max")
            if isinstance(most, int) and not isinstance(most, bool):
                return t.ngettext(
                    "You already have {max} API key, the most your level allows. Revoke one first.",
                    "You already have {max} API keys, the most your level allows."
                    " Revoke one first.",
                    most,
                ).format(max=t.number(most))
            return t._("You have as many API keys as your level allows. Revoke one first.")
        case ErrorCode.API_KEY_NOT_FOUND:
            key = error.params.get("key")
            if isinstance(key, str) and key:
                return t._("No API key {key}.").format(key=escape(key))
            return t._("No such API key.")
        case ErrorCode.PRICE_ABOVE_LIMIT:
            total, most = _money(error, "total", t), _money(error, "max_total", t)
            if total and most:
                return t._(
                    "The total is now {total}, above the limit of {max_total}. Nothing was charged."
                ).format(total=total, max_total=most)
            return t._("The total is above the limit given. Nothing was charged.")
        case ErrorCode.IDEMPOTENCY_CONFLICT:
            return t._(
                "This idempotency key was already used for a different order."
                " Use a new key for a new order."
            )
        case _:
            assert_never(code)


def bad_button(t: Translator) -> str:
    return t._("This button is no longer valid. Send /start to open the menu again.")


def something_went_wrong(t: Translator) -> str:
    return t._("Sorry, something went wrong on our side. Please try again in a moment.")

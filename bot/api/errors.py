"""How the reseller API says no: `{"error": code, "message": English text, "params": {...}}`.

A refusal from the shop (`ShopError`) keeps its code and params and reads as the bot's
own English sentence (`bot.errors.render_error` over the `en` catalog), so a program
and a member are told the same thing. What only the API refuses (a signature, a body
that is no JSON, a field the models reject, the per-key rate) has a code of its own
here. Messages are English on purpose: the caller is a program, its logs are read by
developers, and the issue asks for English text beside a stable code.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from aiohttp import web

from bot.errors import render_error
from bot.i18n import Translator
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder

#: The codes only the API uses (the shop's own are `core.errors.ErrorCode`).
UNAUTHORIZED = "unauthorized"
BAD_REQUEST = "bad_request"
NOT_FOUND = "not_found"
INTERNAL = "internal_error"
#: Shared with the shop's codes on purpose: a field is wrong, or the caller is too fast.
INVALID_INPUT = ErrorCode.INVALID_INPUT.value
RATE_LIMITED = ErrorCode.RATE_LIMITED.value

#: The status each shop refusal answers with; any other is a 400.
STATUS: Mapping[ErrorCode, int] = {
    ErrorCode.MEMBER_NOT_FOUND: 404,
    ErrorCode.PRODUCT_NOT_FOUND: 404,
    ErrorCode.ORDER_NOT_FOUND: 404,
    ErrorCode.RESERVATION_NOT_FOUND: 404,
    ErrorCode.API_NOT_ALLOWED: 403,
    ErrorCode.NOT_ALLOWED_FOR_TIER: 403,
    ErrorCode.OUT_OF_STOCK: 409,
    ErrorCode.INSUFFICIENT_BALANCE: 409,
    ErrorCode.INSUFFICIENT_POINTS: 409,
    ErrorCode.PRICE_CHANGED: 409,
    ErrorCode.PRICE_ABOVE_LIMIT: 409,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.PRODUCT_INACTIVE: 409,
    ErrorCode.QUANTITY_OUT_OF_RANGE: 422,
    ErrorCode.INVALID_INPUT: 422,
    ErrorCode.RATE_LIMITED: 429,
}


class ApiError(Exception):
    """A refusal with its HTTP status; nothing was changed."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        params: Mapping[str, Any] | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.params = dict(params or {})
        #: Seconds, sent as `Retry-After` (a 429).
        self.retry_after = retry_after

    def response(self) -> web.Response:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        body = {"error": self.code, "message": self.message, "params": jsonable(self.params)}
        return web.json_response(body, status=self.status, headers=headers, dumps=dumps)


def from_shop(error: ShopError, english: Translator, ladder: Ladder) -> ApiError:
    """The shop's refusal as the API answers it: same code and params, the bot's English."""
    # The bot's sentences are Telegram HTML (names escaped); a JSON string wants plain text.
    message = html.unescape(render_error(error, english, ladder))
    retry_after = error.params.get("retry_after")
    return ApiError(
        STATUS.get(error.code, 400),
        error.code.value,
        message,
        error.params,
        retry_after=retry_after if isinstance(retry_after, int) and retry_after > 0 else None,
    )


def jsonable(value: Any) -> Any:
    """`value` as JSON can carry it: dataclasses (a quote) as objects, times as ISO 8601."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    return str(value)


def dumps(value: Any) -> str:
    """Compact JSON that keeps 中文 names readable."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

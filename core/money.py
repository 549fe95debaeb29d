"""Money is integer 分 (1/100 yuan); the one place that rounds."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from core.errors import ErrorCode, ShopError
from core.text import INTEGER_MAX

#: The most 分 any amount may be: what an INTEGER column holds on PostgreSQL (¥21,474,836.47).
MAX_FEN = INTEGER_MAX

#: Points redeemed at checkout: 100 points = ¥1 = 100 分, so one point is one 分.
FEN_PER_POINT = 1


def round_fen(value: Decimal) -> int:
    """Round an exact amount of 分 to a whole 分, half up (Saleor's rule)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def apply_rate(amount: int, percent: int | Decimal) -> int:
    """`amount` at `percent` of its price (95 for 95折), rounded once."""
    return round_fen(Decimal(amount) * Decimal(percent) / Decimal(100))


def parse_yuan(text: str) -> int:
    """Parse a yuan amount typed by a person ("100", "12.5", "¥12.50") into 分.

    Whatever was typed, the answer is an amount within ±MAX_FEN or INVALID_AMOUNT: the
    size is checked before any arithmetic, so `1e1000000` is refused, not an overflow.
    """
    cleaned = text.strip().replace("¥", "").replace("￥", "").replace(",", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ShopError(ErrorCode.INVALID_AMOUNT, text=text) from None
    if not value.is_finite() or value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ShopError(ErrorCode.INVALID_AMOUNT, text=text)
    if value.copy_abs() > Decimal(MAX_FEN).scaleb(-2):
        raise ShopError(ErrorCode.INVALID_AMOUNT, text=text, max=MAX_FEN)
    return int(value.scaleb(2))


def format_plain(fen: int) -> str:
    """`12.50` style, for logs, CSV and the CLI (the bot formats with Babel)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"

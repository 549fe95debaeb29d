"""What the reseller API reads and answers, as pydantic models.

The same classes validate each request body and query (strictly: `"5"` is not a
quantity, an unknown field is an error rather than ignored) and give `openapi.json`
its schemas, so the document cannot drift from what is enforced. Money is always an
integer in 分 (1/100 of the unit) with the currency beside it; times are ISO 8601
with their offset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from core.catalog import SKU_PATTERN
from core.orders import MAX_IDEMPOTENCY_KEY

#: Prefix of the API's idempotency keys in the orders table, so a program's keys and the
#: chat's never meet; what a caller may send is that much shorter.
IDEMPOTENCY_PREFIX = "api:"
#: Beyond any real order or hold: a bigger number is refused by the model, not the shop.
QUANTITY_MAX = 100_000
#: 分; larger than any wallet can hold, well inside a signed 64-bit integer.
AMOUNT_MAX = 10**15
#: Database ids are signed 64-bit integers.
ID_MAX = 2**63 - 1

Sku = Annotated[str, Field(pattern=f"^{SKU_PATTERN.pattern}$", examples=["QB-10"])]
Quantity = Annotated[int, Field(ge=1, le=QUANTITY_MAX)]
Fen = Annotated[int, Field(ge=0, le=AMOUNT_MAX, description="An amount in 分 (1/100 yuan).")]
Names = Annotated[
    dict[str, str],
    Field(description="The name by locale (zh_CN, en).", examples=[{"en": "Q币 10"}]),
]


class Request(BaseModel):
    """A request body or query: strict types, nothing unknown."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorBody(Answer):
    """Every refusal, whatever the status."""

    error: str = Field(description="A stable code, e.g. out_of_stock, unauthorized.")
    message: str = Field(description="What went wrong, in English.")
    params: dict[str, Any] = Field(description="The details the message was made from.")


class Product(Answer):
    sku: str
    names: Names
    unit_price: Fen = Field(description="Your price for one code now, in 分.")
    currency: str
    stock: int = Field(description="Codes you can buy now (your reserved ones included).")
    reserved: int = Field(description="Of `stock`, codes you hold under a reservation.")
    max_per_order: int = Field(description="The most codes one order may hold for you.")


class ProductList(Answer):
    tier: str
    products: list[Product]


class Tier(Answer):
    key: str
    names: Names


class Balance(Answer):
    balance: Fen
    currency: str
    points: int = Field(description="Points you can spend now.")
    tier: Tier


class PlaceOrder(Request):
    sku: Sku
    quantity: Quantity
    idempotency_key: str = Field(
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY - len(IDEMPOTENCY_PREFIX),
        pattern=r"^[\x21-\x7e]+$",
        description="Yours, unique per order: sending it again returns the same order.",
    )
    max_total: Fen | None = Field(
        default=None, description="Refuse (409 price_above_limit) if the total would be more."
    )


class Order(Answer):
    id: int
    sku: str
    names: Names
    quantity: int
    unit_price: Fen
    discount: Fen
    total: Fen
    currency: str
    status: str = Field(description="paid, delivered, refunded...")
    created_at: datetime
    codes: list[str] | None = Field(
        default=None, description="The codes, in clear (not in lists of orders)."
    )


class PlacedOrder(Order):
    balance_after: Fen = Field(description="Your balance once this order was paid.")
    created: bool = Field(description="False when the idempotency key had been used.")


class OrderList(Answer):
    orders: list[Order]


class OrdersSince(Request):
    since: AwareDatetime = Field(
        description="ISO 8601 with an offset, e.g. 2026-11-22T10:00:00+08:00.",
        json_schema_extra={"type": "string", "format": "date-time"},
    )
    limit: int = Field(default=100, ge=1, le=100)

    @field_validator("since", mode="before")
    @classmethod
    def _iso(cls, value: object) -> datetime:
        """Only ISO 8601 text (pydantic alone would also take unix seconds)."""
        if not isinstance(value, str):
            raise ValueError("give an ISO 8601 time")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO 8601 time, e.g. 2026-11-22T10:00:00+08:00") from None

    @field_validator("limit", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        """A query parameter is text: a plain decimal number is the integer it says."""
        return int(value) if isinstance(value, str) and value.isdigit() else value


class Reserve(Request):
    sku: Sku
    quantity: Quantity


class Reservation(Answer):
    id: int
    sku: str
    names: Names
    quantity: int = Field(description="Codes reserved over the hold's life.")
    remaining: int = Field(description="Codes still held for you.")
    created_at: datetime
    expires_at: datetime


class ReservationList(Answer):
    reservations: list[Reservation]


class Released(Answer):
    id: int
    released: int = Field(description="Codes put back on everyone's shelf.")

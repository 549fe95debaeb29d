"""What a member pays: the one function every price shown or charged comes from.

Pure on purpose: the orders service loads the inputs inside its transaction and calls
`quote`, so the price charged is recomputed from the database at the moment of sale and
never taken from a button or a caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.money import FEN_PER_POINT, apply_rate

PriceSource = Literal["tier_rate", "tier_price", "member_price"]


@dataclass(frozen=True, slots=True)
class PricingInput:
    """The facts a price depends on, read in one go by the caller."""

    product_id: int
    sku: str
    active: bool
    pool: str
    base_price: int
    max_per_order: int | None
    tier_key: str
    tier_price: int | None
    member_price: int | None
    balance: int
    available_points: int


@dataclass(frozen=True, slots=True)
class Quote:
    product_id: int
    sku: str
    quantity: int
    tier_key: str
    price_source: PriceSource
    unit_base_price: int
    unit_price: int
    base_total: int
    discount: int
    subtotal: int
    points_used: int
    points_value: int
    total: int
    balance: int
    balance_after: int
    max_quantity: int

    @property
    def affordable(self) -> bool:
        return self.balance_after >= 0


def unit_price(ladder: Ladder, facts: PricingInput) -> tuple[int, PriceSource]:
    """The member's price for one unit: a per-account price, a tier price, or the tier rate.

    Never above the base price, whatever an admin typed.
    """
    if facts.member_price is not None:
        price, source = facts.member_price, "member_price"
    elif facts.tier_price is not None:
        price, source = facts.tier_price, "tier_price"
    else:
        price, source = apply_rate(facts.base_price, ladder.tier(facts.tier_key).rate), "tier_rate"
    return min(price, facts.base_price), source  # type: ignore[return-value]


def quantity_limit(ladder: Ladder, facts: PricingInput) -> int:
    """How many units one order may hold for this member (tier batch cap, product cap)."""
    limit = ladder.tier(facts.tier_key).capabilities.batch_max
    if facts.max_per_order is not None:
        limit = min(limit, facts.max_per_order)
    return limit


def check_allowed(ladder: Ladder, facts: PricingInput) -> None:
    """Refuse a product the member's tier may not buy, naming the tier that opens it."""
    if not facts.active:
        raise ShopError(ErrorCode.PRODUCT_INACTIVE, sku=facts.sku)
    tier = ladder.tier(facts.tier_key)
    if facts.pool not in tier.capabilities.pools:
        opener = ladder.lowest_with(facts.pool)
        raise ShopError(
            ErrorCode.NOT_ALLOWED_FOR_TIER,
            capability="pool",
            pool=facts.pool,
            required=opener.key if opener else None,
        )


def quote(
    ladder: Ladder,
    facts: PricingInput,
    quantity: int,
    *,
    use_points: bool,
    stock: int | None = None,
) -> Quote:
    """The full breakdown for `quantity` units; raises when the tier, quantity or stock forbid it.

    `stock` is known when quoting for display; at the moment of sale the claim itself is
    the stock check.
    """
    check_allowed(ladder, facts)
    limit = quantity_limit(ladder, facts)
    if stock is not None and stock <= 0:
        raise ShopError(ErrorCode.OUT_OF_STOCK, available=0, sku=facts.sku)
    if not 1 <= quantity <= limit:
        raise ShopError(ErrorCode.QUANTITY_OUT_OF_RANGE, min=1, max=limit, quantity=quantity)
    if stock is not None:
        if quantity > stock:
            raise ShopError(ErrorCode.OUT_OF_STOCK, available=stock, sku=facts.sku)
        limit = min(limit, stock)
    price, source = unit_price(ladder, facts)
    base_total = facts.base_price * quantity
    subtotal = price * quantity
    points_used = min(facts.available_points, subtotal // FEN_PER_POINT) if use_points else 0
    points_value = points_used * FEN_PER_POINT
    total = subtotal - points_value
    return Quote(
        product_id=facts.product_id,
        sku=facts.sku,
        quantity=quantity,
        tier_key=facts.tier_key,
        price_source=source,
        unit_base_price=facts.base_price,
        unit_price=price,
        base_total=base_total,
        discount=base_total - subtotal,
        subtotal=subtotal,
        points_used=points_used,
        points_value=points_value,
        total=total,
        balance=facts.balance,
        balance_after=facts.balance - total,
        max_quantity=limit,
    )

"""What a member pays: the one function every price shown or charged comes from.

Pure on purpose: the catalog quotes buyers' screens with it (`Catalog.offer`, from its
copy of the definitions and the member's fresh facts), and the orders service loads the
inputs inside the purchase's transaction and calls it again, so the price charged is
recomputed from the database at the moment of sale and never taken from a button or a
caller. Both see the same facts, so what the confirmation showed is what is charged,
unless something changed in between (then the purchase refuses with PRICE_CHANGED).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    #: The product's fixed prices by tier key, for every tier that has one.
    tier_prices: Mapping[str, int]
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
    """The member's price for one unit: the best the member's tier is entitled to.

    A tier pays the lowest of its own tier price, its rate, and whatever any tier below it
    pays (that tier's price or rate), so climbing the ladder never makes a product
    dearer, whatever an admin typed; a per-account price applies only when it is lower
    still. Never above the base price.
    """
    rank = ladder.index(facts.tier_key)
    price = facts.base_price
    source: PriceSource = "tier_rate"
    for tier in ladder.tiers[: rank + 1]:
        candidates: list[tuple[int, PriceSource]] = [
            (apply_rate(facts.base_price, tier.rate), "tier_rate")
        ]
        if tier.key in facts.tier_prices:
            candidates.append((facts.tier_prices[tier.key], "tier_price"))
        for candidate, kind in candidates:
            if candidate < price:
                price, source = candidate, kind
    if facts.member_price is not None and facts.member_price < price:
        price, source = facts.member_price, "member_price"
    return price, source


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

"""The price function over random ladders and prices: a higher tier never pays more.

Pure: no database, only `core.pricing` on ladders and price tables hypothesis draws.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from core.config import DEFAULT_TIERS_FILE
from core.ladder import Ladder, load_ladder
from core.money import apply_rate
from core.pricing import PricingInput, unit_price

DEFAULT = load_ladder(DEFAULT_TIERS_FILE)


def ladder_with(rates: list[int]) -> Ladder:
    """The default ladder's rules with `len(rates)` tiers at those rates, lowest first."""
    template = DEFAULT.tiers[0].model_dump()
    tiers: list[dict[str, Any]] = []
    for index, rate in enumerate(rates):
        tier = {**template, "key": f"t{index}", "names": {"en": f"T{index}"}, "rate": rate}
        if index:
            tier["upgrade"] = [[{"metric": "total_spent", "min": index * 1000}]]
        tiers.append(tier)
    return Ladder.model_validate({**DEFAULT.model_dump(exclude={"tiers"}), "tiers": tiers})


@st.composite
def shops(draw: st.DrawFn) -> tuple[Ladder, int, dict[str, int], int | None]:
    rates = draw(st.lists(st.integers(1, 100), min_size=1, max_size=8))
    ladder = ladder_with(rates)
    base = draw(st.integers(1, 10_000_000))
    prices = draw(
        st.dictionaries(st.sampled_from([t.key for t in ladder.tiers]), st.integers(1, 20_000_000))
    )
    member_price = draw(st.none() | st.integers(1, 20_000_000))
    return ladder, base, prices, member_price


def facts(
    tier_key: str, base: int, prices: dict[str, int], member_price: int | None = None
) -> PricingInput:
    return PricingInput(
        product_id=1,
        sku="P-1",
        active=True,
        pool="basic",
        base_price=base,
        max_per_order=None,
        tier_key=tier_key,
        tier_prices=prices,
        member_price=member_price,
        balance=0,
        available_points=0,
    )


@given(shops())
def test_no_tier_pays_more_than_its_price_its_rate_or_any_lower_tier(
    shop: tuple[Ladder, int, dict[str, int], int | None],
) -> None:
    ladder, base, prices, _ = shop
    paid: list[int] = []
    for tier in ladder.tiers:
        price, source = unit_price(ladder, facts(tier.key, base, prices))
        assert 0 <= price <= base
        assert price <= apply_rate(base, tier.rate)
        if tier.key in prices:
            assert price <= prices[tier.key]
        assert all(price <= lower for lower in paid)
        # The price is one the shop set or the ladder gives, never one made up.
        offered = {apply_rate(base, t.rate) for t in ladder.tiers[: len(paid) + 1]}
        offered |= {prices[t.key] for t in ladder.tiers[: len(paid) + 1] if t.key in prices}
        assert price in offered | {base}
        assert source in ("tier_rate", "tier_price")
        paid.append(price)


@given(shops())
def test_a_per_account_price_only_ever_lowers_the_price(
    shop: tuple[Ladder, int, dict[str, int], int | None],
) -> None:
    ladder, base, prices, member_price = shop
    for tier in ladder.tiers:
        by_tier, _ = unit_price(ladder, facts(tier.key, base, prices))
        price, source = unit_price(ladder, facts(tier.key, base, prices, member_price))
        assert price == min(by_tier, member_price or by_tier)
        assert (source == "member_price") == (member_price is not None and member_price < by_tier)


def test_the_demo_case_a_gold_price_above_silvers_rate_is_not_charged() -> None:
    """STEAM-200: base ¥195, a gold price of ¥188, silver pays 9折 = ¥175.50."""
    prices = {"gold": 18_800}
    silver, _ = unit_price(DEFAULT, facts("silver", 19_500, prices))
    gold, _ = unit_price(DEFAULT, facts("gold", 19_500, prices))
    assert silver == 17_550
    assert gold == apply_rate(19_500, DEFAULT.tier("gold").rate) == 16_575

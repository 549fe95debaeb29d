"""The tier ladder and its surrounding rules, read from a TOML file and validated.

Every number the business may change (thresholds, discounts, check-in points, SLAs)
lives in that file; code only reads it. The ladder is loaded once at start and kept in
memory, since it changes only with a restart.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import ErrorCode, ShopError


class Metric(StrEnum):
    TOTAL_SPENT = "total_spent"
    SPEND_365D = "spend_365d"
    PURCHASES_6M = "purchases_6m"
    VIOLATIONS_90D = "violations_90d"
    FULFILMENT_RATE = "fulfilment_rate"
    REFERRALS_ACTIVE = "referrals_active"
    JOINT_CAMPAIGNS = "joint_campaigns"
    GROWTH_POINTS = "growth_points"


#: Metrics measured in 分, where growth points may stand in for part of the threshold.
SPEND_METRICS = frozenset({Metric.TOTAL_SPENT, Metric.SPEND_365D})

Pool = Literal["basic", "selected", "exclusive"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Condition(Frozen):
    metric: Metric
    min: int | None = None
    max: int | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Condition:
        if (self.min is None) == (self.max is None):
            raise ValueError("a condition takes exactly one of min or max")
        return self


#: Alternatives (any one suffices), each a list of conditions that must all hold.
Rule = tuple[tuple[Condition, ...], ...]


class Capabilities(Frozen):
    pools: tuple[Pool, ...]
    batch_max: int = Field(ge=1)
    export: bool
    api: bool
    manager: bool
    reservation: bool
    #: Codes of one product a member may hold at once (with `reservation`).
    reservation_max: int = Field(default=0, ge=0)
    referral_commission: bool
    #: The referrer's share (%) of a referred member's delivered order, one level only.
    commission_percent: int = Field(default=0, ge=0, le=100)
    checkin_multiplier: float = Field(gt=0)
    sla_minutes: int = Field(gt=0)
    #: Un-revoked reseller API keys a member may hold at once (with `api`).
    api_keys_max: int = Field(default=0, ge=0)
    #: Signed API requests one key may make per minute (with `api`).
    api_requests_per_minute: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _api_limits(self) -> Capabilities:
        """API access with no key allowed, or no request a minute, would be a promise
        nobody could use: a tier with `api` names both limits."""
        if self.api and (self.api_keys_max == 0 or self.api_requests_per_minute == 0):
            raise ValueError("a tier with api needs api_keys_max and api_requests_per_minute > 0")
        return self


#: The capabilities the shop serves today, each with the code that honours it (a dotted
#: path; a test resolves every one and checks it reads that capability). The level card
#: shows only these, so a capability configured in tiers.toml is promised to nobody until
#: code serves it.
SERVED_CAPABILITIES: Mapping[str, str] = MappingProxyType(
    {
        "pools": "core.pricing.check_allowed",
        "batch_max": "core.pricing.quantity_limit",
        "sla_minutes": "core.tickets.Tickets.window",
        "checkin_multiplier": "core.checkin.checkin_points",
        "export": "core.export.Exports.own_orders_csv",
        "manager": "core.manager.ManagerRelay._allowed",
        "referral_commission": "core.commission.commission_on",
        "commission_percent": "core.commission.commission_on",
        "reservation": "core.reservations.Reservations.reserve",
        "reservation_max": "core.reservations.Reservations.reserve",
        "api": "core.api_keys.ApiKeys.authenticate",
        "api_keys_max": "core.api_keys.ApiKeys.issue",
        "api_requests_per_minute": "core.api_keys.ApiKeys.authenticate",
    }
)


class Tier(Frozen):
    key: str
    names: dict[str, str]
    layer: Literal["basic", "growth", "core", "strategic"]
    #: Percent of the base price paid (95 = 95折).
    rate: int = Field(gt=0, le=100)
    upgrade: Rule = ()
    keep: Rule | None = None
    invite_only: bool = False
    capabilities: Capabilities

    @property
    def maintenance(self) -> Rule:
        return self.keep if self.keep is not None else self.upgrade

    def name(self, locale: str) -> str:
        return self.names.get(locale) or self.names.get("en") or self.key


class PointsRules(Frozen):
    checkin_base: int = Field(ge=0)
    checkin_streak_step: int = Field(ge=0)
    checkin_streak_cap: int = Field(ge=0)
    expiry_months: int = Field(ge=1)
    expiry_warning_days: int = Field(ge=0)
    review_points: int = Field(ge=0)
    purchase_points_per_yuan: int = Field(ge=0)


class GrowthRules(Frozen):
    checkin: int = Field(ge=0)
    review: int = Field(ge=0)
    active_day: int = Field(ge=0)
    fen_per_growth_point: int = Field(ge=0)
    max_share_percent: int = Field(ge=0, le=100)


class ReviewRules(Frozen):
    consecutive_quarters: int = Field(ge=1)
    protection_months: int = Field(ge=0)


class FastTrackRules(Frozen):
    min_first_purchase: int = Field(gt=0)
    trial_days: int = Field(ge=1)


class ProgressRewards(Frozen):
    at_percent: tuple[int, ...]
    points: int = Field(ge=0)


class SupportRules(Frozen):
    urgent_categories: tuple[str, ...]
    urgent_minutes: int = Field(gt=0)
    categories: tuple[str, ...]
    #: Staff are warned when this share of a first-response window has passed.
    warn_percent: int = Field(default=80, gt=0, lt=100)


class RiskRules(Frozen):
    """Risk control (seed 003: 短时频繁下单): how much one member may do in a sliding window.

    A member who placed `max_orders` orders, or had `max_failures` purchases refused
    (short balance, price changed, sold out...), within the last `window_seconds` is
    refused further purchases until the oldest of those leaves the window.
    """

    window_seconds: int = Field(gt=0)
    max_orders: int = Field(ge=1)
    max_failures: int = Field(ge=1)


class TopUpRules(Frozen):
    """Wallet top-ups (分): the bounds of one, a member's daily ceiling, the preset buttons.

    The daily ceiling counts a member's top-ups started in one shop day that are pending
    or brought money (credited, paid, being refunded); expired ones free their share.
    """

    min_amount: int = Field(default=100, gt=0)
    max_amount: int = Field(default=500_000, gt=0)
    daily_max: int = Field(default=2_000_000, gt=0)
    presets: tuple[int, ...] = (1000, 5000, 10000, 50000)
    expiry_minutes: int = Field(default=30, gt=0)

    @model_validator(mode="after")
    def _check(self) -> TopUpRules:
        if self.max_amount < self.min_amount:
            raise ValueError("max_amount is below min_amount")
        if self.daily_max < self.max_amount:
            raise ValueError("daily_max is below max_amount: no top-up of max_amount could pass")
        if list(self.presets) != sorted(set(self.presets)):
            raise ValueError("presets must rise, each once")
        outside = [p for p in self.presets if not self.min_amount <= p <= self.max_amount]
        if outside:
            raise ValueError(f"presets outside min_amount..max_amount: {outside}")
        return self

    def preset_for(self, amount: int) -> int:
        """The smallest preset covering `amount` (what a short balance is offered), or
        `amount` itself within the bounds when no preset is that large."""
        covering = next((p for p in self.presets if p >= amount), None)
        if covering is not None:
            return covering
        return min(max(amount, self.min_amount), self.max_amount)


class ReservationRules(Frozen):
    """Stock reservation (库存预留): how long a hold lasts and when its holder is warned."""

    hours: int = Field(default=24, gt=0)
    warn_minutes: int = Field(default=60, ge=0)


class Ladder(Frozen):
    """The whole file: tiers lowest first, then the rules around them."""

    tiers: tuple[Tier, ...]
    points: PointsRules
    growth: GrowthRules
    review: ReviewRules
    fast_track: FastTrackRules
    progress_rewards: ProgressRewards
    support: SupportRules
    risk: RiskRules
    #: A ladder file written before top-ups existed gets the defaults.
    topup: TopUpRules = TopUpRules()
    reservation: ReservationRules = ReservationRules()

    @model_validator(mode="after")
    def _check(self) -> Ladder:
        keys = [tier.key for tier in self.tiers]
        if not keys:
            raise ValueError("the ladder has no tiers")
        if len(set(keys)) != len(keys):
            raise ValueError("tier keys must be unique")
        if self.tiers[0].upgrade or self.tiers[0].invite_only:
            raise ValueError("the first tier is where every member starts: no upgrade rule")
        missing = set(self.support.urgent_categories) - set(self.support.categories)
        if missing:
            raise ValueError(f"urgent categories not in categories: {sorted(missing)}")
        return self

    @cached_property
    def by_key(self) -> dict[str, Tier]:
        return {tier.key: tier for tier in self.tiers}

    @cached_property
    def positions(self) -> dict[str, int]:
        """Each tier's place on the ladder by key: `tiers.index(tier)` would compare
        pydantic models field by field, and every purchase asks twice (price, tier check)."""
        return {tier.key: position for position, tier in enumerate(self.tiers)}

    @property
    def entry(self) -> Tier:
        return self.tiers[0]

    def tier(self, key: str) -> Tier:
        return self.tiers[self.index(key)]

    def index(self, key: str) -> int:
        try:
            return self.positions[key]
        except KeyError:
            raise ShopError(ErrorCode.UNKNOWN_TIER, tier=key) from None

    def above(self, key: str) -> Tier | None:
        """The next tier a member can earn by the rules (invite-only tiers are skipped)."""
        for tier in self.tiers[self.index(key) + 1 :]:
            if not tier.invite_only:
                return tier
        return None

    def below(self, key: str) -> Tier | None:
        """The tier one step down that the rules can hold (invite-only tiers are skipped)."""
        for tier in reversed(self.tiers[: self.index(key)]):
            if not tier.invite_only:
                return tier
        return None

    def lowest_with(self, pool: str) -> Tier | None:
        """The first tier whose product pool includes `pool` (what opens a locked product)."""
        return next((t for t in self.tiers if pool in t.capabilities.pools), None)

    def lowest_with_manager(self) -> Tier | None:
        return next((t for t in self.tiers if t.capabilities.manager and not t.invite_only), None)


def load_ladder(path: Path) -> Ladder:
    with path.open("rb") as handle:
        return Ladder.model_validate(tomllib.load(handle))

"""What the level card promises, and how members hear about progress rewards.

The card may only show capabilities some code serves; the check-in reply names a reward
that landed, and /balance names where every point came from.
"""

from __future__ import annotations

import importlib
import inspect
import io
from datetime import UTC
from typing import Any

import pytest

from bot.adapters.terminal import chat as terminal_chat
from bot.app import build_runtime
from bot.handlers.level import CAPABILITY_LINES, benefits
from bot.i18n import Translator
from core.config import DEFAULT_TIERS_FILE
from core.ladder import SERVED_CAPABILITIES, Capabilities, load_ladder
from core.models import Member
from core.shop import Shop
from core.tiers.moves import ProgressReward

LADDER = load_ladder(DEFAULT_TIERS_FILE)


def _resolve(path: str) -> Any:
    """`core.module.Class.method` → the object, importing the longest module prefix."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            target = getattr(target, name)
        return target
    raise AssertionError(f"{path} names no module")


@pytest.mark.parametrize("capability", sorted(SERVED_CAPABILITIES))
def test_every_served_capability_names_code_that_reads_it(capability: str) -> None:
    assert capability in Capabilities.model_fields
    source = inspect.getsource(_resolve(SERVED_CAPABILITIES[capability]))
    assert f".{capability}" in source or f'"{capability}"' in source


def test_the_card_renders_only_served_capabilities() -> None:
    assert set(CAPABILITY_LINES) == set(SERVED_CAPABILITIES)


class _Planned(Capabilities):
    """The ladder with one more capability, as tiers.toml may declare before code serves it."""

    planned_feature: bool = False


#: Whatever the ladder declares that no code serves, and one such made up here, so the
#: check runs even while every declared capability is served.
UNSERVED = sorted(set(_Planned.model_fields) - set(SERVED_CAPABILITIES))


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
@pytest.mark.parametrize("capability", UNSERVED)
def test_an_unserved_capability_changes_nothing_on_the_card(locale: str, capability: str) -> None:
    """Turning a capability no code serves on or off leaves every tier's card as it is."""
    ctx: Any = Translator(locale, currency="CNY", zone=UTC)
    for tier in LADDER.tiers:
        planned = _Planned(**tier.capabilities.model_dump())
        value = getattr(planned, capability)
        assert isinstance(value, bool)
        lines = []
        for flag in (False, True):
            caps = planned.model_copy(update={capability: flag})
            lines.append(benefits(ctx, tier.model_copy(update={"capabilities": caps})))
        assert lines[0] == lines[1], (tier.key, capability)


def test_platinum_is_promised_what_the_shop_does() -> None:
    ctx: Any = Translator("en", currency="CNY", zone=UTC)
    card = "\n".join(benefits(ctx, LADDER.tier("platinum")))
    assert "Export your orders (CSV)" in card
    assert "Referral commission: 3% of what the members you brought buy" in card
    assert "Reserve up to 100 codes of a product" in card
    assert "API access for your own site or bot: up to 3 keys, rate limit 120/min each" in card
    assert "API" not in "\n".join(benefits(ctx, LADDER.tier("gold")))


async def test_a_progress_reward_is_announced_and_named_on_balance(shop: Shop) -> None:
    """Half way to Silver (¥250 of ¥500): the check-in reply says the reward landed."""
    member = await shop.members.register(4242, language_code="en")
    async with shop.db.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        row.total_spent = 25_000
    out = io.StringIO()
    script = io.StringIO("/checkin\n/balance\n")
    await terminal_chat(build_runtime(shop), user_id=4242, lang="en", stdin=script, stdout=out)
    shown = out.getvalue()
    assert "🎁 +50 points: your progress to Silver reached 50%!" in shown
    assert "Progress reward +50" in shown
    assert "Check-in +10" in shown


async def test_a_purchase_carries_the_reward_it_earned(shop: Shop) -> None:
    """A first purchase of ¥263.16 at 95折 pays ¥250, half of Silver's ¥500."""
    member = await shop.members.register(4343)
    await shop.catalog.upsert_category("cards", "点卡", "Cards")
    product = await shop.catalog.create_product("CARD-250", "cards", "点卡", "Card", 26_316)
    await shop.stock.import_codes("CARD-250", ["C-1", "C-2"])
    await shop.operations.admin.top_up("test", member.id, 60_000, reason="paid in")

    first = await shop.orders.place(member.id, product.id, 1, idempotency_key="one")
    again = await shop.orders.place(member.id, product.id, 1, idempotency_key="one")

    assert first.order.total == 25_000
    assert first.rewards == (ProgressReward(tier="silver", percent=50, points=50),)
    assert again.rewards == ()

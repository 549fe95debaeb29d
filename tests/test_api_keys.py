"""Reseller API keys: a secret shown once and kept encrypted, a cap per tier that holds
under races, keys that outlive a lost tier but stop working, nonces used once."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from core.api_keys import KEY_ID
from core.clock import ManualClock
from core.config import DEFAULT_TIERS_FILE
from core.errors import ErrorCode, ShopError
from core.ladder import Capabilities, load_ladder
from core.models import ApiKey, ApiNonce
from core.shop import Shop, build_jobs
from tests.factories import make_member


async def test_a_key_is_shown_once_and_stored_encrypted(shop: Shop) -> None:
    member = await make_member(shop.db, shop.clock, tier="platinum")

    issued = await shop.api_keys.issue(member, label="my site")

    assert KEY_ID.fullmatch(issued.key.key_id)
    assert issued.secret.startswith("sk_")
    assert len(issued.secret) > 40
    assert (issued.key.member_id, issued.key.label) == (member, "my site")
    assert issued.key.revoked_at is None
    assert issued.key.last_used_at is None
    async with shop.db.read() as session:
        stored = await session.scalar(select(ApiKey.secret).where(ApiKey.member_id == member))
    assert stored is not None
    assert issued.secret.encode() not in stored
    assert shop.vault.decrypt(stored) == issued.secret


async def test_listing_never_shows_a_secret(shop: Shop) -> None:
    member = await make_member(shop.db, shop.clock, tier="platinum")
    first = await shop.api_keys.issue(member)
    second = await shop.api_keys.issue(member, label="  bot  ")

    keys = await shop.api_keys.list(member)

    assert [k.key_id for k in keys] == [first.key.key_id, second.key.key_id]
    assert keys[1].label == "bot"
    assert "secret" not in {f.name for f in dataclasses.fields(keys[0])}
    assert first.secret not in repr(keys)
    assert second.secret not in repr(keys)


async def test_a_revoked_key_stops_at_once_and_revoking_again_is_fine(shop: Shop) -> None:
    member = await make_member(shop.db, shop.clock, tier="platinum")
    issued = await shop.api_keys.issue(member)
    key_id = issued.key.key_id
    assert (await shop.api_keys.authenticate(key_id)) is not None

    revoked = await shop.api_keys.revoke(member, key_id, actor="cli:root")
    again = await shop.api_keys.revoke(member, key_id, actor="cli:root")

    assert revoked.revoked_at == again.revoked_at == shop.clock.now()
    assert await shop.api_keys.authenticate(key_id) is None
    assert await shop.api_keys.list(member) == []
    assert [k.key_id for k in await shop.api_keys.list(member, include_revoked=True)] == [key_id]
    audit = await shop.operations.audit.recent(action="api_key.revoke")
    assert len(audit) == 1, "a second revoke changes nothing, so nothing is audited"
    assert audit[0].after == {"key_id": key_id}
    assert issued.secret not in repr(audit)


async def test_someone_elses_or_an_unknown_key_is_not_found(shop: Shop) -> None:
    owner = await make_member(shop.db, shop.clock, tier="platinum")
    other = await make_member(shop.db, shop.clock, tier="platinum")
    issued = await shop.api_keys.issue(owner)

    for member, key in ((other, issued.key.key_id), (owner, "ak_0000000000000000")):
        with pytest.raises(ShopError) as refused:
            await shop.api_keys.revoke(member, key)
        assert refused.value.code is ErrorCode.API_KEY_NOT_FOUND
        assert refused.value.params == {"key": key}
    assert await shop.api_keys.authenticate(issued.key.key_id) is not None


async def test_only_a_tier_with_api_gets_keys(shop: Shop) -> None:
    gold = await make_member(shop.db, shop.clock, tier="gold")

    with pytest.raises(ShopError) as refused:
        await shop.api_keys.issue(gold)

    assert refused.value.code is ErrorCode.API_NOT_ALLOWED
    assert refused.value.params == {"tier": "gold"}


async def test_the_cap_holds_when_ten_issues_race(shop: Shop) -> None:
    """Platinum holds 3 keys: 10 concurrent issues make exactly 3, the rest refused."""
    member = await make_member(shop.db, shop.clock, tier="platinum")

    results = await asyncio.gather(
        *(shop.api_keys.issue(member) for _ in range(10)), return_exceptions=True
    )

    refusals = [r for r in results if isinstance(r, ShopError)]
    assert len(refusals) == 7, results
    assert {(r.code, r.params["max"]) for r in refusals} == {(ErrorCode.API_KEY_LIMIT, 3)}
    assert len(await shop.api_keys.list(member)) == 3
    # A revoked key frees its place.
    await shop.api_keys.revoke(member, (await shop.api_keys.list(member))[0].key_id)
    await shop.api_keys.issue(member)
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(ApiKey.id))) == 4


async def test_a_member_who_loses_the_tier_keeps_keys_that_no_longer_work(shop: Shop) -> None:
    member = await make_member(shop.db, shop.clock, tier="diamond")
    issued = await shop.api_keys.issue(member, actor="cli:root")

    caller = await shop.api_keys.authenticate(issued.key.key_id)
    assert caller is not None
    assert (caller.member_id, caller.secret, caller.tier_key) == (member, issued.secret, "diamond")
    assert (caller.allowed, caller.requests_per_minute) == (True, 600)

    await shop.tiers.set_tier(member, "gold", actor="cli:root", reason="test")
    caller = await shop.api_keys.authenticate(issued.key.key_id)
    assert caller is not None
    assert (caller.allowed, caller.requests_per_minute, caller.tier_key) == (False, 0, "gold")
    assert [k.key_id for k in await shop.api_keys.list(member)] == [issued.key.key_id]

    await shop.tiers.set_tier(member, "platinum", actor="cli:root", reason="back")
    caller = await shop.api_keys.authenticate(issued.key.key_id)
    assert caller is not None
    assert (caller.allowed, caller.requests_per_minute) == (True, 120)
    (entry,) = await shop.operations.audit.recent(action="api_key.issue")
    assert entry.actor == "cli:root"
    assert entry.after == {"key_id": issued.key.key_id, "label": None}


async def test_what_is_no_key_resolves_to_nobody(shop: Shop) -> None:
    for key_id in ("", "ak_0000000000000000", "ak_' OR 1=1 --", "x" * 10_000):
        assert await shop.api_keys.authenticate(key_id) is None


async def test_a_nonce_is_accepted_once_and_forgotten_after_its_window(shop: Shop) -> None:
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member = await make_member(shop.db, clock, tier="platinum")
    key_id = (await shop.api_keys.issue(member)).key.key_id
    other = (await shop.api_keys.issue(member)).key.key_id
    until = clock.now() + timedelta(seconds=300)

    assert await shop.api_keys.remember_nonce(key_id, "n-1", until) is True
    assert await shop.api_keys.remember_nonce(key_id, "n-1", until) is False
    assert await shop.api_keys.remember_nonce(other, "n-1", until) is True
    assert await shop.api_keys.remember_nonce(key_id, "", until) is False
    assert await shop.api_keys.remember_nonce(key_id, "n" * 65, until) is False
    (used,) = [k for k in await shop.api_keys.list(member) if k.key_id == key_id]
    assert used.last_used_at == clock.now()

    racing = await asyncio.gather(
        *(shop.api_keys.remember_nonce(key_id, "race", until) for _ in range(10))
    )
    assert sorted(racing) == [False] * 9 + [True]

    assert await shop.api_keys.forget_nonces() == 0
    clock.advance(timedelta(seconds=301))
    assert await shop.api_keys.forget_nonces() == 3
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(ApiNonce)) == 0


async def test_the_expiry_sweep_forgets_old_nonces(shop: Shop) -> None:
    class Silent:
        async def notify(self, event: object) -> None:
            raise AssertionError(event)

    clock = shop.clock
    assert isinstance(clock, ManualClock)
    member = await make_member(shop.db, clock, tier="platinum")
    key_id = (await shop.api_keys.issue(member)).key.key_id
    await shop.api_keys.remember_nonce(key_id, "old", clock.now() + timedelta(seconds=300))
    clock.advance(timedelta(minutes=10))

    reports = await build_jobs(shop, Silent()).run_due()

    (sweep,) = [r for r in reports if r.job == "reservations"]
    assert sweep.result is not None
    assert sweep.result["nonces_forgotten"] == 1


def test_a_tier_with_api_names_its_limits() -> None:
    ladder = load_ladder(DEFAULT_TIERS_FILE)
    caps = ladder.tier("platinum").capabilities.model_dump()
    for missing in ("api_keys_max", "api_requests_per_minute"):
        with pytest.raises(ValidationError, match="api_keys_max and api_requests_per_minute"):
            Capabilities.model_validate({**caps, missing: 0})
    assert Capabilities.model_validate({**caps, "api": False, "api_keys_max": 0}).api is False
    assert [t.key for t in ladder.tiers if t.capabilities.api] == [
        "platinum", "diamond", "black_diamond", "partner",
    ]  # fmt: skip

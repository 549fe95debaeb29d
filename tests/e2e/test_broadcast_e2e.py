"""Broadcasts end to end: written in /admin, sent by the bot's broadcaster through the Bot
API stand-in, on both adapters and databases.

Checked against what each member's chat received and what the shop stored: one message
per member of the chosen tier, none for the others, a member who blocked the bot marked
unreachable, a 429 waited out and sent once, and a
restart in the middle that neither repeats nor drops anyone.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from core.clock import ManualClock
from core.config import Settings
from core.jobs import Event
from core.models import Broadcast, BroadcastDelivery, JobRun, Member
from core.shop import Shop, build_jobs
from core.uow import Database
from tests.botapi import BotApiStub
from tests.e2e.harness import Chat, running_bot
from tests.e2e.test_membership import eventually, t
from tests.factories import make_member

ADMIN = 9_101
TEXT = "Double points today <3"
en = t("en")


@pytest.fixture
def bot_settings(bot_settings: Settings) -> Settings:
    return bot_settings.model_copy(update={"admin_ids": [ADMIN], "broadcast_rate": 50.0})


@pytest.fixture
def admin(api: BotApiStub, db: Database) -> Chat:
    """The admin's chat (`db` first: it empties the database); tests run the bot themselves."""
    return Chat(api, api.user(ADMIN, "Boss", language_code="en"))


async def members(shop: Shop, api: BotApiStub, tier: str, first: int, count: int) -> list[int]:
    """Telegram ids of `count` members of `tier`, each with a chat at the stand-in."""
    ids = list(range(first, first + count))
    for telegram_id in ids:
        api.user(telegram_id, language_code="zh-hans")
        await make_member(shop.db, shop.clock, tier=tier, telegram_id=telegram_id)
    return ids


async def first_tick_done(shop: Shop) -> None:
    """Wait for the bot's first round of scheduled jobs, so its notices (a tier review
    warning members below their rule) come before, not among, the broadcast."""

    async def done() -> bool:
        async with shop.db.read() as session:
            runs = await session.scalars(select(JobRun.finished_at))
            finished = [run for run in runs if run is not None]
        return len(finished) == len(build_jobs(shop, NoNotices()).jobs)

    await eventually(done, "the first round of scheduled jobs")


class NoNotices:
    async def notify(self, event: Event) -> None:
        raise AssertionError(f"unexpected {event!r}")


def received(api: BotApiStub, telegram_id: int) -> list[str]:
    return [m.text or "" for m in api.sent_to(telegram_id) if (m.text or "").startswith("Double")]


async def write_broadcast(admin: Chat, shop: Shop, tier: str, button: str | None) -> None:
    """Everything up to the preview; the caller taps Send now."""
    await admin.say("/admin")
    await admin.tap(en._("📣 Broadcast"))
    await admin.tap(shop.ladder.tier(tier).name("en"))
    await admin.say(TEXT)
    if button is None:
        [preview] = await admin.tap(en._("No button"))
    else:
        [preview] = await admin.say(button)
    assert "Double points today &lt;3" not in (preview.text or "")
    assert TEXT in (preview.text or "")


async def deliveries(shop: Shop) -> dict[int, tuple[str, int, str | None]]:
    async with shop.db.read() as session:
        rows = await session.execute(
            select(
                Member.telegram_id,
                BroadcastDelivery.status,
                BroadcastDelivery.attempts,
                BroadcastDelivery.error,
            ).join(Member, Member.id == BroadcastDelivery.member_id)
        )
        return {int(tid): (status, attempts, error) for tid, status, attempts, error in rows}


async def finished(shop: Shop) -> bool:
    async with shop.db.read() as session:
        return await session.scalar(select(Broadcast.status)) == "finished"


def final_report(api: BotApiStub) -> str | None:
    for message in api.sent_to(ADMIN):
        if "finished" in (message.text or ""):
            return message.text
    return None


async def test_broadcast_to_a_tier_waits_out_a_429_and_marks_blocked_members(
    api: BotApiStub, bot_settings: Settings, admin: Chat, shop: Shop, clock: ManualClock
) -> None:
    async with running_bot(api, bot_settings, clock):
        await first_tick_done(shop)
        golds = await members(shop, api, "gold", 6_001, 4)
        others = await members(shop, api, "member", 6_101, 2)
        blocked = golds[2]
        api.block(blocked)
        await write_broadcast(admin, shop, "gold", "Shop now https://example.com/sale")
        # The first sends get 429: the transport waits each out and sends again (bot.flood),
        # so the broadcaster sees every member sent on its first attempt.
        flooded = 2
        api.fail_next("sendMessage", times=flooded, retry_after=1)
        [queued] = await admin.tap(en._("✅ Send now"))
        assert "#" in (queued.text or "")
        report = await api.wait_for(lambda: final_report(api), timeout=20, what="the report")

    assert "Sent: 3\nBlocked the bot: 1\nFailed: 0" in report
    for telegram_id in golds:
        expected = 0 if telegram_id == blocked else 1
        assert len(received(api, telegram_id)) == expected, telegram_id
    for telegram_id in others:
        assert received(api, telegram_id) == []
    message = next(m for m in api.sent_to(golds[0]) if m.text == TEXT)
    assert message.buttons == [{"text": "Shop now", "url": "https://example.com/sale"}]

    statuses = await deliveries(shop)
    assert set(statuses) == set(golds)
    assert statuses[blocked][0] == "blocked"
    assert [attempts for _, attempts, _ in statuses.values()] == [1] * len(golds)
    assert len([c for c in api.calls_to("sendMessage") if c.status == 429]) == flooded
    member = await shop.members.by_telegram(blocked)
    assert member is not None
    assert member.unreachable


async def test_broadcast_resumes_after_a_restart_and_reaches_everyone_once(
    api: BotApiStub, bot_settings: Settings, admin: Chat, shop: Shop, clock: ManualClock
) -> None:
    slow = bot_settings.model_copy(update={"broadcast_rate": 5.0})
    # At a stop the deliveries already claimed (one per sending worker) still go out, so
    # the audience is large enough for the broadcast to be cut off half-way.
    silvers = list(range(6_201, 6_221))
    blocked = silvers[-1]

    def delivered() -> int:
        return sum(len(received(api, telegram_id)) for telegram_id in silvers)

    async with running_bot(api, slow, clock):
        await first_tick_done(shop)
        await members(shop, api, "silver", silvers[0], len(silvers))
        api.block(blocked)
        await write_broadcast(admin, shop, "silver", None)
        await admin.tap(en._("✅ Send now"))
        await api.wait_for(lambda: delivered() >= 3, timeout=10, what="three deliveries")
    # The first bot is gone mid-broadcast: some members are still waiting, and nothing
    # of the stopped bot keeps sending.
    stopped_at = delivered()
    assert stopped_at < len(silvers) - 1
    assert not await finished(shop)
    await asyncio.sleep(0.5)
    assert delivered() == stopped_at

    async with running_bot(api, slow, clock):
        await eventually(lambda: finished(shop), "the broadcast finished after the restart")
        report = await api.wait_for(lambda: final_report(api), timeout=10, what="the report")

    assert delivered() > stopped_at
    for telegram_id in silvers:
        expected = 0 if telegram_id == blocked else 1
        assert len(received(api, telegram_id)) == expected, telegram_id
    statuses = await deliveries(shop)
    assert statuses[blocked][0] == "blocked"
    assert all(status in ("sent", "blocked", "failed") for status, _, _ in statuses.values())
    assert "Blocked the bot: 1" in report
    member = await shop.members.by_telegram(blocked)
    assert member is not None
    assert member.unreachable

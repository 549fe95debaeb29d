"""Broadcasts: paced, honouring 429, marking blocked members, resumable at most once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select, update

from core.broadcast import BroadcastReport, Broadcasts, Button, SendOutcome
from core.models import BroadcastDelivery, Member
from core.shop import Shop
from tests.factories import make_member


def _service(shop: Shop, *, rate: float = 1000.0, concurrency: int = 3) -> Broadcasts:
    return Broadcasts(shop.db, shop.ladder, shop.clock, rate=rate, concurrency=concurrency)


async def _members(shop: Shop, count: int, tier: str = "member") -> list[int]:
    """Member ids; their Telegram ids are 500000 + a running number (see factories)."""
    return [await make_member(shop.db, shop.clock, tier=tier) for _ in range(count)]


async def _telegram_ids(shop: Shop, member_ids: list[int]) -> list[int]:
    async with shop.db.read() as session:
        rows = await session.scalars(
            select(Member.telegram_id).where(Member.id.in_(member_ids)).order_by(Member.id)
        )
        return [int(t) for t in rows if t is not None]


async def _statuses(shop: Shop, broadcast_id: int) -> dict[int, tuple[str, int, str | None]]:
    async with shop.db.read() as session:
        rows = await session.execute(
            select(
                BroadcastDelivery.member_id,
                BroadcastDelivery.status,
                BroadcastDelivery.attempts,
                BroadcastDelivery.error,
            ).where(BroadcastDelivery.broadcast_id == broadcast_id)
        )
        return {member: (status, attempts, error) for member, status, attempts, error in rows}


async def test_sends_at_most_rate_per_second(shop: Shop) -> None:
    rate = 20
    members = await _members(shop, 45)
    service = _service(shop, rate=rate, concurrency=4)
    broadcast, recipients = await service.create(
        "tg:1", "all", "hello", Button("Go", "https://x.y")
    )
    assert recipients == 45
    loop = asyncio.get_running_loop()
    times: list[float] = []
    seen: list[tuple[int, str | None, str, Button | None]] = []

    async def send(
        telegram_id: int, locale: str | None, text: str, button: Button | None
    ) -> SendOutcome:
        times.append(loop.time())
        seen.append((telegram_id, locale, text, button))
        await asyncio.sleep(0.01)
        return SendOutcome.sent()

    report = await service.run(broadcast.id, send)

    assert (report.sent, report.blocked, report.failed, report.pending) == (45, 0, 0, 0)
    assert report.status == "finished"
    times.sort()
    windows = [times[i + rate] - times[i] for i in range(len(times) - rate)]
    assert min(windows) >= 1.0 - 0.001
    assert sorted(t for t, *_ in seen) == await _telegram_ids(shop, members)
    assert {(text, button) for _, _, text, button in seen} == {
        ("hello", Button("Go", "https://x.y"))
    }


async def test_blocked_members_are_marked_and_reported(shop: Shop) -> None:
    members = await _members(shop, 6)
    telegram = await _telegram_ids(shop, members)
    blocked, broken = telegram[0:2], telegram[2]
    service = _service(shop)
    broadcast, _ = await service.create("tg:1", "all", "news")
    progress: list[BroadcastReport] = []

    async def send(telegram_id: int, *_: object) -> SendOutcome:
        if telegram_id in blocked:
            return SendOutcome.blocked()
        if telegram_id == broken:
            raise ConnectionError("network down")
        return SendOutcome.sent()

    async def on_progress(report: BroadcastReport) -> None:
        progress.append(report)

    report = await service.run(broadcast.id, send, progress=on_progress)

    assert (report.total, report.sent, report.blocked, report.failed) == (6, 3, 2, 1)
    assert progress[-1] == report
    assert (await shop.members.get(members[0])).unreachable
    assert (await shop.members.get(members[1])).unreachable
    assert not (await shop.members.get(members[2])).unreachable
    assert (await _statuses(shop, broadcast.id))[members[2]] == ("failed", 1, "ConnectionError")

    # The next broadcast leaves out the members known to have blocked the bot.
    _, recipients = await service.create("tg:1", "all", "again")
    assert recipients == 4


async def test_audience_is_one_tier_and_only_reachable_telegram_members(shop: Shop) -> None:
    golds = await _members(shop, 3, tier="gold")
    await _members(shop, 2)
    async with shop.db.transaction() as session:
        await session.execute(update(Member).where(Member.id == golds[0]).values(unreachable=True))
    service = _service(shop)
    broadcast, recipients = await service.create("tg:1", "gold", "for gold")
    assert recipients == 2
    assert sorted(await _statuses(shop, broadcast.id)) == golds[1:]


async def test_resume_after_crash_sends_each_member_exactly_once(shop: Shop) -> None:
    members = await _members(shop, 12)
    first = _service(shop, concurrency=3)
    broadcast, _ = await first.create("tg:1", "all", "sale")
    received: Counter[int] = Counter()
    all_stuck = asyncio.Event()

    async def crashing_send(telegram_id: int, *_: object) -> SendOutcome:
        received[telegram_id] += 1
        if received.total() > 5:
            if received.total() == 5 + 3:
                all_stuck.set()
            await asyncio.sleep(3600)
        return SendOutcome.sent()

    task = asyncio.create_task(first.run(broadcast.id, crashing_send))
    # Five sends complete, then each of the three workers hangs inside a send: the crash
    # comes while their members may or may not have been messaged.
    await asyncio.wait_for(all_stuck.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    interrupted = 3

    async def send(telegram_id: int, *_: object) -> SendOutcome:
        received[telegram_id] += 1
        return SendOutcome.sent()

    restarted = _service(shop, concurrency=3)
    reports = await restarted.resume_unfinished(send)

    assert received == Counter(dict.fromkeys(await _telegram_ids(shop, members), 1))
    assert len(reports) == 1
    report = reports[0]
    assert (report.status, report.pending) == ("finished", 0)
    assert (report.sent, report.failed) == (12 - interrupted, interrupted)
    statuses = await _statuses(shop, broadcast.id)
    failed = [error for status, _, error in statuses.values() if status == "failed"]
    assert failed == ["interrupted"] * interrupted
    assert await restarted.resume_unfinished(send) == []


async def test_two_runs_of_one_broadcast_never_share_a_member(shop: Shop) -> None:
    members = await _members(shop, 20)
    service = _service(shop, concurrency=3)
    broadcast, _ = await service.create("tg:1", "all", "twice")
    received: Counter[int] = Counter()

    async def send(telegram_id: int, *_: object) -> SendOutcome:
        received[telegram_id] += 1
        await asyncio.sleep(0.005)
        return SendOutcome.sent()

    other = _service(shop, concurrency=3)
    first, second = await asyncio.gather(
        service.run(broadcast.id, send), other.run(broadcast.id, send)
    )

    assert received == Counter(dict.fromkeys(await _telegram_ids(shop, members), 1))
    # A run that ends while the other's last send is in flight reports it as pending.
    assert first.sent + first.pending == second.sent + second.pending == 20
    final = await service.report(broadcast.id)
    assert (final.status, final.sent, final.pending) == ("finished", 20, 0)

"""Several workers behind one webhook: `cardshop ingress` and three `cardshop run` workers.

Real processes on PostgreSQL + Redis against the Bot API stand-in, which posts every
update to the ingress's webhook as Telegram does. Many chats check in, ask for help and
buy while one worker is killed with SIGKILL; afterwards every update has been handled
exactly once (its claim in `processed_updates`, one check-in and one order per member),
each chat's replies came in the order of its messages, and the money adds up.

Skipped without TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import func, select, update

from bench.updates import FIRST_MEMBER, seed
from bench.workers import Cluster, free_port, wait_until_ready
from bot.flood import FloodControl, SharedPace
from bot.handlers.browse import ProductCallback
from bot.handlers.buy import PayCallback, QuantityCallback
from bot.http import SECRET_HEADER, HttpServer
from bot.workers import FIELD, PartitionWorker, UpdateStreams, checked_update, update_chat
from core.config import Settings
from core.models import CheckIn, Code, Member, Order, ProcessedUpdate
from core.shop import Shop
from tests.botapi import BotApiStub, TgUser
from tests.conftest import TEST_KEY

REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
PG_URL = os.environ.get("TEST_DATABASE_URL", "")
needs_both = pytest.mark.skipif(
    not (PG_URL.startswith("postgresql") and REDIS_URL),
    reason="several workers need TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL",
)

CHATS = 24
WORKERS = 3
#: Sent at once by each chat, and what each must be answered with, in this order.
BURST = ("/checkin", "/checkin", "/help", "/checkin")
MARKERS = ("Checked in!", "already checked in", "Commands", "already checked in")
#: How long any one step may take, a worker's death and the takeover included.
STEP_SECONDS = 45.0


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    await client.flushdb()
    yield client
    await client.aclose()


# --- pieces --------------------------------------------------------------------------------


def test_updates_are_placed_by_chat_else_by_sender() -> None:
    chat = {"id": -1001, "type": "supergroup"}
    user = {"id": 42, "is_bot": False, "first_name": "A"}
    message = {"message_id": 1, "date": 0, "chat": chat, "from": user, "text": "/x"}
    assert update_chat({"update_id": 1, "message": message}) == -1001
    assert update_chat({"update_id": 1, "edited_message": message}) == -1001
    tap = {"id": "q", "from": user, "chat_instance": "c", "data": "d", "message": message}
    assert update_chat({"update_id": 2, "callback_query": tap}) == -1001
    inline_tap = {"id": "q", "from": user, "chat_instance": "c", "data": "d"}
    assert update_chat({"update_id": 3, "callback_query": inline_tap}) == 42
    query = {"id": "p", "from": user, "currency": "XTR", "total_amount": 5, "invoice_payload": "x"}
    assert update_chat({"update_id": 4, "pre_checkout_query": query}) == 42
    for bad in ({"update_id": 5}, {"update_id": 6, "message": "text"}, {"update_id": 7, "x": {}}):
        with pytest.raises(ValueError, match="no chat"):
            checked_update(bad)


@needs_both
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_ingress_answers_only_after_the_update_is_in_redis(
    redis: Redis, settings: Settings
) -> None:
    """200 once the entry is written; a Redis failure is a 503 (Telegram retries); a
    body that is no update a 400 and nothing written."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    configured = settings.model_copy(
        update={
            "webhook_url": url,
            "webhook_secret": SecretStr("s3cret"),
            "http_listen": f"127.0.0.1:{port}",
        }
    )
    streams = UpdateStreams(redis, 4)
    failing = UpdateStreams(Redis.from_url("redis://127.0.0.1:1/0"), 4)
    user = {"id": 6, "is_bot": False, "first_name": "A"}
    message = {"message_id": 1, "date": 0, "chat": {"id": 6, "type": "private"}, "from": user}
    body = {"update_id": 77, "message": {**message, "text": "/start"}}
    for target, expected in ((streams, 200), (failing, 503)):
        http = HttpServer(configured)
        http.add_webhook(checked_update, target.publish, answer_after=True)
        async with http.serving(), aiohttp.ClientSession() as session:
            posts = [
                (body, expected),
                ({"update_id": 78}, 400),
            ]
            for payload, status in posts:
                async with session.post(
                    url, data=json.dumps(payload), headers={SECRET_HEADER: "s3cret"}
                ) as reply:
                    assert reply.status == status
    await failing.redis.aclose()
    entries: Any = await redis.xrange(streams.stream(6 % 4))
    assert [json.loads(fields[FIELD.encode()]) for _, fields in entries] == [body]
    assert sum([await redis.xlen(streams.stream(p)) for p in range(4)]) == 1


@needs_both
async def test_a_shared_pace_puts_every_processs_turns_on_one_schedule(redis: Redis) -> None:
    """Two processes' paces (two clients, one key): their turns together keep the rate.

    The turns are Redis's times, not sleeps measured here, so this holds on a slow
    machine: after the burst, any `k` more turns span at least `k` intervals.
    """
    clients = [Redis.from_url(REDIS_URL) for _ in range(2)]
    paces = [SharedPace(c, "test:pace", per_second=10, burst=3) for c in clients]
    turns = await asyncio.gather(*(paces[i % 2].reserve() for i in range(20)))
    for client in clients:
        await client.aclose()
    times = sorted(at for _, at in turns)
    interval_ms = 100.0
    for first in range(len(times)):
        for later in range(first + 3, len(times)):
            assert times[later] - times[first] >= (later - first - 2) * interval_ms - 0.01
    assert all(wait >= 0 for wait, _ in turns)


async def test_a_pace_without_redis_still_sends_at_this_processs_own_pace() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0")
    flood = FloodControl(per_second=1000, shared=SharedPace(dead, "k", per_second=1000))
    sent = [await flood.send(5, partial(_echo, i)) for i in range(3)]
    await SharedPace(dead, "k", per_second=1000).acquire()
    await dead.aclose()
    assert sent == [0, 1, 2]


async def _echo(value: int) -> int:
    return value


@needs_both
async def test_a_worker_keeps_each_chats_order_and_lets_go_when_stopped(redis: Redis) -> None:
    """In one process: a chat's entries in order while chats interleave, a pre-checkout
    query not held behind its payer's chat; stopped, the worker frees its leases."""
    streams = UpdateStreams(redis, 2)
    handled: list[tuple[int, int]] = []
    gate, everything = asyncio.Event(), asyncio.Event()

    async def handle(update: dict[str, Any]) -> None:
        if "pre_checkout_query" in update:
            gate.set()  # while chat 10's first update still waits below
        elif update["update_id"] == 4:  # chat 10's first
            await gate.wait()
        handled.append((update_chat(update), update["update_id"]))
        if len(handled) == 21:
            everything.set()

    def message(update_id: int, chat: int) -> dict[str, Any]:
        sender = {"id": chat, "is_bot": False, "first_name": "A"}
        body = {"message_id": update_id, "date": 0, "chat": {"id": chat, "type": "private"}}
        return {"update_id": update_id, "message": {**body, "from": sender, "text": "x"}}

    updates = [message(i, 10 + i % 4) for i in range(1, 21)]
    query = {"id": "q", "from": {"id": 10, "is_bot": False, "first_name": "A"}}
    updates.append({"update_id": 99, "pre_checkout_query": {**query, "currency": "XTR"}})
    for one in updates:
        await streams.publish(one)
    worker = PartitionWorker(
        streams, handle, dict, lease=timedelta(seconds=2), heartbeat=timedelta(seconds=0.1)
    )
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(everything.wait(), 30)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    for chat in range(10, 14):
        ids = [u for c, u in handled if c == chat and u != 99]
        assert ids == sorted(ids)
    assert handled.index((10, 99)) < handled.index((10, 4))
    assert await redis.mget([streams.lease(p) for p in range(2)]) == [None, None]
    assert await redis.zcard(streams.workers_key) == 0
    assert [await redis.xlen(streams.stream(p)) for p in range(2)] == [0, 0]


# --- the whole layout ----------------------------------------------------------------------


class Progress:
    """Update ids whose claim is committed, read from the database by one poller."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.done: set[int] = set()
        self.changed = asyncio.Event()

    async def poll(self) -> None:
        while True:
            async with self.shop.db.read() as session:
                ids = set(await session.scalars(select(ProcessedUpdate.update_id)))
            if ids != self.done:
                self.done = ids
                self.changed.set()
                self.changed = asyncio.Event()
            await asyncio.sleep(0.1)

    async def handled(self, update_id: int) -> None:
        deadline = time.monotonic() + STEP_SECONDS
        while update_id not in self.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"update {update_id} was never handled")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                continue


def pay_button(api: BotApiStub, chat_id: int) -> tuple[int, str]:
    """The pay button of the newest confirmation the bot drew in the chat."""
    for message in reversed(api.sent_to(chat_id)):
        for data in message.callback_data:
            if data.startswith(PayCallback.prefix + ":"):
                return message.message_id, data
    raise AssertionError(f"no confirmation to pay in chat {chat_id}")


async def member_flow(
    api: BotApiStub, progress: Progress, user: TgUser, product: int, sent: list[int]
) -> None:
    """A member's burst of commands, then a purchase step by step, as a person taps."""
    for text in BURST:
        sent.append(api.inject_message(user, text)["update_id"])
    await progress.handled(sent[-1])
    anchor = api.sent_to(user.id)[-1].message_id
    for data in (
        ProductCallback(product=product).pack(),
        QuantityCallback(product=product, quantity=1).pack(),
    ):
        tap = api.inject_callback(user, anchor, data, require_button=False)
        sent.append(tap["update_id"])
        await progress.handled(tap["update_id"])
    message_id, data = pay_button(api, user.id)
    pay = api.inject_callback(user, message_id, data, require_button=False)
    sent.append(pay["update_id"])
    await progress.handled(pay["update_id"])


def redelivered(log: str) -> set[int]:
    """Update ids a worker logged as left unacknowledged by a dead one and handled again."""
    found: set[int] = set()
    for ids in re.findall(r"redelivering update\(s\) ([\d,-]+)", log):
        found.update(int(i) for i in ids.split(","))
    return found


@needs_both
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("adapter", ["aiogram", "ptb"])
async def test_three_workers_one_killed_mid_load_handle_each_update_once_in_order(
    shop: Shop, redis: Redis, tmp_path: Path, adapter: str
) -> None:
    catalog = await seed(shop, CHATS, CHATS)
    async with shop.db.transaction() as session:
        await session.execute(update(Member).values(locale="en"))
    chat_ids = range(FIRST_MEMBER, FIRST_MEMBER + CHATS)
    members = dict(
        await _all(
            shop, select(Member.telegram_id, Member.id).where(Member.telegram_id.in_(chat_ids))
        )
    )
    async with BotApiStub() as api:
        cluster = Cluster.configured(
            tmp_path,
            database_url=str(shop.settings.database_url),
            redis_url=REDIS_URL,
            api=api,
            extra={"CODE_ENCRYPTION_KEYS": TEST_KEY, "BOT_FRAMEWORK": adapter},
        )
        try:
            cluster.start_ingress()
            for index in range(WORKERS):
                cluster.start_worker(f"worker{index}")
            await wait_until_ready(cluster, api, redis, WORKERS)
            users = [api.user(telegram_id, language_code="en") for telegram_id in chat_ids]
            progress = Progress(shop)
            poller = asyncio.create_task(progress.poll())
            sent: dict[int, list[int]] = {u.id: [] for u in users}
            flows = [
                asyncio.create_task(
                    member_flow(
                        api, progress, u, catalog.buyable[i % len(catalog.buyable)], sent[u.id]
                    )
                )
                for i, u in enumerate(users)
            ]
            total = CHATS * (len(BURST) + 3)
            # Mid-load: a third of the updates handled, every chat with more to come.
            while len(progress.done) < total // 3:
                await progress.changed.wait()
            streams = UpdateStreams(redis, int(cluster.env["UPDATE_PARTITIONS"]))
            leases = [streams.lease(p) for p in range(streams.partitions)]
            dead = f":{cluster.processes['worker0'].pid}:".encode()
            assert any(dead in holder for holder in await redis.mget(leases) if holder)
            cluster.kill("worker0")
            await asyncio.gather(*flows)
            # Its partitions were taken over: every one held, none by the dead worker.
            holders = await redis.mget(leases)
            assert all(holder and dead not in holder for holder in holders), holders
            poller.cancel()
        finally:
            await cluster.stop()
        logs = {name: cluster.log(name) for name in cluster.processes}

        # Exactly once: every update claimed once (the key is unique), none lost.
        everything = sorted(i for ids in sent.values() for i in ids)
        assert len(everything) == total
        claimed = sorted(await _all(shop, select(ProcessedUpdate.update_id)))
        assert claimed == everything
        again = set().union(*(redelivered(logs[n]) for n in logs if n != "worker0"))
        assert again <= set(everything)
        checkins = await _all(
            shop, select(CheckIn.member_id, func.count()).group_by(CheckIn.member_id)
        )
        assert sorted(checkins) == sorted((members[u.id], 1) for u in users)
        orders = await _all(shop, select(Order.member_id, func.count()).group_by(Order.member_id))
        assert sorted(orders) == sorted((members[u.id], 1) for u in users)
        sold = await _all(shop, select(Code.order_id).where(Code.order_id.is_not(None)))
        assert len(sold) == len(set(sold)) == CHATS
        # The ledger sums to every balance: checked by the `db` fixture after the test.

        # In order: each chat's answers to its burst came in the order it was sent. An
        # answer can be missing or doubled only for an update the dead worker had taken.
        for user in users:
            # As first sent: the purchase later edits the last of them into its screens.
            texts = [(m.versions or [m.message])[0].get("text", "") for m in api.sent_to(user.id)]
            kept = [
                marker
                for marker, update_id in zip(MARKERS, sent[user.id], strict=False)
                if update_id not in again
            ]
            assert _chain(texts, kept), f"chat {user.id} answered out of order: {texts}"
        survivors = [n for n in logs if n not in ("worker0", "ingress")]
        for name in survivors:
            assert "Traceback" not in logs[name], logs[name]


def _first(texts: list[str], marker: str, *, after: int) -> int | None:
    for index in range(after + 1, len(texts)):
        if marker in texts[index]:
            return index
    return None


def _chain(texts: list[str], markers: list[str]) -> bool:
    """The markers appear in `texts` one after another, in this order."""
    at = -1
    for marker in markers:
        found = _first(texts, marker, after=at)
        if found is None:
            return False
        at = found
    return True


async def _all(shop: Shop, statement: Any) -> list[Any]:
    async with shop.db.read() as session:
        result = await session.execute(statement)
        rows = result.all()
    return [row[0] if len(row) == 1 else tuple(row) for row in rows]

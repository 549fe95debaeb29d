"""What an update costs the database, counted, and that a redelivery has no second effect.

A known member's update reads once before its handler (member, state and whether its
id was seen, one statement) and writes at most once besides the handler's own work;
the counts stay the same however many members, updates or states there are. The same
update fed twice (one after the other, at once, in one worker or two) has one effect,
on a SQLite file, on PostgreSQL and with Redis.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import func, select, text

import core.db
from bot.conversation import Context, Incoming
from bot.framework import UPDATE_SOURCE, Registry, Runtime
from bot.handlers import ALL_CONVERSATIONS
from bot.handlers.browse import ShopCallback
from bot.handlers.start import MenuCallback
from bot.state import ChatStore, DbChatStore, RedisChatStore
from core.chat_state import ChatStates
from core.models import CheckIn, Member
from core.shop import Shop
from core.uow import Database
from tests.sql_counter import SqlCount, counting_sql
from tests.test_bot_framework import RecordingTransport

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MEMBER = 880_001


@pytest.fixture(params=["db", "redis"])
async def store_kind(request: pytest.FixtureRequest) -> AsyncIterator[Redis | None]:
    """None: state and claims in the database; else the Redis client that keeps them."""
    if request.param == "db":
        yield None
        return
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except RedisConnectionError:
        await client.aclose()
        pytest.skip("no Redis at " + REDIS_URL)
    yield client
    await client.aclose()


def _store(shop: Shop, redis: Redis | None, namespace: str) -> ChatStore:
    records = ChatStates(shop.db, shop.clock, UPDATE_SOURCE)
    if redis is None:
        return DbChatStore(records)
    return RedisChatStore(records, redis, UPDATE_SOURCE, namespace=namespace)


class CountedRuntime(Runtime):
    """A runtime that notes the SQL count when each handler starts and ends."""

    marks: list[SqlCount]
    count: Callable[[], SqlCount]

    async def run(self, ctx: Context, work: Callable[[], Awaitable[object]]) -> None:
        async def counted() -> None:
            self.marks.append(self.count())
            await work()
            self.marks.append(self.count())

        await super().run(ctx, counted)


def _workers(shop: Shop, redis: Redis | None, n: int = 1) -> list[Runtime]:
    """`n` runtimes over one shop and one store namespace: workers of one bot."""
    namespace = f"test-{secrets.token_hex(4)}"
    return [
        Runtime(shop, Registry(ALL_CONVERSATIONS), _store(shop, redis, namespace)) for _ in range(n)
    ]


def _command(name: str, update_id: int, user_id: int = MEMBER) -> Incoming:
    return Incoming(
        kind="command",
        user_id=user_id,
        chat_id=user_id,
        text=f"/{name}",
        command=name,
        update_id=update_id,
        language_code="en",
        full_name="Counted Member",
    )


def _tap(data: str, update_id: int, user_id: int = MEMBER) -> Incoming:
    return Incoming(
        kind="callback",
        user_id=user_id,
        chat_id=user_id,
        callback_id=f"q{update_id}",
        callback_data=data,
        callback_message_id=1,
        update_id=update_id,
        language_code="en",
        full_name="Counted Member",
    )


def _known_member_updates(first_id: int) -> list[Incoming]:
    return [
        _command("start", first_id),
        _tap(MenuCallback(item="home").pack(), first_id + 1),
        _tap(MenuCallback(item="shop").pack(), first_id + 2),
        _tap(ShopCallback().pack(), first_id + 3),
    ]


async def _cost(
    shop: Shop, runtime: CountedRuntime, incoming: Incoming
) -> tuple[SqlCount, SqlCount, SqlCount]:
    """(before the handler, the handler's own, after it) for one update."""
    with counting_sql() as counter:
        runtime.marks, runtime.count = [], counter.now
        await runtime.handle(incoming, RecordingTransport())
        end = counter.now()
    started, finished = runtime.marks
    return started, finished - started, end - finished


async def test_a_known_members_update_reads_once_and_writes_at_most_once(
    shop: Shop, store_kind: Redis | None
) -> None:
    namespace = f"test-{secrets.token_hex(4)}"
    runtime = CountedRuntime(shop, Registry(ALL_CONVERSATIONS), _store(shop, store_kind, namespace))

    # A new member: the read, then the registration, which records the update with it.
    before, _, after = await _cost(shop, runtime, _command("start", 1))
    assert before == SqlCount(statements=before.statements, reads=1, writes=1)
    assert after.writes == 0

    # A warm process: the catalog's copy in memory is loaded by the first screen using it.
    for incoming in _known_member_updates(first_id=500):
        await runtime.handle(incoming, RecordingTransport())
    costs = []
    for incoming in _known_member_updates(first_id=10):
        before, own, after = await _cost(shop, runtime, incoming)
        assert before == SqlCount(statements=1, reads=1, writes=0), incoming
        assert own.writes == 0, incoming  # nothing here writes: all of it is the runtime's
        # The database store records the update (one write); Redis claimed it on arrival.
        assert after == SqlCount(
            statements=int(store_kind is None), reads=0, writes=int(store_kind is None)
        ), incoming
        costs.append((before, own, after))

    # The counts do not grow: with many more members, states and handled updates.
    for n in range(40):
        await runtime.handle(
            _command("start", 1000 + n, user_id=MEMBER + 1 + n), RecordingTransport()
        )
        await runtime.handle(
            _command("ticket", 2000 + n, user_id=MEMBER + 1 + n), RecordingTransport()
        )
    again = [
        await _cost(shop, runtime, incoming) for incoming in _known_member_updates(first_id=3000)
    ]
    assert again == costs


async def test_a_changed_name_and_state_are_written_in_the_one_write(
    shop: Shop, store_kind: Redis | None
) -> None:
    namespace = f"test-{secrets.token_hex(4)}"
    runtime = CountedRuntime(shop, Registry(ALL_CONVERSATIONS), _store(shop, store_kind, namespace))
    await runtime.handle(_command("start", 1), RecordingTransport())

    renamed = Incoming(
        kind="command",
        user_id=MEMBER,
        chat_id=MEMBER,
        text="/ticket",
        command="ticket",
        update_id=2,
        language_code="en",
        full_name="Renamed Member",
        username="renamed",
    )
    before, own, after = await _cost(shop, runtime, renamed)
    assert (before.reads, before.writes, own.writes) == (1, 0, 0)
    assert after.writes == 1  # the name (and, in the database store, claim and state)
    member = await shop.members.by_telegram(MEMBER)
    assert member is not None
    assert (member.display_name, member.username) == ("Renamed Member", "renamed")


# --- redelivery ---------------------------------------------------------------------------


async def _checkins(shop: Shop) -> int:
    async with shop.db.read() as session:
        member_id = await session.scalar(select(Member.id).where(Member.telegram_id == MEMBER))
        count = await session.scalar(
            select(func.count()).select_from(CheckIn).where(CheckIn.member_id == member_id)
        )
        return int(count or 0)


async def test_the_same_update_twice_in_one_worker_has_one_effect(
    shop: Shop, store_kind: Redis | None
) -> None:
    [runtime] = _workers(shop, store_kind)
    await runtime.handle(_command("start", 1), RecordingTransport())

    transport = RecordingTransport()
    await asyncio.gather(*(runtime.handle(_command("checkin", 2), transport) for _ in range(3)))
    await runtime.handle(_command("checkin", 2), transport)
    assert len(transport.sent) == 1
    assert "Checked in" in transport.sent[0][1]
    assert await _checkins(shop) == 1


async def test_the_same_update_in_two_workers_has_one_effect(
    shop: Shop, store_kind: Redis | None
) -> None:
    """Two workers of one bot, each with its own memory: the claim decides."""
    first, second = _workers(shop, store_kind, 2)
    await first.handle(_command("start", 1), RecordingTransport())

    # One after the other: the second worker reads the first one's claim.
    transport = RecordingTransport()
    await first.handle(_command("start", 2), transport)
    await second.handle(_command("start", 2), transport)
    assert len(transport.sent) == 1

    # At the same time: the check-in's claim rides in its transaction, so only one stands.
    transport = RecordingTransport()
    await asyncio.gather(
        first.handle(_command("checkin", 3), transport),
        second.handle(_command("checkin", 3), transport),
    )
    assert [text for _, text in transport.sent if "Checked in" in text] != []
    assert len(transport.sent) == 1
    assert await _checkins(shop) == 1


async def test_a_new_members_first_update_twice_registers_once(
    shop: Shop, store_kind: Redis | None
) -> None:
    first, second = _workers(shop, store_kind, 2)
    transport = RecordingTransport()
    await asyncio.gather(
        first.handle(_command("start", 1), transport),
        second.handle(_command("start", 1), transport),
    )
    assert len(transport.sent) == 1
    async with shop.db.read() as session:
        members = await session.scalar(
            select(func.count()).select_from(Member).where(Member.telegram_id == MEMBER)
        )
    assert members == 1


async def test_a_dead_idle_postgres_connection_is_replaced_before_use(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled connections are pinged only after sitting idle; a dead one is replaced."""
    if not db.is_postgres:
        pytest.skip("PostgreSQL's pool")
    async with db.read() as session:
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
    other = Database.from_url(db.engine.url.render_as_string(hide_password=False))
    try:
        async with other.transaction() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.dispose()
    monkeypatch.setattr(core.db, "PING_AFTER_IDLE_SECONDS", 0.0)
    async with db.read() as session:
        assert await session.scalar(text("SELECT pg_backend_pid()")) != pid

"""The VIP manager channel: tier gate, assignment, relay both ways routed by stored ids."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.clock import ManualClock
from core.config import DEFAULT_TIERS_FILE
from core.errors import ErrorCode, ShopError
from core.ladder import load_ladder
from core.manager import ManagerRelay, ThreadRef
from core.models import ManagerAssignment, ManagerMessage, Member, Staff
from core.uow import Database
from tests.conftest import START

LADDER = load_ladder(DEFAULT_TIERS_FILE)
ALICE, BOB = 9001, 9002


async def add_member(db: Database, telegram_id: int, tier_key: str) -> int:
    async with db.transaction() as session:
        member = Member(
            telegram_id=telegram_id,
            referral_code=f"R{telegram_id}",
            tier_key=tier_key,
            created_at=START,
        )
        session.add(member)
        await session.flush()
        return member.id


@pytest.fixture
def relay(db: Database, clock: ManualClock) -> ManagerRelay:
    return ManagerRelay(db, LADDER, clock)


async def test_below_diamond_is_refused_with_the_required_tier(
    db: Database, relay: ManagerRelay
) -> None:
    gold = await add_member(db, 1, "gold")
    access = await relay.access(gold)
    assert (access.allowed, access.required_tier, access.manager) == (False, "diamond", None)

    with pytest.raises(ShopError) as err:
        await relay.from_member(gold, "hello manager")
    assert (err.value.code, err.value.params) == (
        ErrorCode.NO_MANAGER_ACCESS,
        {"required": "diamond"},
    )
    with pytest.raises(ShopError) as err:
        await relay.assign(gold, ALICE, display_name="Alice")
    assert (err.value.code, err.value.params) == (
        ErrorCode.NOT_ALLOWED_FOR_TIER,
        {"capability": "manager", "required": "diamond"},
    )
    async with db.read() as session:
        assert await session.scalar(select(func.count(ManagerMessage.id))) == 0
        assert await session.scalar(select(func.count(Staff.id))) == 0
        assert await session.scalar(select(func.count()).select_from(ManagerAssignment)) == 0


async def test_assignment_and_staff_upsert(db: Database, relay: ManagerRelay) -> None:
    vip = await add_member(db, 1, "diamond")
    partner = await add_member(db, 2, "partner")

    with pytest.raises(ShopError) as err:
        await relay.assign(vip, ALICE)
    assert err.value.code == ErrorCode.STAFF_NOT_FOUND

    alice = await relay.assign(vip, ALICE, display_name="Alice")
    bob = await relay.add_staff(BOB, "Bob")
    renamed = await relay.add_staff(BOB, "Bob Wang")
    assert renamed.id == bob.id
    assert renamed.display_name == "Bob Wang"
    assert (await relay.access(vip)).manager == alice

    await relay.assign(vip, BOB)
    await relay.assign(partner, ALICE)
    access = await relay.access(vip)
    assert access.allowed
    assert access.manager == renamed
    async with db.read() as session:
        rows = (
            await session.execute(
                select(ManagerAssignment.member_id, Staff.display_name)
                .join(Staff, Staff.id == ManagerAssignment.staff_id)
                .order_by(ManagerAssignment.member_id)
            )
        ).all()
        assert await session.scalar(select(func.count(Staff.id))) == 2
    assert [tuple(r) for r in rows] == [(vip, "Bob Wang"), (partner, "Alice")]


async def test_relay_in_and_out_routes_by_the_stored_relay_id(
    db: Database, relay: ManagerRelay
) -> None:
    managed = await add_member(db, 111, "diamond")
    unmanaged = await add_member(db, 222, "black_diamond")
    await relay.assign(managed, ALICE, display_name="Alice")

    to_staff = await relay.from_member(unmanaged, "who is my manager?")
    assert (to_staff.staff_telegram_id, to_staff.manager_name) == (None, None)
    to_alice = await relay.from_member(managed, "need 500 cards tonight")
    assert (to_alice.staff_telegram_id, to_alice.manager_name) == (ALICE, "Alice")

    # The same message id in two chats: each reply finds its own member.
    await relay.attach_relay(to_alice.message_id, 42)
    await relay.attach_relay(to_staff.message_id, 42)
    assert await relay.by_relay_message(42, chat_id=ALICE) == ThreadRef(managed, 111)
    assert await relay.by_relay_message(42) == ThreadRef(unmanaged, 222)
    assert await relay.by_relay_message(43, chat_id=ALICE) is None
    assert await relay.by_relay_message(42, chat_id=BOB) is None

    await relay.add_staff(ALICE, "Alice Li")  # the signature comes from the database
    reply = await relay.from_manager(managed, ALICE, "ready at 8pm")
    assert (reply.direction, reply.manager_name, reply.staff_telegram_id) == (
        "out",
        "Alice Li",
        ALICE,
    )
    await relay.mark_delivered(to_alice.message_id, True)
    await relay.mark_delivered(reply.id, False)
    with pytest.raises(ShopError) as err:
        await relay.from_manager(managed, BOB, "not staff")
    assert err.value.code == ErrorCode.STAFF_NOT_FOUND

    async with db.read() as session:
        rows = (
            await session.execute(
                select(
                    ManagerMessage.member_id,
                    ManagerMessage.direction,
                    ManagerMessage.relay_message_id,
                    ManagerMessage.delivered,
                ).order_by(ManagerMessage.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (unmanaged, "in", 42, None),
        (managed, "in", 42, True),
        (managed, "out", None, False),
    ]


async def test_thread_is_the_latest_messages_oldest_first(
    db: Database, clock: ManualClock, relay: ManagerRelay
) -> None:
    vip = await add_member(db, 1, "diamond")
    other = await add_member(db, 2, "diamond")
    await relay.assign(vip, ALICE, display_name="Alice")
    for number in range(3):
        await relay.from_member(vip, f"q{number}")
        clock.advance(timedelta(minutes=1))
        await relay.from_manager(vip, ALICE, f"a{number}")
        clock.advance(timedelta(minutes=1))
    await relay.from_member(other, "someone else")

    thread = await relay.thread(vip, limit=3)
    assert [(m.direction, m.text) for m in thread] == [("out", "a1"), ("in", "q2"), ("out", "a2")]
    assert [m.created_at for m in thread] == sorted(m.created_at for m in thread)
    assert {m.manager_name for m in thread} == {"Alice"}
    assert len(await relay.thread(vip)) == 6
    assert [m.text for m in await relay.thread(other)] == ["someone else"]

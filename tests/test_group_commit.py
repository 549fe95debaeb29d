"""`Database.run` under a crowd: on SQLite the writer commits queued work together
(`core.uow._GroupCommit`), each piece in a savepoint; a piece that fails must undo only
itself and reach only its own caller, exactly as one transaction per piece would.

The writer is held busy by a first piece of work until the crowd has queued behind it,
so on SQLite the crowd is one group for certain (no timing involved). On PostgreSQL,
where every `run` is its own transaction, the same outcomes must hold.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from core.clock import ManualClock
from core.config import Settings
from core.errors import ErrorCode, ShopError
from core.models import Code, Member, Order, WalletEntry
from core.orders import Purchase
from core.shop import Shop
from core.uow import Database
from tests.factories import make_member, make_product, tiers_file_with


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """Risk control's limits out of the way: these tests are about the commit."""
    roomy = tiers_file_with(tmp_path, max_orders=1000, max_failures=1000)
    return settings.model_copy(update={"tiers_file": roomy})


async def _behind_a_busy_writer(
    db: Database, crowd: list[Callable[[], Awaitable[Any]]]
) -> list[Any]:
    """Start `crowd` while the writer is held, release it once all of it has queued;
    every outcome (result or exception), in the crowd's order. PostgreSQL has no writer
    to hold (its work runs on the event loop's thread): the crowd simply runs at once."""
    if db.is_postgres:
        return await asyncio.gather(*(call() for call in crowd), return_exceptions=True)
    started, release = threading.Event(), threading.Event()

    def hold(_conn: Connection) -> None:
        started.set()
        release.wait()

    holder = asyncio.create_task(db.run(hold))
    await asyncio.to_thread(started.wait)
    tasks = [asyncio.create_task(call()) for call in crowd]
    # White box: the writer's queue is a plain list, so poll it until the crowd is in.
    writer = db._sqlite_writer
    while writer is not None and len(writer._queue) < len(crowd):  # noqa: ASYNC110
        await asyncio.sleep(0)
    release.set()
    await holder
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_failing_piece_takes_none_of_its_group_with_it(
    db: Database, clock: ManualClock
) -> None:
    member = await make_member(db, clock, balance=0)
    transactions: list[Any] = []

    def credit(amount: int, fail: bool) -> Callable[[Connection], int]:
        def work(conn: Connection) -> int:
            transactions.append(conn.get_transaction())
            conn.execute(
                update(Member).where(Member.id == member).values(balance=Member.balance + amount)
            )
            if fail:
                raise ShopError(ErrorCode.INVALID_INPUT, amount=amount)
            return amount

        return work

    # Distinct powers of two: the balance tells exactly which credits were kept.
    amounts = [1 << i for i in range(20)]
    failing = set(amounts[::3])
    outcomes = await _behind_a_busy_writer(
        db, [lambda a=a: db.run(credit(a, fail=a in failing)) for a in amounts]
    )

    for amount, outcome in zip(amounts, outcomes, strict=True):
        if amount in failing:
            assert isinstance(outcome, ShopError)
            assert outcome.params == {"amount": amount}
        else:
            assert outcome == amount
    async with db.read() as session:
        balance = await session.scalar(select(Member.balance).where(Member.id == member))
    assert balance == sum(a for a in amounts if a not in failing)
    if not db.is_postgres:
        # One group: every piece ran in the same transaction (each in a savepoint).
        assert len({id(transaction) for transaction in transactions}) == 1
    # The test wrote balances without ledger rows; square the ledger for the db fixture.
    async with db.transaction() as session:
        await session.execute(update(Member).where(Member.id == member).values(balance=0))


async def test_sold_out_purchases_in_a_group_leave_the_others_paid(shop: Shop) -> None:
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=5)
    buyers = [
        await make_member(shop.db, shop.clock, balance=5000, tier="silver") for _ in range(12)
    ]
    # The first wants 3, the second 3 (only 2 left: refused after its writes), the rest 1.
    wanted = [3, 3] + [1] * 10

    outcomes = await _behind_a_busy_writer(
        shop.db,
        [
            lambda b=b, q=q: shop.orders.place(b, product, q, idempotency_key=f"g-{b}")
            for b, q in zip(buyers, wanted, strict=True)
        ],
    )

    paid = [o for o in outcomes if isinstance(o, Purchase)]
    refused = [o for o in outcomes if isinstance(o, ShopError)]
    assert len(paid) + len(refused) == len(buyers)
    assert {e.code for e in refused} == {ErrorCode.OUT_OF_STOCK}
    assert [p.order.quantity for p in paid] == [3, 1, 1]
    assert sorted(c for p in paid for c in p.codes) == sorted(codes)
    winners = {p.order.member_id: p.order.total for p in paid}
    for buyer in buyers:
        assert await shop.wallet.balance(buyer) == 5000 - winners.get(buyer, 0)
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 3
        assert (
            await session.scalar(
                select(func.count()).select_from(Code).where(Code.order_id.is_not(None))
            )
            == 5
        )
        assert (
            await session.scalar(
                select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "purchase")
            )
            == 3
        )


async def test_one_key_twice_in_one_group_pays_once(shop: Shop) -> None:
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=5)
    member = await make_member(shop.db, shop.clock, balance=5000)

    outcomes = await _behind_a_busy_writer(
        shop.db,
        [lambda: shop.orders.place(member, product, 1, idempotency_key="tap") for _ in range(5)],
    )

    assert all(isinstance(o, Purchase) for o in outcomes)
    assert sum(o.created for o in outcomes) == 1
    assert {o.order.id for o in outcomes} == {outcomes[0].order.id}
    assert all(o.codes == codes[:1] for o in outcomes)
    assert await shop.wallet.balance(member) == 5000 - 950

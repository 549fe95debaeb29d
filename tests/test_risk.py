"""Risk control: per-member limits on orders and refused purchases, on both databases.

The module's shop allows 3 orders and 2 refused purchases per member in 60 seconds.
Races launch real concurrent tasks on a SQLite file and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.errors import render_error
from bot.i18n import Translator
from core.clock import ManualClock
from core.config import DEFAULT_TIERS_FILE, Settings
from core.errors import ErrorCode, ShopError
from core.ladder import load_ladder
from core.models import Order, RiskEvent, WalletEntry
from core.risk import FAILURES, ORDERS, RiskControl
from core.shop import Shop
from tests.factories import make_member, make_product, tiers_file_with

MAX_ORDERS, MAX_FAILURES, WINDOW = 3, 2, 60


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    limits = tiers_file_with(
        tmp_path, max_orders=MAX_ORDERS, max_failures=MAX_FAILURES, window_seconds=WINDOW
    )
    return settings.model_copy(update={"tiers_file": limits})


def risk(shop: Shop) -> RiskControl:
    return RiskControl(shop.db, shop.ladder.risk, shop.clock)


async def count(shop: Shop, model: type, *where: object) -> int:
    async with shop.db.read() as session:
        found = await session.scalar(select(func.count()).select_from(model).where(*where))
        return int(found or 0)


async def refusal(shop: Shop, member: int, product: int, key: str) -> ShopError:
    with pytest.raises(ShopError) as refused:
        await shop.orders.place(member, product, 1, idempotency_key=key)
    return refused.value


async def test_orders_past_the_limit_wait_until_the_oldest_leaves_the_window(
    shop: Shop, clock: ManualClock
) -> None:
    product, _ = await make_product(shop.db, shop.vault, clock, price=1000, codes=10)
    member = await make_member(shop.db, clock, balance=100_000)
    for n in range(MAX_ORDERS):
        await shop.orders.place(member, product, 1, idempotency_key=f"k{n}")
        clock.advance(timedelta(seconds=10))
    balance = await shop.wallet.balance(member)

    refused = await refusal(shop, member, product, "k-over")
    # The first order was 30 s ago: it leaves the 60 s window in 30 s.
    assert refused.code == ErrorCode.RATE_LIMITED
    assert refused.params == {"retry_after": 30, "limit": ORDERS}
    assert await shop.wallet.balance(member) == balance
    assert await count(shop, Order) == MAX_ORDERS
    # A rate-limited attempt is not a failed purchase: it does not dig the member deeper.
    assert await count(shop, RiskEvent, RiskEvent.kind == "failure") == 0

    clock.advance(timedelta(seconds=29))
    assert (await refusal(shop, member, product, "k-over")).params["retry_after"] == 1
    clock.advance(timedelta(seconds=1))
    bought = await shop.orders.place(member, product, 1, idempotency_key="k-over")
    assert bought.created
    # Paid orders are never refused on a replay, even at the limit.
    again = await shop.orders.place(member, product, 1, idempotency_key="k-over")
    assert again.order.id == bought.order.id
    assert not again.created


async def test_refused_purchases_count_once_per_key_and_then_pause_buying(
    shop: Shop, clock: ManualClock
) -> None:
    product, _ = await make_product(shop.db, shop.vault, clock, price=1000, codes=10)
    member = await make_member(shop.db, clock, balance=500)
    for _ in range(3):  # a triple tap on one confirmation is one failed attempt
        assert (await refusal(shop, member, product, "a")).code == ErrorCode.INSUFFICIENT_BALANCE
    assert await count(shop, RiskEvent, RiskEvent.kind == "failure") == 1
    clock.advance(timedelta(seconds=5))
    assert (await refusal(shop, member, product, "b")).code == ErrorCode.INSUFFICIENT_BALANCE

    await shop.operations.admin.top_up("test", member, 10_000, reason="paid in")
    refused = await refusal(shop, member, product, "c")
    assert refused.code == ErrorCode.RATE_LIMITED
    assert refused.params == {"retry_after": 55, "limit": FAILURES}
    # Nothing of the refused attempts was left behind.
    assert await count(shop, Order) == 0
    assert await count(shop, WalletEntry, WalletEntry.kind == "purchase") == 0
    assert await shop.stock.available(product) == 10

    clock.advance(timedelta(seconds=55))
    assert (await shop.orders.place(member, product, 1, idempotency_key="c")).created


async def test_many_attempts_at_once_let_at_most_the_order_limit_through(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=40)
    member = await make_member(shop.db, shop.clock, balance=100_000)

    results = await asyncio.gather(
        *(shop.orders.place(member, product, 1, idempotency_key=f"r{n}") for n in range(30)),
        return_exceptions=True,
    )

    refused = [r for r in results if isinstance(r, ShopError)]
    assert len(refused) == 30 - MAX_ORDERS
    assert {r.code for r in refused} == {ErrorCode.RATE_LIMITED}
    assert await count(shop, Order) == MAX_ORDERS
    assert await count(shop, WalletEntry, WalletEntry.kind == "purchase") == MAX_ORDERS
    assert await shop.stock.available(product) == 40 - MAX_ORDERS
    # One stretch of refusals is one trip: staff hear about it once.
    assert await count(shop, RiskEvent, RiskEvent.kind == "trip") == 1


async def test_many_refused_attempts_at_once_count_at_most_the_failure_limit(
    shop: Shop,
) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=40)
    member = await make_member(shop.db, shop.clock, balance=0)

    results = await asyncio.gather(
        *(shop.orders.place(member, product, 1, idempotency_key=f"f{n}") for n in range(30)),
        return_exceptions=True,
    )

    codes = [r.code for r in results if isinstance(r, ShopError)]
    assert len(codes) == 30
    assert codes.count(ErrorCode.INSUFFICIENT_BALANCE) == MAX_FAILURES
    assert codes.count(ErrorCode.RATE_LIMITED) == 30 - MAX_FAILURES
    assert await count(shop, RiskEvent, RiskEvent.kind == "failure") == MAX_FAILURES
    assert await count(shop, RiskEvent, RiskEvent.kind == "trip") == 1


async def test_a_double_tap_at_once_counts_one_order(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=10)
    member = await make_member(shop.db, shop.clock, balance=100_000)

    same = await asyncio.gather(
        *(shop.orders.place(member, product, 1, idempotency_key="tap") for _ in range(20))
    )

    assert len({p.order.id for p in same}) == 1
    for n in range(MAX_ORDERS - 1):  # the double tap used one order of the limit
        await shop.orders.place(member, product, 1, idempotency_key=f"more{n}")
    assert (await refusal(shop, member, product, "over")).code == ErrorCode.RATE_LIMITED


async def test_staff_are_told_once_per_trip(shop: Shop, clock: ManualClock) -> None:
    product, _ = await make_product(shop.db, shop.vault, clock, price=1000, codes=10)
    member = await make_member(shop.db, clock, balance=100_000, telegram_id=4242)
    for n in range(MAX_ORDERS):
        await shop.orders.place(member, product, 1, idempotency_key=f"k{n}")
    assert await risk(shop).claim_trips() == []

    for n in range(3):  # three refusals in one stretch
        await refusal(shop, member, product, f"over{n}")
        clock.advance(timedelta(seconds=1))
    [trip] = await risk(shop).claim_trips()
    assert (trip.member_id, trip.telegram_id, trip.limit) == (member, 4242, ORDERS)
    assert (trip.allowed, trip.window_seconds) == (MAX_ORDERS, WINDOW)
    assert trip.retry_at == trip.created_at + timedelta(seconds=WINDOW)
    assert await risk(shop).claim_trips() == []

    clock.advance(timedelta(seconds=WINDOW))  # the window empties; a new burst is a new trip
    for n in range(MAX_ORDERS):
        await shop.orders.place(member, product, 1, idempotency_key=f"later{n}")
    await refusal(shop, member, product, "later-over")
    assert [t.limit for t in await risk(shop).claim_trips()] == [ORDERS]


async def test_two_workers_claim_a_trip_once(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=10)
    member = await make_member(shop.db, shop.clock, balance=0)
    for n in range(MAX_FAILURES + 1):
        await refusal(shop, member, product, f"k{n}")

    claims = await asyncio.gather(*(risk(shop).claim_trips() for _ in range(10)))

    assert sorted(len(claimed) for claimed in claims) == [0] * 9 + [1]


async def test_a_double_tap_on_the_last_order_the_limit_allows_is_not_refused(
    shop: Shop,
) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=10)
    member = await make_member(shop.db, shop.clock, balance=100_000)
    for n in range(MAX_ORDERS - 1):
        await shop.orders.place(member, product, 1, idempotency_key=f"k{n}")

    # Every tap after the first finds the member at the limit, but with its own order.
    taps = await asyncio.gather(
        *(shop.orders.place(member, product, 1, idempotency_key="last") for _ in range(10))
    )

    assert len({p.order.id for p in taps}) == 1
    assert sum(p.created for p in taps) == 1
    assert await count(shop, Order) == MAX_ORDERS
    assert await count(shop, RiskEvent) == 0


async def test_sold_out_while_paying_counts_once_and_leaves_nothing(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=0)
    member = await make_member(shop.db, shop.clock, balance=100_000)

    for _ in range(3):  # the claim comes up short after the order row was written
        assert (await refusal(shop, member, product, "gone")).code == ErrorCode.OUT_OF_STOCK

    async with shop.db.read() as session:
        reasons = list(await session.scalars(select(RiskEvent.reason)))
    assert reasons == [ErrorCode.OUT_OF_STOCK.value]
    assert await count(shop, Order) == 0
    assert await shop.wallet.balance(member) == 100_000


@pytest.mark.parametrize(
    ("locale", "wait", "said"),
    [
        ("en", 1, "Too many purchases in a short time. Please try again in 1 second."),
        ("en", 42, "Too many purchases in a short time. Please try again in 42 seconds."),
        ("zh_CN", 42, "下单过于频繁，为保障您的账户安全，请 42 秒后再试。"),
    ],
)
def test_the_refusal_says_when_to_try_again(locale: str, wait: int, said: str) -> None:
    t = Translator(locale, currency="CNY", zone=UTC)
    refusal = ShopError(ErrorCode.RATE_LIMITED, retry_after=wait, limit=ORDERS)
    assert render_error(refusal, t, load_ladder(DEFAULT_TIERS_FILE)) == said

"""Stock reservation (库存预留): holds are nobody else's stock, spent first by their holder,
released by the job at their end or early, cancelled by an admin; races never oversell."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot import cli
from bot.app import build_runtime
from core.demo import seed_demo
from core.errors import ErrorCode, ShopError
from core.jobs import Event, ReservationExpired, ReservationExpiring
from core.models import AuditEntry, Code, Order
from core.shop import Shop, build_jobs
from tests.conftest import TEST_KEY
from tests.factories import make_member, make_product
from tests.test_terminal import GOLD, Screen

RICH = 10_000_000


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def notify(self, event: Event) -> None:
        self.events.append(event)


async def test_members_racing_for_the_last_codes_reserve_at_most_what_there_is(
    shop: Shop,
) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=10)
    racers = [await make_member(shop.db, shop.clock, tier="platinum") for _ in range(2)]

    async def reserve(member: int) -> int | ErrorCode:
        try:
            return (await shop.reservations.reserve(member, product, 10)).remaining
        except ShopError as refusal:
            return refusal.code

    got = await asyncio.gather(*(reserve(m) for m in racers))
    assert sorted(got, key=str) == [10, ErrorCode.OUT_OF_STOCK]
    async with shop.db.read() as session:
        held = await session.scalar(select(func.count(Code.id)).where(Code.reserved_by.isnot(None)))
    assert held == 10


async def test_many_small_reservations_racing_never_hold_a_code_twice(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=10)
    racers = [await make_member(shop.db, shop.clock, tier="diamond") for _ in range(8)]

    async def reserve(member: int) -> int | ErrorCode:
        try:
            return (await shop.reservations.reserve(member, product, 3)).remaining
        except ShopError as refusal:
            return refusal.code

    got = await asyncio.gather(*(reserve(m) for m in racers))
    assert sorted(got, key=str) == [3, 3, 3] + [ErrorCode.OUT_OF_STOCK] * 5
    assert await shop.catalog.stock_counts([product]) == {product: 1}


async def test_a_tier_without_reservation_is_refused(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=5)
    gold = await make_member(shop.db, shop.clock, tier="gold")
    with pytest.raises(ShopError) as refused:
        await shop.reservations.reserve(gold, product, 1)
    assert refused.value.code is ErrorCode.NOT_ALLOWED_FOR_TIER
    assert refused.value.params["required"] == "platinum"


async def test_the_tier_cap_bounds_what_one_member_holds(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=150)
    member = await make_member(shop.db, shop.clock, tier="platinum")
    await shop.reservations.reserve(member, product, 60)
    with pytest.raises(ShopError) as refused:
        await shop.reservations.reserve(member, product, 41)
    assert refused.value.code is ErrorCode.QUANTITY_OUT_OF_RANGE
    assert refused.value.params["max"] == 40
    hold = await shop.reservations.reserve(member, product, 40)
    assert (hold.quantity, hold.remaining) == (100, 100)
    assert len(await shop.reservations.mine(member)) == 1


async def test_others_see_and_buy_only_the_unreserved_stock(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=10)
    holder = await make_member(shop.db, shop.clock, tier="platinum")
    other = await make_member(shop.db, shop.clock, tier="gold", balance=RICH)
    await shop.reservations.reserve(holder, product, 8)

    assert await shop.catalog.stock_counts([product]) == {product: 2}
    assert (await shop.catalog.product(product)).stock == 2
    assert await shop.stock.available(product) == 2
    with pytest.raises(ShopError) as refused:
        await shop.orders.place(other, product, 3, idempotency_key="k-3")
    assert refused.value.code is ErrorCode.OUT_OF_STOCK
    bought = await shop.orders.place(other, product, 2, idempotency_key="k-2")
    assert len(bought.codes) == 2
    with pytest.raises(ShopError) as sold_out:
        await shop.orders.place(other, product, 1, idempotency_key="k-1")
    assert sold_out.value.code is ErrorCode.OUT_OF_STOCK
    assert (await shop.reservations.mine(holder))[0].remaining == 8


async def test_the_holder_buys_their_reserved_codes_first_at_todays_price(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=10, price=1000)
    holder = await make_member(shop.db, shop.clock, tier="platinum", balance=RICH)
    await shop.reservations.reserve(holder, product, 4)
    async with shop.db.read() as session:
        held = set(await session.scalars(select(Code.id).where(Code.reserved_by == holder)))
    await shop.catalog.update_product((await shop.catalog.product(product)).sku, base_price=2000)

    bought = await shop.orders.place(holder, product, 3, idempotency_key="h-3")
    assert bought.order.unit_base_price == 2000
    async with shop.db.read() as session:
        taken = set(await session.scalars(select(Code.id).where(Code.order_id == bought.order.id)))
    assert taken <= held
    assert (await shop.reservations.mine(holder))[0].remaining == 1
    # More than the hold: the rest of the hold, then the open shelf (6 left there).
    more = await shop.orders.place(holder, product, 4, idempotency_key="h-4")
    assert len(more.codes) == 4
    assert await shop.catalog.stock_counts([product]) == {product: 3}


async def test_concurrent_buyers_never_take_anothers_hold_nor_a_code_twice(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=12)
    first = await make_member(shop.db, shop.clock, tier="platinum", balance=RICH)
    second = await make_member(shop.db, shop.clock, tier="platinum", balance=RICH)
    await shop.reservations.reserve(first, product, 5)
    await shop.reservations.reserve(second, product, 5)
    strangers = [await make_member(shop.db, shop.clock, balance=RICH) for _ in range(6)]

    async def buy(member: int, quantity: int, key: str) -> int | ErrorCode:
        try:
            purchase = await shop.orders.place(member, product, quantity, idempotency_key=key)
        except ShopError as refusal:
            return refusal.code
        return len(purchase.codes)

    got = await asyncio.gather(
        buy(first, 5, "f"),
        buy(second, 5, "s"),
        *(buy(m, 1, f"x{n}") for n, m in enumerate(strangers)),
    )
    assert got[:2] == [5, 5]
    assert sorted(got[2:], key=str) == [1, 1] + [ErrorCode.OUT_OF_STOCK] * 4
    async with shop.db.read() as session:
        rows = (
            await session.execute(
                select(Code.reserved_by, Order.member_id).join(Order, Order.id == Code.order_id)
            )
        ).all()
    assert len(rows) == 12  # every code sold, each to one order (one order_id per code)
    for held_by, buyer in rows:
        assert held_by in (None, buyer)  # a held code went to its holder only


async def test_expiry_warns_then_releases_what_is_left(shop: Shop) -> None:
    clock = shop.clock
    product, _ = await make_product(shop.db, shop.vault, clock, codes=10)
    holder = await make_member(shop.db, clock, tier="platinum", balance=RICH)
    other = await make_member(shop.db, clock, tier="gold", balance=RICH)
    await shop.reservations.reserve(holder, product, 6)
    await shop.orders.place(holder, product, 2, idempotency_key="h")
    recorder = Recorder()

    clock.advance(timedelta(hours=22))
    await build_jobs(shop, recorder).run_due()
    assert not [e for e in recorder.events if isinstance(e, ReservationExpiring)]

    clock.advance(timedelta(hours=1, minutes=30))
    await build_jobs(shop, recorder).run_due()
    warnings = [e for e in recorder.events if isinstance(e, ReservationExpiring)]
    assert [w.reservation.remaining for w in warnings] == [4]
    clock.advance(timedelta(minutes=5))
    await build_jobs(shop, recorder).run_due()
    assert len([e for e in recorder.events if isinstance(e, ReservationExpiring)]) == 1
    assert await shop.catalog.stock_counts([product]) == {product: 4}

    clock.advance(timedelta(minutes=30))
    await build_jobs(shop, recorder).run_due()
    ended = [e for e in recorder.events if isinstance(e, ReservationExpired)]
    assert [e.released for e in ended] == [4]
    assert await shop.reservations.mine(holder) == []
    assert await shop.catalog.stock_counts([product]) == {product: 8}
    assert len((await shop.orders.place(other, product, 8, idempotency_key="o")).codes) == 8


async def test_the_holder_releases_early_and_only_their_own(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=5)
    holder = await make_member(shop.db, shop.clock, tier="platinum")
    other = await make_member(shop.db, shop.clock, tier="platinum")
    hold = await shop.reservations.reserve(holder, product, 5)
    with pytest.raises(ShopError) as refused:
        await shop.reservations.release(other, hold.id)
    assert refused.value.code is ErrorCode.RESERVATION_NOT_FOUND
    assert await shop.reservations.release(holder, hold.id) == 5
    assert await shop.catalog.stock_counts([product]) == {product: 5}
    with pytest.raises(ShopError):
        await shop.reservations.release(holder, hold.id)
    again = await shop.reservations.reserve(other, product, 5)
    assert again.remaining == 5


async def test_an_admin_lists_and_cancels_a_hold_audited(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=5)
    holder = await make_member(shop.db, shop.clock, tier="platinum")
    hold = await shop.reservations.reserve(holder, product, 3)
    admin = shop.operations.admin
    assert [h.id for h in await admin.reservations()] == [hold.id]
    assert await admin.cancel_reservation("admin:1", hold.id) == 3
    assert await admin.reservations() == []
    assert await shop.catalog.stock_counts([product]) == {product: 5}
    async with shop.db.read() as session:
        entry = await session.scalar(
            select(AuditEntry).where(AuditEntry.action == "reservation.cancel")
        )
    assert entry is not None
    assert entry.target == f"reservation:{hold.id}"
    assert entry.after == {"released": 3}


async def test_the_reservations_command_lists_and_cancels(
    shop: Shop,
    database_url: str,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=5)
    holder = await make_member(shop.db, shop.clock, tier="platinum")
    hold = await shop.reservations.reserve(holder, product, 2)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))

    assert await asyncio.to_thread(cli.main, ["reservations"], clock=shop.clock) == 0
    out = capsys.readouterr().out
    assert f"#{hold.id} member #{holder} {hold.sku} 2/2 until " in out
    assert "1 reservation\n" in out
    argv = ["reservations", "--cancel", str(hold.id), "--lang", "en"]
    assert await asyncio.to_thread(cli.main, argv, clock=shop.clock) == 0
    assert "2 codes back on sale" in capsys.readouterr().out
    assert await shop.catalog.stock_counts([product]) == {product: 5}


async def test_a_platinum_member_reserves_in_chat_and_releases(shop: Shop) -> None:
    await seed_demo(shop.db, shop.vault, shop.clock, shop.ladder)
    screen = await Screen.open(build_runtime(shop), GOLD, "en")
    await screen.type("/start")
    member = await shop.members.by_telegram(GOLD)
    assert member is not None
    for label in ("Shop", "Game cards", "Tencent"):
        await screen.tap(label)
    assert "Reserve" not in await screen.tap("Q-Coins ¥10")  # gold may not reserve

    await shop.operations.admin.set_tier("admin:test", member.id, "platinum", reason="test")
    await screen.type("/start")
    for label in ("Shop", "Game cards", "Tencent", "Q-Coins ¥10"):
        await screen.tap(label)
    assert "How many?" in await screen.tap("📌 Reserve")
    assert "how many codes to reserve as a whole number" in await screen.type("five")
    assert "Reserve 3 codes of Tencent Q-Coins ¥10 for 24 h?" in await screen.type("3")
    await screen.tap("« Back")
    await screen.tap("📌 Reserve")
    assert "Reserve 5 codes of Tencent Q-Coins ¥10 for 24 h?" in await screen.tap("5")
    assert "you hold 5 codes of" in await screen.tap("✅ Reserve")
    mine = await screen.tap("My reservations")
    (hold,) = await shop.reservations.mine(member.id)
    assert f"#{hold.id} Tencent Q-Coins ¥10: 5 of 5 left" in mine
    assert "5 codes are back on sale" in await screen.tap(f"Release #{hold.id}")
    assert "You have no reservations." in await screen.type("/reservations")


async def test_the_holder_is_offered_what_they_hold_when_the_shelf_is_empty(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=4, price=1000)
    holder = await make_member(shop.db, shop.clock, tier="platinum", balance=RICH)
    other = await make_member(shop.db, shop.clock, tier="platinum", balance=RICH)
    await shop.reservations.reserve(holder, product, 4)

    mine = await shop.catalog.offer(holder, product, 4)
    assert (mine.product.stock, mine.held) == (4, 4)
    assert mine.quoted().quantity == 4
    theirs = await shop.catalog.offer(other, product, 1)
    assert theirs.sold_out
    assert theirs.held == 0
    page = await shop.catalog.browse(holder, mine.product.category_id, page_size=5)
    assert [offer.product.stock for offer in page.offers.items] == [4]

"""A change committed elsewhere is seen by the very next read, whatever else is going on.

The shop reads through a pool of connections (on SQLite in WAL mode, a read sees the
snapshot its transaction started on) and writes purchases through a separate writer
(on SQLite a thread with its own engine). A connection that kept an old snapshot, or
anything that cached a balance, would show a member money they no longer have or hide
money just paid in. So: `cardshop topup` runs as a real separate process while buyers
pay and browse in this one, and as soon as it has printed the new balance, every
connection of the pool read at once must show that balance, in the quote the buyer
sees and in the member's wallet. And purchases through the writer are seen by the
readers' next read, and top-ups by the readers by the writer's next purchase.

On SQLite a statement left half-read on a pooled connection (a read cut off between
execute and fetch, a result or driver cursor forgotten) keeps the snapshot of its ended
transaction, whatever COMMIT or ROLLBACK came after; the pools hand out no such
connection.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from core.config import Settings
from core.errors import ErrorCode, ShopError
from core.models import Member
from core.shop import Shop
from tests.conftest import TEST_KEY
from tests.factories import make_member, make_product, tiers_file_with

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 4
#: Concurrent reads after each top-up: more than the pool keeps, so every connection serves.
READERS = 12
BUYERS = 3
MEMBER_TELEGRAM_ID = 880_001


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """Buyers here buy as fast as they can; risk control's limits are raised out of the way."""
    roomy = tiers_file_with(tmp_path, max_orders=100_000, max_failures=100_000)
    return settings.model_copy(update={"tiers_file": roomy})


async def top_up_from_the_shell(shop: Shop, telegram_id: int, yuan: str) -> int:
    """`cardshop topup` in its own process; the balance it printed after, in 分."""
    settings = shop.settings
    env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": settings.database_url,
        "CODE_ENCRYPTION_KEYS": TEST_KEY,
        "DATA_DIR": str(settings.data_dir),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "topup", str(telegram_id), yuan, "--reason", "bank",
        cwd=settings.data_dir.parent, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    printed = out.decode().strip().rsplit("-> ", 1)[-1]
    return int(Decimal(printed) * 100)


@asynccontextmanager
async def busy(work: list[Callable[[], Awaitable[object]]]) -> AsyncIterator[None]:
    """Each piece of `work` repeated in its own task until the block ends."""
    stop = asyncio.Event()

    async def repeat(step: Callable[[], Awaitable[object]]) -> None:
        while not stop.is_set():
            await step()

    tasks = [asyncio.create_task(repeat(step)) for step in work]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_a_top_up_from_another_process_is_seen_by_the_next_read(
    shop: Shop, tmp_path: Path
) -> None:
    shop.settings.data_dir.mkdir(parents=True, exist_ok=True)
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=100, codes=5)
    # What the buyers buy, apart, so the product quoted below never sells out under them.
    bought, _ = await make_product(shop.db, shop.vault, shop.clock, price=100, codes=2_000)
    sku = (await shop.catalog.product(bought)).sku
    member = await make_member(shop.db, shop.clock, telegram_id=MEMBER_TELEGRAM_ID)
    buyers = [await make_member(shop.db, shop.clock, balance=10**7) for _ in range(BUYERS)]
    taps = iter(range(10**9))

    async def buy(buyer: int) -> None:
        """Buy one; when the buyers have bought the shelf empty, restock it (the writer
        stays busy however fast purchases are, and however slow the other process)."""
        tap = next(taps)
        try:
            await shop.orders.place(buyer, bought, 1, idempotency_key=f"{buyer}:{tap}")
        except ShopError as refusal:
            if refusal.code is not ErrorCode.OUT_OF_STOCK:
                raise
            await shop.stock.import_codes(sku, [f"RESTOCK-{tap}-{n}" for n in range(500)])

    async def browse(buyer: int) -> None:
        await shop.catalog.quote(buyer, product, 1)
        await shop.members.register(MEMBER_TELEGRAM_ID, display_name="payer")

    load: list[Callable[[], Awaitable[object]]] = [lambda b=b: buy(b) for b in buyers]
    load += [lambda b=b: browse(b) for b in buyers]
    async with busy(load):
        for _ in range(ROUNDS):
            printed = await top_up_from_the_shell(shop, MEMBER_TELEGRAM_ID, "5")
            quotes = await asyncio.gather(
                *(shop.catalog.quote(member, product, 1) for _ in range(READERS))
            )
            wallets = await asyncio.gather(*(shop.wallet.balance(member) for _ in range(READERS)))
            assert {quote.balance for quote in quotes} == {printed}
            assert set(wallets) == {printed}


async def test_the_writer_and_the_readers_see_each_other_at_once(shop: Shop) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=100, codes=200)
    member = await make_member(shop.db, shop.clock)
    others = [await make_member(shop.db, shop.clock, balance=10**7) for _ in range(BUYERS)]
    taps = iter(range(10**9))

    async def buy(buyer: int) -> None:
        await shop.orders.place(buyer, product, 1, idempotency_key=f"{buyer}:{next(taps)}")

    async def browse() -> None:
        await shop.catalog.quote(others[0], product, 1)

    load: list[Callable[[], Awaitable[object]]] = [lambda b=b: buy(b) for b in others[1:]]
    load += [browse, browse]
    async with busy(load):
        for n in range(ROUNDS):
            # Paid in through the readers' engine; the writer's very next purchase sees it.
            await shop.operations.admin.top_up("test", member, 100, reason=f"round {n}")
            purchase = await shop.orders.place(member, product, 1, idempotency_key=f"own:{n}")
            after = purchase.balance_after
            # Spent through the writer; every pooled reader's very next read sees it.
            quotes = await asyncio.gather(
                *(shop.catalog.quote(member, product, 1) for _ in range(READERS))
            )
            assert {quote.balance for quote in quotes} == {after}


sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def leak_scene(shop: Shop) -> tuple[int, int]:
    """A product and the member the shell tops up (plus a few others): (product, member)."""
    shop.settings.data_dir.mkdir(parents=True, exist_ok=True)
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=100, codes=5)
    member = await make_member(shop.db, shop.clock, telegram_id=MEMBER_TELEGRAM_ID)
    for _ in range(BUYERS):
        await make_member(shop.db, shop.clock)
    return product, member


@sqlite_only
async def test_a_read_left_half_done_on_a_pooled_connection_hides_no_top_up(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    product, member = await leak_scene(shop)
    async with shop.db.read() as session:
        connection = await (await session.connection()).get_raw_connection()
        left_open = await connection.driver_connection.execute("SELECT balance FROM members")
        assert await left_open.fetchone() is not None
    printed = await top_up_from_the_shell(shop, MEMBER_TELEGRAM_ID, "5")
    quotes = await asyncio.gather(*(shop.catalog.quote(member, product, 1) for _ in range(READERS)))
    assert {quote.balance for quote in quotes} == {printed}
    assert "Open: SELECT balance FROM members" in caplog.text  # logged, naming it
    del left_open  # held open until here, as a forgotten cursor would be


@sqlite_only
async def test_a_result_left_unread_by_the_writer_hides_no_top_up(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    product, member = await leak_scene(shop)
    left_open = await shop.db.run(lambda conn: conn.execute(select(Member.balance)))
    assert left_open.fetchone() is not None
    printed = await top_up_from_the_shell(shop, MEMBER_TELEGRAM_ID, "5")
    purchase = await shop.orders.place(member, product, 1, idempotency_key="after top-up")
    assert purchase.balance_after == printed - purchase.order.total
    assert "Open: SELECT members.balance" in caplog.text
    del left_open  # held open until here, as a forgotten result would be

"""A process killed in the middle of a purchase loses nothing and charges nothing.

A child process starts a real purchase and is SIGKILLed after it has claimed the codes
and debited the wallet but before it commits; the database must show no trace of it,
and the same purchase then goes through once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

from sqlalchemy import func, select

from core.models import Code, Order, WalletEntry
from core.shop import Shop
from tests.conftest import TEST_KEY
from tests.factories import make_member, make_product

CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    import core.orders
    from core.config import load_settings
    from core.shop import build_shop

    url, member, product, data_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    claim = core.orders.claim_codes_on

    def claim_then_hang(*args, **kwargs):
        codes = claim(*args, **kwargs)
        print("CLAIMED", flush=True)
        time.sleep(60)  # inside the purchase: the transaction stays open until the kill
        return codes

    core.orders.claim_codes_on = claim_then_hang

    async def main():
        shop = build_shop(load_settings(database_url=url, data_dir=data_dir, _env_file=None))
        await shop.orders.place(member, product, 1, idempotency_key="crash")

    asyncio.run(main())
    """
)


async def test_a_kill_mid_purchase_loses_nothing(shop: Shop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    product, codes = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=3)
    member = await make_member(shop.db, shop.clock, balance=5000)
    env = {**os.environ, "CODE_ENCRYPTION_KEYS": TEST_KEY}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, shop.settings.database_url, str(member), str(product),
        str(tmp_path), stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
    assert line.strip() == b"CLAIMED"
    child.send_signal(signal.SIGKILL)
    await child.wait()

    async with shop.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0
        assert (
            await session.scalar(
                select(func.count()).select_from(Code).where(Code.order_id.is_not(None))
            )
            == 0
        )
        assert (
            await session.scalar(
                select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "purchase")
            )
            == 0
        )
    assert await shop.wallet.balance(member) == 5000

    purchase = await shop.orders.place(member, product, 1, idempotency_key="crash")
    assert purchase.created
    assert purchase.codes == codes[:1]
    assert await shop.wallet.balance(member) == 5000 - 950

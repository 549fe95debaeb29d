"""Stopping the bot: SIGTERM (what systemd and Docker send) finishes the taps in flight.

`cardshop run` runs as a real process against the Bot API stand-in, which lives in the
test's event loop. Ten members tap "Pay" at once; as soon as the bot has taken those
updates, it gets SIGTERM. Every member must still get the codes and an answer to the
tap, and the process must exit 0 (a SIGTERM that kills on the spot exits -15).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.handlers.buy import QuantityCallback
from core.models import Order
from core.shop import Shop
from tests.botapi import BotApiStub, TgUser
from tests.conftest import TEST_KEY
from tests.factories import make_product

REPO = Path(__file__).resolve().parents[2]
BUYERS = 10
PAID = "✅ Pay"


def bot_process_env(shop: Shop, api: BotApiStub, adapter: str) -> dict[str, str]:
    """The environment `cardshop run` reads, and nothing from the developer's `.env`."""
    settings = shop.settings
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "WEBHOOK_"))}
    keep.pop("REDIS_URL", None)
    return {
        **keep,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": settings.database_url,
        "CODE_ENCRYPTION_KEYS": TEST_KEY,
        "DATA_DIR": str(settings.data_dir),
        "TELEGRAM_BOT_TOKEN": api.token,
        "TELEGRAM_API_BASE": api.base_url,
        "BOT_FRAMEWORK": adapter,
    }


async def start_bot(shop: Shop, api: BotApiStub, adapter: str, cwd: Path) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", cwd=cwd,
        env=bot_process_env(shop, api, adapter),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await api.wait_for(
            lambda: process.returncode is not None or api.calls_to("deleteWebhook"),
            timeout=60,
            what="`cardshop run` to start polling",
        )
    except AssertionError:
        process.kill()
        raise
    assert process.returncode is None, "`cardshop run` ended at start"
    return process


async def confirmation(api: BotApiStub, shop: Shop, user: TgUser, product: int) -> str:
    """/start, money in the wallet, quantity 1: the Pay button's data on the confirmation."""
    api.inject_message(user, "/start")
    menu = await api.next_sent(user.id, timeout=30)
    member = await shop.members.by_telegram(user.id)
    assert member is not None
    await shop.operations.admin.top_up("test", member.id, 10_000, reason="paid in")
    chosen = QuantityCallback(product=product, quantity=1).pack()
    api.inject_callback(user, menu.message_id, chosen, require_button=False)

    def pay_button() -> str | None:
        shown = api.message(user.id, menu.message_id)
        found = [b["callback_data"] for b in shown.buttons if b.get("text", "").startswith(PAID)]
        return found[0] if found else None

    return await api.wait_for(pay_button, timeout=30, what=f"a confirmation for {user.id}")


def taken(api: BotApiStub, update_ids: set[int]) -> bool:
    """Whether the bot holds every update in `update_ids`: its next getUpdates confirmed
    them. A fetch alone is not enough: the stub records the answer as it sends it, and a
    bot stopped before the answer reached it never had those updates (Telegram keeps
    them for the next start)."""
    fetched = {
        update["update_id"]
        for call in api.calls_to("getUpdates")
        for update in (call.response.get("result") or [])
    }
    unconfirmed = {update["update_id"] for update in api.pending_updates}
    return update_ids <= fetched and not update_ids & unconfirmed


async def test_sigterm_finishes_the_payments_in_flight(
    shop: Shop, api: BotApiStub, adapter: str, tmp_path: Path
) -> None:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1000, codes=BUYERS)
    process = await start_bot(shop, api, adapter, tmp_path)
    try:
        users = [api.user(7_000 + n, language_code="en") for n in range(BUYERS)]
        pays = await asyncio.gather(*(confirmation(api, shop, u, product) for u in users))
        menus = {u.id: api.sent_to(u.id)[0].message_id for u in users}
        updates = [
            api.inject_callback(u, menus[u.id], data, require_button=False)
            for u, data in zip(users, pays, strict=True)
        ]
        queries = [update["callback_query"]["id"] for update in updates]
        await api.wait_for(
            lambda: taken(api, {update["update_id"] for update in updates}),
            timeout=30,
            what="the bot to take the ten taps",
        )
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, stderr.decode()[-2000:]
    assert all(query in api.answered_callbacks for query in queries)
    for user in users:
        shown = api.message(user.id, menus[user.id])
        assert "Payment successful" in (shown.text or "")
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == BUYERS

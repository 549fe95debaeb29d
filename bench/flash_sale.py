"""A flash sale through the real bot: 1,000 members press Pay within one second for 100 codes.

What is measured: the dispatcher `cardshop run` serves (aiogram's, every router and
middleware, the database, i18n; `bot.app.running`), with the Bot API answered in-process
(`bench.nullapi`). Every member first opens the product and picks one code, so each
holds a confirmation with the Pay button the bot really drew (its nonce). Then the sale:
each member's Pay tap is fed at a random moment within one second (seeded), all at once
on the one event loop, as a webhook would hand them over.

Latency is from the moment a member pressed (the tap's scheduled time, so time spent
waiting for the loop counts) to the end of the bot's handling of it; p50 and p99 are
printed. The run fails unless exactly 100 codes were sold, each once, to 100 different
members charged once; every other member was refused without a charge; and every member
was answered (their tap's callback query answered: "Paid" or the sold-out alert).

Run: `make bench-flash` (or `python -m bench.flash_sale --members 1000 --codes 100`). With
BENCH_DATABASE_URL (PostgreSQL) and BENCH_REDIS_URL it runs there; both are WIPED first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.nullapi import NullApi
from bench.updates import (
    BENCH_BALANCE,
    FIRST_MEMBER,
    Updates,
    aiogram_bot,
    bench_settings,
    p99,
    seed_members,
    wipe,
)
from bot.app import running
from bot.flood import FloodControl
from bot.handlers.browse import ProductCallback
from bot.handlers.buy import QuantityCallback
from core.clock import Clock
from core.models import Code, Member, Order, WalletEntry
from core.shop import Shop
from tests.factories import make_product

#: The product's price in 分; every member can afford it.
PRICE = 1000


class FlashApi(NullApi):
    """`NullApi` that also notes which callback queries were answered, and how."""

    def __init__(self) -> None:
        super().__init__()
        #: Callback query id → the alert shown with its answer ("" for none).
        self.answered: dict[str, str] = {}

    def answer(self, method: str, params: Mapping[str, Any]) -> Any:
        if method == "answerCallbackQuery":
            alert = params.get("show_alert") in (True, "true")
            self.answered[str(params.get("callback_query_id"))] = (
                str(params.get("text")) if alert else ""
            )
        return super().answer(method, params)


@dataclass
class Sale:
    """What the sale did, as the bot answered it and as the database holds it."""

    members: int
    codes: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    paid: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    errors: int = 0
    sold: int = 0
    buyers: int = 0
    charged: int = 0
    #: Members whose balance moved.
    debited: int = 0
    problems: list[str] = field(default_factory=list)


async def _prepare(shop: Shop, members: int, codes: int) -> int:
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=PRICE, codes=codes)
    await seed_members(shop, members)
    return product


async def _check(shop: Shop, product: int, sale: Sale) -> None:
    """The database's side: codes sold once each, one order and one charge per buyer."""
    async with shop.db.read() as session:
        sale.sold = int(
            await session.scalar(
                select(func.count())
                .select_from(Code)
                .where(Code.product_id == product, Code.order_id.is_not(None))
            )
            or 0
        )
        sale.buyers = int(
            await session.scalar(
                select(func.count(func.distinct(Order.member_id))).where(
                    Order.product_id == product
                )
            )
            or 0
        )
        sale.charged = int(
            await session.scalar(
                select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "purchase")
            )
            or 0
        )
        sale.debited = int(
            await session.scalar(
                select(func.count()).select_from(Member).where(Member.balance != BENCH_BALANCE)
            )
            or 0
        )


def _verdict(sale: Sale) -> list[str]:
    problems = []
    counts = (sale.sold, sale.buyers, sale.charged, sale.debited)
    if counts != (sale.codes,) * 4:
        problems.append(
            f"sold {sale.sold} codes to {sale.buyers} buyers with {sale.charged} charges,"
            f" {sale.debited} balances moved; expected {sale.codes} of each"
        )
    if sale.paid != sale.codes:
        problems.append(f"{sale.paid} members were told they paid, expected {sale.codes}")
    if sale.unanswered:
        problems.append(f"{sale.unanswered} members got no answer")
    if sale.errors:
        problems.append(f"{sale.errors} taps raised")
    if sum(sale.refused.values()) != sale.members - sale.codes:
        problems.append(f"refusals {dict(sale.refused)}, expected {sale.members - sale.codes}")
    return problems


async def flash_sale(
    url: str, redis_url: str | None, members: int, codes: int, seed: int, data_dir: Path
) -> Sale:
    await wipe(url, redis_url)
    settings = bench_settings(url, redis_url, data_dir)
    sale = Sale(members=members, codes=codes)
    async with running(settings, clock=Clock()) as runtime:
        # The real pace (28 requests/s) would measure the sleep; keep the path, not it.
        runtime.flood = FloodControl(per_second=1e9)
        product = await _prepare(runtime.shop, members, codes)
        api = FlashApi()
        updates = Updates(api, iter(range(1, 10**9)))
        chats = range(FIRST_MEMBER, FIRST_MEMBER + members)
        async with aiogram_bot(runtime, api) as feed:
            # Before the sale: every member holds a confirmation with its Pay button.
            for chat in chats:
                await feed(updates.tap(chat, ProductCallback(product=product).pack()))
                await feed(updates.tap(chat, QuantityCallback(product=product, quantity=1).pack()))
            taps = {}
            for chat in chats:
                pay = updates.pay_data(chat)
                if pay is None:
                    sale.problems.append(f"member {chat} was shown no Pay button")
                    continue
                taps[chat] = updates.tap(chat, pay)
            rng = random.Random(seed)
            offsets = {chat: rng.random() for chat in taps}

            async def press(chat: int, start: float) -> None:
                pressed = start + offsets[chat]
                await asyncio.sleep(max(0.0, pressed - time.perf_counter()))
                try:
                    await feed(taps[chat])
                except Exception:
                    sale.errors += 1
                sale.latencies.append(time.perf_counter() - pressed)

            start = time.perf_counter()
            await asyncio.gather(*(press(chat, start) for chat in taps))
            sale.seconds = time.perf_counter() - start
        for update in taps.values():
            alert = api.answered.get(str(update["callback_query"]["id"]))
            if alert is None:
                sale.unanswered += 1
            elif alert:
                sale.refused[alert] += 1
            else:
                sale.paid += 1
        await _check(runtime.shop, product, sale)
    sale.problems += _verdict(sale)
    return sale


def report(name: str, sale: Sale) -> None:
    ms = sorted(latency * 1000 for latency in sale.latencies)
    print(
        f"{name:10} {sale.members} members pressed Pay within 1 s for {sale.codes} codes:"
        f" {sale.paid} paid, {sum(sale.refused.values())} refused, {sale.unanswered} unanswered;"
        f" all answered in {sale.seconds:.2f} s"
    )
    print(
        f"{'':10} latency from press to answer: p50 {statistics.median(ms):.0f} ms,"
        f" p99 {p99(ms):.0f} ms, max {ms[-1]:.0f} ms"
    )
    print(
        f"{'':10} database: {sale.sold} codes sold to {sale.buyers} members, {sale.charged} charges"
    )
    for problem in sale.problems:
        print(f"{'':10} PROBLEM: {problem}")


async def main(members: int, codes: int, seed: int) -> bool:
    sound = True
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'flash.db'}", None)]
        pg_url = os.environ.get("BENCH_DATABASE_URL")
        if pg_url:
            runs.append(("postgresql", pg_url, os.environ.get("BENCH_REDIS_URL")))
        for name, url, redis_url in runs:
            sale = await flash_sale(url, redis_url, members, codes, seed, Path(tmp))
            report(name, sale)
            sound = sound and not sale.problems
    return sound


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--codes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(main(args.members, args.codes, args.seed)) else 1)

"""Per-update latency in a large shop against a small one: does the bot slow as it grows?

Two shops are grown side by side (`bench.population`, then `ANALYZE`, as a live shop
is): a small one of 1,000 members / 100 products / 10,000 codes and a large one of
100,000 members / 10,000 products / 1,000,000 codes, most codes sold, each sale with its
order, ledger row and activity. The same mixed workload as `bench.updates` (browse,
/level, /checkin, buying one code) goes through the real aiogram dispatcher on the null
Bot API into each, in alternating rounds (the machines are noisy; a ratio measured side
by side is not), and each update type's median latency is reported for both with the
ratio large / small. Target: every ratio within 1.2x (issue 11).

Run: `python -m bench.scale` (`--scale 0.1` grows both shops ten times smaller, for a
quick look). Growing the large shop takes a few minutes; it runs on SQLite files in a
temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from random import Random

from bench.nullapi import NullApi
from bench.population import Population, Size, populate
from bench.updates import (
    TYPES,
    Catalog,
    Driver,
    ErrorCount,
    RunResult,
    Updates,
    aiogram_bot,
    bench_settings,
    plan,
    watch_refusals,
    wipe,
)
from bot.app import running
from bot.flood import FloodControl
from bot.framework import Runtime
from core.clock import Clock

SMALL = Size(members=1_000, products=100, codes=10_000)
LARGE = Size(members=100_000, products=10_000, codes=1_000_000)
TARGET = 1.2


@dataclass
class Shop:
    """One grown shop, its runtime, and what its rounds measured."""

    name: str
    size: Size
    runtime: Runtime
    grown: Population
    refused: set[int]
    results: list[RunResult]


@asynccontextmanager
async def grown_shop(name: str, size: Size, folder: Path) -> AsyncIterator[Shop]:
    url = f"sqlite+aiosqlite:///{folder / name}.db"
    await wipe(url, None)
    settings = bench_settings(url, None, folder)
    async with running(settings, clock=Clock()) as runtime:
        runtime.flood = FloodControl(per_second=1e9)  # measure the bot, not the pacing
        print(f"growing the {name} shop: {size} ...", flush=True)
        grown = await populate(runtime.shop.db, runtime.shop.vault, runtime.shop.clock, size)
        yield Shop(name, size, runtime, grown, watch_refusals(runtime), [])


async def round_(shop: Shop, n: int, index: int, errors: ErrorCount) -> None:
    """`n` updates of the mixed workload, by members of this round's own."""
    per_run = max(20, math.ceil(n * 0.15) + 1)
    members = shop.grown.buyers[index * per_run : (index + 1) * per_run]
    catalog = Catalog(shop.grown.categories, shop.grown.products, shop.grown.products)
    api = NullApi()
    result = RunResult()
    async with aiogram_bot(shop.runtime, api) as feed:
        updates = Updates(api, iter(range(index * 10 * n + 1, 10**9)))
        driver = Driver(feed, updates, catalog, Random(index), result, shop.refused, errors)
        await driver.run(plan(n, members, seed=index))
    shop.results.append(result)


def median_ms(shop: Shop, kind: str) -> float | None:
    samples = [t for run in shop.results for t in run.times.get(kind, [])]
    return statistics.median(samples) * 1000 if samples else None


def report(small: Shop, large: Shop) -> bool:
    print(f"\nsmall: {small.size}\nlarge: {large.size}")
    print(f"{'type':13} {'small ms':>9} {'large ms':>9} {'ratio':>7}")
    flat = True
    for kind in ("all", *TYPES):
        if kind == "all":
            pair = [
                statistics.median(
                    t for run in shop.results for ts in run.times.values() for t in ts
                )
                * 1000
                for shop in (small, large)
            ]
        else:
            pair = [median_ms(shop, kind) for shop in (small, large)]
        if pair[0] is None or pair[1] is None:
            continue
        ratio = pair[1] / pair[0]
        flat = flat and ratio <= TARGET
        mark = "ok" if ratio <= TARGET else f"> {TARGET}x"
        print(f"{kind:13} {pair[0]:9.2f} {pair[1]:9.2f} {ratio:6.2f}x  {mark}")
    for shop in (small, large):
        refused = sum((run.refused for run in shop.results), start=RunResult().refused)
        errors = sum((run.errors for run in shop.results), start=RunResult().errors)
        if refused or errors:
            print(f"{shop.name}: refused {dict(refused)}, errors {dict(errors)}")
            flat = False
    return flat


async def main(n: int, rounds: int, scale: float) -> bool:
    def scaled(size: Size) -> Size:
        return Size(*(max(10, int(x * scale)) for x in (size.members, size.products, size.codes)))

    errors = ErrorCount()
    logging.getLogger().addHandler(errors)
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            small = await stack.enter_async_context(grown_shop("small", scaled(SMALL), Path(tmp)))
            large = await stack.enter_async_context(grown_shop("large", scaled(LARGE), Path(tmp)))
            for index in range(rounds):
                for shop in (small, large) if index % 2 == 0 else (large, small):
                    await round_(shop, n, index, errors)
            return report(small, large)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=500, help="updates per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    parser.add_argument("--scale", type=float, default=1.0, help="grow both shops by this")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(0 if asyncio.run(main(args.updates, args.rounds, args.scale)) else 1)

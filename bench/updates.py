"""Updates per second through the real bot, as a ratio to the bare framework's floor.

What is measured: the bot `cardshop run` serves (every router, middleware and
conversation, the database, i18n; `bot.app.running` / `build_runtime`, aiogram's
`build_dispatcher`, python-telegram-bot's `build_application`) fed real updates straight
into `Dispatcher.feed_update` / `Application.process_update`, one after another, with
the Bot API answered in-process (`bench.nullapi`). The workload is what members do:
50 % browsing (/start, the menu, categories, products), 15 % /level, 15 % /checkin and
20 % buying (product → quantity → pay, the pay button carrying the nonce the
confirmation really drew). Each framework is also timed bare (an echo handler on the
same null API) on the same updates in the same run, and the bot is reported as a ratio
to that floor: the machines are noisy, a ratio measured side by side is not. Rounds
alternate (aiogram, PTB, aiogram, PTB...) for the same reason.

Why: it shows how far the shop's own per-update work (de-duplication, registration,
state, quotes, the purchase) is from what the framework alone could carry, and which
kind of update costs most.

A benchmark that measured apologies would be worthless, so every refusal, apology and
logged error is counted per update type, and every pay tap must have created an order
(counted in the database): otherwise the run fails. Risk control's per-member order
limits are raised in a copy of tiers.toml, and each run uses members of its own, so a
check-in is never a member's second of the day.

Run: `make bench-updates` (or `python -m bench.updates --updates 1000`). With
BENCH_DATABASE_URL (PostgreSQL) it runs there too, and with BENCH_REDIS_URL keeps chat
state and de-duplication in Redis; both are WIPED first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import patch

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.types import CallbackQuery, Message
from aiogram.types import Update as AiogramUpdate
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from sqlalchemy import func, select
from telegram import Update as PtbUpdate
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, MessageHandler
from telegram.ext import filters as ptb_filters

from bench.nullapi import DATE, TOKEN, NullApi, NullRequest, NullSession
from bot.adapters import aiogram as aiogram_app
from bot.adapters import ptb as ptb_app
from bot.app import running
from bot.flood import FloodControl
from bot.framework import Runtime
from bot.handlers.browse import ProductCallback, ShopCallback
from bot.handlers.buy import PayCallback, QuantityCallback
from bot.handlers.start import MenuCallback
from core.clock import Clock
from core.config import Settings, load_settings
from core.demo import PRODUCTS, seed_demo
from core.migrate import migrate_afresh
from core.models import Category, Member, Order, Product, WalletEntry
from core.shop import Shop
from core.stock import StockService
from core.uow import Database
from tests.factories import tiers_file_with

#: Risk control's limits, raised so that no purchase in the bench is refused for pace.
BENCH_LIMIT = 1_000_000
#: Each bench member's balance in 分: far more than they can spend in a run.
BENCH_BALANCE = 100_000_000
#: Where bench members' Telegram ids start (the demo's are 10001...).
FIRST_MEMBER = 7_000_000
FRAMEWORKS = ("aiogram", "ptb")
#: The bare floor is ~50x faster than the bot: it runs the plan this often, so that it
#: is timed over about as long a stretch of the machine's noise as a second or two.
FLOOR_REPEATS = 5
#: The update types, in the order they are reported; `buy:*` are the buy sequence's steps.
TYPES = (
    "/start",
    "menu",
    "category",
    "product",
    "/level",
    "/checkin",
    "buy:product",
    "buy:quantity",
    "buy:pay",
)

Feed = Callable[[dict[str, Any]], Awaitable[None]]


# --- what was measured ------------------------------------------------------------------


@dataclass
class RunResult:
    """One pass of the workload through one bot (or one bare floor)."""

    updates: int = 0
    seconds: float = 0.0
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    refused: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    pays: int = 0
    orders: int = 0

    @property
    def rate(self) -> float:
        return self.updates / self.seconds


class ErrorCount(logging.Handler):
    """Counts records at ERROR and above, for the update being handled."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


# --- updates ----------------------------------------------------------------------------


@dataclass
class Updates:
    """Builds Telegram update JSON for one run, with ids never used before in this database."""

    api: NullApi
    next_id: Iterator[int]

    def _user(self, telegram_id: int) -> dict[str, Any]:
        return {
            "id": telegram_id,
            "is_bot": False,
            "first_name": f"Member {telegram_id}",
            "language_code": "zh-hans" if telegram_id % 2 else "en",
        }

    def _chat(self, telegram_id: int) -> dict[str, Any]:
        return {"id": telegram_id, "type": "private", "first_name": f"Member {telegram_id}"}

    def command(self, telegram_id: int, name: str) -> dict[str, Any]:
        update_id = next(self.next_id)
        return {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": DATE,
                "chat": self._chat(telegram_id),
                "from": self._user(telegram_id),
                "text": f"/{name}",
                "entities": [{"type": "bot_command", "offset": 0, "length": len(name) + 1}],
            },
        }

    def tap(self, telegram_id: int, data: str) -> dict[str, Any]:
        """A button under the last message the bot drew in this chat."""
        update_id = next(self.next_id)
        return {
            "update_id": update_id,
            "callback_query": {
                "id": str(update_id),
                "from": self._user(telegram_id),
                "chat_instance": str(telegram_id),
                "data": data,
                "message": {
                    "message_id": self.api.last_message.get(telegram_id, 1),
                    "date": DATE,
                    "chat": self._chat(telegram_id),
                    "from": {"id": 123456789, "is_bot": True, "first_name": "Bench"},
                    "text": "…",
                },
            },
        }

    def pay_data(self, telegram_id: int) -> str | None:
        """The pay button of the confirmation on screen, as the bot drew it."""
        for data in self.api.keyboards.get(telegram_id, []):
            if data.startswith(PayCallback.prefix + ":"):
                return data
        return None


@dataclass(frozen=True)
class Catalog:
    """Ids the workload taps: categories (top and leaf), every product, those members buy."""

    categories: list[int]
    products: list[int]
    buyable: list[int]


#: One step of the workload: a member's update (or three, for a purchase).
Step = tuple[str, int]


def plan(n: int, members: list[int], seed: int) -> list[Step]:
    """The mixed workload for about `n` updates: (kind, member) in a shuffled order.

    Check-ins go to distinct members (a second one the same day would be refused);
    purchases are spread over all members round robin; the rest are random members.
    """
    rng = random.Random(seed)
    buys = max(1, round(n * 0.20 / 3))
    checkins = max(1, round(n * 0.15))
    levels = max(1, round(n * 0.15))
    browsing = max(1, n - 3 * buys - checkins - levels)
    steps: list[Step] = [("checkin", members[i % len(members)]) for i in range(checkins)]
    steps += [("buy", members[i % len(members)]) for i in range(buys)]
    steps += [("level", rng.choice(members)) for _ in range(levels)]
    steps += [("browse", rng.choice(members)) for _ in range(browsing)]
    rng.shuffle(steps)
    return steps


# --- driving one run --------------------------------------------------------------------


@dataclass
class Driver:
    """Feeds a plan into one bot and times each update by type."""

    feed: Feed
    updates: Updates
    catalog: Catalog
    rng: random.Random
    result: RunResult
    refused_ids: set[int]
    errors: ErrorCount
    #: The bare floor draws no confirmation; it taps a pay button of the right shape.
    floor: bool = False

    async def send(self, kind: str, update: dict[str, Any]) -> bool:
        """Feed one update; False when it was refused, apologised for or logged an error.

        Refusals are what `Runtime._tell` sent for it (see `watch_refusals`) and any
        alert on a tapped button (the buy handler shows a refused payment as one).
        """
        errors_before, alerts_before = self.errors.count, len(self.updates.api.alerts)
        started = time.perf_counter()
        try:
            await self.feed(update)
        except Exception:
            logging.getLogger(__name__).exception("update %s raised", update["update_id"])
        self.result.times[kind].append(time.perf_counter() - started)
        self.result.updates += 1
        if self.errors.count != errors_before:
            self.result.errors[kind] += 1
            return False
        if update["update_id"] in self.refused_ids or len(self.updates.api.alerts) != alerts_before:
            self.result.refused[kind] += 1
            return False
        return True

    async def browse(self, member: int) -> None:
        choice = self.rng.random()
        if choice < 0.25:
            await self.send("/start", self.updates.command(member, "start"))
        elif choice < 0.5:
            data = MenuCallback(item="shop").pack()
            await self.send("menu", self.updates.tap(member, data))
        elif choice < 0.75:
            data = ShopCallback(category=self.rng.choice(self.catalog.categories)).pack()
            await self.send("category", self.updates.tap(member, data))
        else:
            data = ProductCallback(product=self.rng.choice(self.catalog.products)).pack()
            await self.send("product", self.updates.tap(member, data))

    async def buy(self, member: int) -> None:
        product = self.rng.choice(self.catalog.buyable)
        tap = self.updates.tap
        await self.send("buy:product", tap(member, ProductCallback(product=product).pack()))
        quantity = QuantityCallback(product=product, quantity=1).pack()
        confirmed = await self.send("buy:quantity", tap(member, quantity))
        pay = self.updates.pay_data(member)
        if pay is None and not self.floor:
            if confirmed:  # answered without a refusal, yet no confirmation to pay
                self.result.refused["buy:quantity"] += 1
            return
        self.result.pays += 1
        await self.send("buy:pay", tap(member, pay or PayCallback(nonce="floor").pack()))

    async def run(self, steps: list[Step]) -> RunResult:
        started = time.perf_counter()
        for kind, member in steps:
            if kind == "browse":
                await self.browse(member)
            elif kind == "buy":
                await self.buy(member)
            else:
                await self.send(f"/{kind}", self.updates.command(member, kind))
        self.result.seconds += time.perf_counter() - started
        return self.result


# --- the bots ---------------------------------------------------------------------------


@asynccontextmanager
async def aiogram_bot(runtime: Runtime | None, api: NullApi) -> AsyncIterator[Feed]:
    """The shop's dispatcher (or, without a runtime, a bare echo one) on a null session."""
    session = NullSession(api)
    if runtime is not None:
        session.middleware(aiogram_app.Paced(runtime.flood))
    bot = Bot(TOKEN, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML))
    if runtime is not None:
        dispatcher = aiogram_app.build_dispatcher(runtime, aiogram_app.AiogramTransport(bot))
    else:
        dispatcher = bare_dispatcher()

    async def feed(data: dict[str, Any]) -> None:
        update = AiogramUpdate.model_validate(data, context={"bot": bot})
        await dispatcher.feed_update(bot, update)

    yield feed


def bare_dispatcher() -> Dispatcher:
    dispatcher = Dispatcher()

    async def echo(message: Message) -> None:
        await message.answer(message.text or "")

    async def answer(query: CallbackQuery) -> None:
        await query.answer()

    dispatcher.message.register(echo)
    dispatcher.callback_query.register(answer)
    return dispatcher


@contextmanager
def null_requests(api: NullApi) -> Iterator[None]:
    """`Application.builder()` hands out builders whose requests go to `api`.

    `build_application` makes its own builder from the settings; this is the one seam
    to give it a request class without changing it.
    """
    original = Application.builder

    def builder() -> ApplicationBuilder[Any, Any, Any, Any, Any, Any]:
        return original().request(NullRequest(api)).get_updates_request(NullRequest(api))

    with patch.object(Application, "builder", builder):
        yield


@asynccontextmanager
async def ptb_bot(runtime: Runtime | None, settings: Settings, api: NullApi) -> AsyncIterator[Feed]:
    """The shop's Application (or, without a runtime, a bare echo one) on a null request."""
    with null_requests(api):
        if runtime is not None:
            application: Any = ptb_app.build_application(runtime, settings)
        else:
            application = bare_application()
    async with application:

        async def feed(data: dict[str, Any]) -> None:
            await application.process_update(PtbUpdate.de_json(data, application.bot))

        yield feed


def bare_application() -> Any:
    application = Application.builder().token(TOKEN).build()

    async def echo(update: PtbUpdate, _: Any) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(update.effective_message.text or "")

    async def answer(update: PtbUpdate, _: Any) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer()

    application.add_handler(MessageHandler(ptb_filters.ALL, echo))
    application.add_handler(CallbackQueryHandler(answer))
    return application


# --- the shop ---------------------------------------------------------------------------


async def count_orders(db: Database) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count(Order.id))) or 0)


async def seed(shop: Shop, members: int, purchases: int) -> Catalog:
    """The demo shop, `members` bench members with money, stock for `purchases` buys."""
    await seed_demo(shop.db, shop.vault, shop.clock, shop.ladder)
    buyable_skus = [p.sku for p in PRODUCTS if p.pool == "basic"]
    per_product = math.ceil(purchases / len(buyable_skus)) + 10
    stock = StockService(shop.db, shop.vault, shop.clock)
    for sku in buyable_skus:
        await stock.import_codes(sku, [f"BENCH-{sku}-{i:06d}" for i in range(per_product)])
    await seed_members(shop, members)
    async with shop.db.read() as session:
        categories = list(await session.scalars(select(Category.id)))
        products = {p.sku: p.id for p in await session.scalars(select(Product))}
    return Catalog(
        categories=categories,
        products=list(products.values()),
        buyable=[products[sku] for sku in buyable_skus],
    )


async def seed_members(shop: Shop, count: int) -> None:
    """Members with a balance paid in by a top-up, in one transaction."""
    now = shop.clock.now()
    async with shop.db.transaction() as session:
        rows = [
            Member(
                telegram_id=FIRST_MEMBER + i,
                display_name=f"Member {i}",
                locale="zh_CN" if i % 2 else "en",
                referral_code=f"B{i:07d}",
                balance=BENCH_BALANCE,
                created_at=now,
            )
            for i in range(count)
        ]
        session.add_all(rows)
        await session.flush()
        session.add_all(
            WalletEntry(
                member_id=row.id,
                kind="topup",
                amount=BENCH_BALANCE,
                balance_after=BENCH_BALANCE,
                reason="bench top-up",
                actor="bench",
                created_at=now,
            )
            for row in rows
        )


async def wipe(url: str, redis_url: str | None) -> None:
    """An empty, migrated database (and Redis db) for the bench; SQLite starts from a new file."""
    await migrate_afresh(url)
    if redis_url:
        redis = Redis.from_url(redis_url)
        await redis.flushdb()
        await redis.aclose()


def bench_settings(url: str, redis_url: str | None, data_dir: Path) -> Settings:
    return load_settings(
        database_url=url,
        redis_url=redis_url,
        telegram_bot_token=TOKEN,
        code_encryption_keys=Fernet.generate_key().decode(),
        data_dir=data_dir,
        tiers_file=tiers_file_with(data_dir, max_orders=BENCH_LIMIT, max_failures=BENCH_LIMIT),
        _env_file=None,
    )


# --- the bench --------------------------------------------------------------------------


@dataclass
class Results:
    """Every run of one database: per framework, the bot's and the floor's, per round."""

    bot: dict[str, list[RunResult]] = field(default_factory=lambda: defaultdict(list))
    floor: dict[str, list[RunResult]] = field(default_factory=lambda: defaultdict(list))

    @property
    def sound(self) -> bool:
        """No refusal, no error, and an order for every pay tap."""
        return all(
            not run.refused and not run.errors and run.orders == run.pays
            for runs in self.bot.values()
            for run in runs
        )


def watch_refusals(runtime: Runtime) -> set[int]:
    """Ids of the updates the runtime answered with a refusal or an apology.

    `Runtime._tell` is where every shop refusal, stale button and apology goes out;
    wrapping it on this one instance counts them without touching the bot.
    """
    refused: set[int] = set()
    tell = runtime._tell

    async def counting(ctx: Any, message: str) -> None:
        if ctx.incoming.update_id is not None:
            refused.add(ctx.incoming.update_id)
        await tell(ctx, message)

    runtime._tell = counting  # type: ignore[method-assign, assignment]
    return refused


async def bench_database(
    url: str, redis_url: str | None, n: int, rounds: int, data_dir: Path
) -> Results:
    """Alternate bare floor and bot, aiogram and PTB, for `rounds` rounds on one database."""
    await wipe(url, redis_url)
    settings = bench_settings(url, redis_url, data_dir)
    per_run = max(20, math.ceil(n * 0.15) + 1)
    runs = rounds * len(FRAMEWORKS)
    errors = ErrorCount()
    logging.getLogger().addHandler(errors)
    update_ids = iter(range(1, 10**9))
    results = Results()
    try:
        async with running(settings, clock=Clock()) as runtime:
            # The real pace (28 requests/s) would measure the sleep; keep the path, not it.
            runtime.flood = FloodControl(per_second=1e9)
            refused = watch_refusals(runtime)
            catalog = await seed(runtime.shop, per_run * runs, math.ceil(n * 0.2 / 3) * runs)
            for index in range(runs):
                framework = FRAMEWORKS[index % len(FRAMEWORKS)]
                first = FIRST_MEMBER + index * per_run
                steps = plan(n, list(range(first, first + per_run)), seed=index)
                context = RunContext(settings, catalog, steps, update_ids, refused, errors)
                results.floor[framework].append(await context.measure(framework, None))
                results.bot[framework].append(await context.measure(framework, runtime))
    finally:
        logging.getLogger().removeHandler(errors)
    return results


@dataclass
class RunContext:
    """One round's plan, measured through a bot (`runtime`) or the bare framework (None)."""

    settings: Settings
    catalog: Catalog
    steps: list[Step]
    update_ids: Iterator[int]
    refused: set[int]
    errors: ErrorCount

    async def measure(self, framework: str, runtime: Runtime | None) -> RunResult:
        api = NullApi()
        result = RunResult()
        if framework == "aiogram":
            bot = aiogram_bot(runtime, api)
        else:
            bot = ptb_bot(runtime, self.settings, api)
        orders_before = await count_orders(runtime.shop.db) if runtime else 0
        async with bot as feed:
            driver = Driver(
                feed,
                Updates(api, self.update_ids),
                self.catalog,
                random.Random(len(self.steps)),
                result,
                self.refused,
                self.errors,
                floor=runtime is None,
            )
            for _ in range(1 if runtime is not None else FLOOR_REPEATS):
                await driver.run(self.steps)
        if runtime is not None:
            result.orders = await count_orders(runtime.shop.db) - orders_before
        return result


# --- the report -------------------------------------------------------------------------


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def report(name: str, results: Results) -> None:
    print(f"\n== {name}")
    for framework in FRAMEWORKS:
        bots, floors = results.bot[framework], results.floor[framework]
        ratios = [b.rate / f.rate for b, f in zip(bots, floors, strict=True)]
        rounds = "  ".join(f"{b.rate:.0f}/{f.rate:.0f}" for b, f in zip(bots, floors, strict=True))
        print(
            f"{framework:8} bot {statistics.median(b.rate for b in bots):7.1f} updates/s,"
            f" floor {statistics.median(f.rate for f in floors):7.0f} updates/s,"
            f" ratio {statistics.median(ratios):.4f}x (median of {len(bots)};"
            f" per round bot/floor: {rounds})"
        )
        pays, orders = sum(b.pays for b in bots), sum(b.orders for b in bots)
        print(f"{'':8} pay taps {pays}, orders created {orders}")
        header = ("type", "count", "mean ms", "p99 ms", "refused", "errors")
        print(f"{'':8} {header[0]:13} " + " ".join(f"{h:>8}" for h in header[1:]))
        for kind in TYPES:
            samples = [t for b in bots for t in b.times.get(kind, [])]
            if not samples:
                continue
            refused = sum(b.refused[kind] for b in bots)
            errors = sum(b.errors[kind] for b in bots)
            print(
                f"{'':8} {kind:13} {len(samples):8d} {statistics.fmean(samples) * 1000:8.2f}"
                f" {p99(samples) * 1000:8.2f} {refused:8d} {errors:8d}"
            )


async def main(n: int, rounds: int) -> bool:
    """Run and report every configured database; False when any run was not sound."""
    sound = True
    with tempfile.TemporaryDirectory() as tmp:
        targets: list[tuple[str, str, str | None]] = [
            ("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", None)
        ]
        pg_url = os.environ.get("BENCH_DATABASE_URL")
        if pg_url:
            redis_url = os.environ.get("BENCH_REDIS_URL")
            targets.append(("postgresql" + (" + redis" if redis_url else ""), pg_url, redis_url))
        for name, url, redis_url in targets:
            results = await bench_database(url, redis_url, n, rounds, Path(tmp))
            report(name, results)
            sound = sound and results.sound
    if not sound:
        print("\nNOT SOUND: refusals, errors, or pay taps without an order (see above)")
    return sound


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=1000, help="updates per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(0 if asyncio.run(main(args.updates, args.rounds)) else 1)

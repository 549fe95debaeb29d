"""Money in, measured: pre-checkout answers while the bot is busy, and credits per second.

Both halves are reported as ratios to a baseline measured in the same run, rounds
alternating, because the machines are noisy and a ratio measured side by side is not.

1. Pre-checkout under load. Telegram cancels a Stars payment unless the bot answers its
   `pre_checkout_query` within 10 seconds, and the shop promises to answer it ahead of
   any queue. The bot `cardshop run` serves (`bot.app.running`: every conversation, the
   database, i18n; aiogram's `build_dispatcher`, PTB's `build_application` with its
   concurrency), on the Bot API answered in-process (`bench.nullapi`, as in
   `bench.updates`), is handed a backlog the way its polling hands one over: aiogram a
   task per update, PTB its update queue. The backlog is `--chats` chats of
   `--per-chat` updates each: a /checkin (writes points), a purchase (product → quantity
   → pay, which writes an order; the pay tap is sent once the confirmation and its
   nonce are drawn, as a member taps it), a /level and the rest browsing (/start, the
   menu, categories, products). Into it go `--queries` pre-checkout queries for real
   pending Stars top-ups of members whose chats are busy: the first as soon as the
   backlog is offered, each next one once another share of the backlog was handled.
   A query's latency runs from being offered to the framework until its
   answerPreCheckoutQuery reaches the API; the baseline is an ordinary update of the
   same burst, from being offered until the bot is done with it (`Runtime.handle`
   returned): the same bot doing the same work at the same moment. Each burst runs with
   the flood control's pace lifted (what the machine and database allow, as in
   `bench.updates`) and with the shop's real pace (28 requests a second to chats: the
   queue a busy production bot really has), unless `--pace` names one. Every query must
   be answered ok, every update handled without a refusal, apology or logged error, and
   every pay tap must have created an order; otherwise the run fails.

2. Credits per second. `Payments.credit_stars` (a `successful_payment`) and
   `Payments.credit_epay` (a signed 易支付 notify, its MD5 signature checked) each credit
   a fresh pending top-up, one at a time and 20 at once, spread over 100 members. The
   baseline runs the statements a credit emits (read from SQLAlchemy's
   before_cursor_execute while writing this; see `BASE_*`) through the plain driver, in
   one transaction per credit: lock the payment with its member's columns, look for the
   charge id, mark the payment credited, move the balance, write the ledger row. On
   SQLite that is `sqlite3` on one connection with the shop's pragmas and BEGIN
   IMMEDIATE (SQLite lets one writer in at a time, so one connection is the ceiling for
   20 at once too); on PostgreSQL plain `asyncpg` with as many connections as credits
   at once. The baseline verifies no signature (an MD5 of a few hundred bytes) and
   parses nothing: that difference is part of what the ratio shows. Afterwards every
   top-up must be credited exactly once and every member's ledger must sum to the
   balance.

Run: `make bench-payments` (or `python -m bench.payments`; `--help` for bigger runs).
With BENCH_DATABASE_URL (PostgreSQL) both halves run there too, with BENCH_REDIS_URL
keeping chat state and de-duplication in Redis; both are WIPED first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from cryptography.fernet import Fernet
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, make_url
from telegram import Update as PtbUpdate

from bench.nullapi import TOKEN, NullApi
from bench.updates import (
    BENCH_LIMIT,
    FIRST_MEMBER,
    Catalog,
    ErrorCount,
    Updates,
    aiogram_bot,
    count_orders,
    null_requests,
    seed,
    seed_members,
    watch_refusals,
    wipe,
)
from bot.adapters import ptb as ptb_app
from bot.app import running
from bot.conversation import Incoming, Transport
from bot.flood import FloodControl
from bot.framework import Runtime
from bot.handlers.browse import ProductCallback, ShopCallback
from bot.handlers.buy import QuantityCallback
from bot.handlers.start import MenuCallback
from core.clock import Clock
from core.config import Settings, load_settings
from core.db import table_of
from core.migrate import migrate_afresh
from core.models import Member, Payment, PaymentState, WalletEntry
from core.money import format_plain
from core.payments import Credit
from core.payments.epay import CNY, TRADE_SUCCESS
from core.payments.stars import XTR, StarsProvider
from core.shop import Shop, build_shop
from tests.epay.signing import sign
from tests.factories import tiers_file_with

FRAMEWORKS = ("aiogram", "ptb")
#: Telegram's window for answering a pre_checkout_query, in seconds.
PRE_CHECKOUT_WINDOW = 10.0
#: The flood control's paces: lifted (the machine's limit) and the shop's own.
PACES = ("lifted", "shop")
#: The shop's rate for the bench's invoices (any positive one will do).
STARS_PER_YUAN = Decimal(7)
#: Every top-up in the bench, in 分 (¥10).
TOP_UP = 1000
EPAY_PID = "1001"
EPAY_KEY = "bench-merchant-key-0123456789abcdef"
#: A burst not done in this long is stuck, not slow: the run fails instead of hanging.
BURST_TIMEOUT = 300.0
#: Members the credits are spread over, so 20 at once are mostly different members.
CREDIT_MEMBERS = 100
CONCURRENCIES = (1, 20)
#: What each credit round measures at each concurrency; the order rotates between them.
CREDIT_KINDS = ("baseline", "credit_stars", "credit_epay")


def bench_settings(url: str, redis_url: str | None, data_dir: Path) -> Settings:
    """The shop with Stars and 易支付 configured and risk control's limits out of the way."""
    return load_settings(
        database_url=url,
        redis_url=redis_url,
        telegram_bot_token=TOKEN,
        code_encryption_keys=Fernet.generate_key().decode(),
        data_dir=data_dir,
        tiers_file=tiers_file_with(data_dir, max_orders=BENCH_LIMIT, max_failures=BENCH_LIMIT),
        stars_per_yuan=STARS_PER_YUAN,
        epay_url="https://pay.example.com/",
        epay_pid=EPAY_PID,
        epay_key=EPAY_KEY,
        public_url="https://shop.example.com",
        _env_file=None,
    )


def percentile(samples: Sequence[float], share: float) -> float:
    """The smallest sample with at least `share` of them at or below it."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


# --- 1. pre-checkout under load -----------------------------------------------------------


class TimedApi(NullApi):
    """The null Bot API, noting when each pre-checkout answer arrives and whether it is ok."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: dict[str, tuple[float, bool]] = {}

    def answer(self, method: str, params: Mapping[str, Any]) -> Any:
        if method == "answerPreCheckoutQuery":
            ok = params.get("ok") in (True, "true")
            self.answered[str(params.get("pre_checkout_query_id"))] = (time.perf_counter(), ok)
        return super().answer(method, params)


class Progress:
    """When the runtime was done with each update, and how many ordinary ones it did.

    `Runtime.handle` is the one entry both adapters call, looked up on the instance each
    time, so wrapping it there times every update without touching the bot.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.done: dict[int, float] = {}
        self.ordinary = 0
        self._changed = asyncio.Condition()
        handle = runtime.handle

        async def timed(incoming: Incoming, transport: Transport) -> None:
            try:
                await handle(incoming, transport)
            finally:
                if incoming.update_id is not None:
                    self.done[incoming.update_id] = time.perf_counter()
                if incoming.kind != "pre_checkout":
                    self.ordinary += 1
                async with self._changed:
                    self._changed.notify_all()

        runtime.handle = timed  # type: ignore[method-assign]

    def reset(self) -> None:
        self.done.clear()
        self.ordinary = 0

    async def until(self, reached: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(reached)

    async def handled(self, update_id: int) -> None:
        await self.until(lambda: update_id in self.done)

    async def reached(self, ordinary: int) -> None:
        await self.until(lambda: self.ordinary >= ordinary)


@dataclass
class BurstResult:
    """One burst through one bot at one pace."""

    ordinary: list[float] = field(default_factory=list)
    pre_checkout: list[float] = field(default_factory=list)
    seconds: float = 0.0
    refused_queries: int = 0
    #: Queries answered after Telegram's window (it had cancelled the payment).
    late: int = 0
    #: Queries not answered within Telegram's window after the backlog was done.
    unanswered: int = 0
    #: Ordinary updates refused or apologised for, alerts, quantity taps without a confirmation.
    refused: int = 0
    errors: int = 0
    pays: int = 0
    orders: int = 0

    @property
    def sound(self) -> bool:
        failures = self.refused_queries + self.late + self.unanswered + self.refused + self.errors
        return not failures and self.orders == self.pays


#: What one chat sends, in order: a kind of update (`buy` stands for its three taps).
ChatPlan = list[str]


def chat_plan(per_chat: int, rng: random.Random) -> ChatPlan:
    """A /checkin, a purchase (3 updates), a /level and browsing, shuffled: `per_chat` updates."""
    units = ["checkin", "buy", "level"] + ["browse"] * max(0, per_chat - 5)
    rng.shuffle(units)
    return units


Offer = Callable[[dict[str, Any]], None]


async def feed_one(feed: Callable[[dict[str, Any]], Awaitable[None]], data: dict[str, Any]) -> None:
    """One update into aiogram's dispatcher, as a task of its own (as its polling runs it)."""
    await feed(data)


@asynccontextmanager
async def offering(
    framework: str, runtime: Runtime, settings: Settings, api: NullApi
) -> AsyncIterator[Offer]:
    """Hand updates to the bot as its polling would: aiogram a task each, PTB its queue."""
    if framework == "aiogram":
        tasks: set[asyncio.Task[None]] = set()
        async with aiogram_bot(runtime, api) as feed:

            def offer(data: dict[str, Any]) -> None:
                tasks.add(asyncio.create_task(feed_one(feed, data)))

            yield offer
            await asyncio.gather(*tasks)
        return
    with null_requests(api):
        application = ptb_app.build_application(runtime, settings)
    async with application:
        await application.start()
        try:
            yield lambda data: application.update_queue.put_nowait(
                PtbUpdate.de_json(data, application.bot)
            )
        finally:
            await application.stop()


@dataclass
class Burst:
    """One burst: the chats' backlog and the pre-checkout queries, offered and timed."""

    updates: Updates
    catalog: Catalog
    progress: Progress
    offer: Offer
    rng: random.Random
    offered: dict[int, float] = field(default_factory=dict)
    ordinary: set[int] = field(default_factory=set)
    pays: int = 0
    #: Quantity taps handled without a refusal that drew no confirmation to pay.
    unconfirmed: int = 0

    def send(self, data: dict[str, Any]) -> int:
        update_id = int(data["update_id"])
        self.offered[update_id] = time.perf_counter()
        self.offer(data)
        return update_id

    def ordinary_update(self, data: dict[str, Any]) -> int:
        update_id = self.send(data)
        self.ordinary.add(update_id)
        return update_id

    async def chat(self, member: int, plan: ChatPlan) -> None:
        """Offer a chat's updates at once, but for a pay tap, which needs the confirmation."""
        tap, command = self.updates.tap, self.updates.command
        for unit in plan:
            if unit in ("checkin", "level"):
                self.ordinary_update(command(member, unit))
            elif unit == "browse":
                self.ordinary_update(self.browse(member))
            else:
                product = self.rng.choice(self.catalog.buyable)
                self.ordinary_update(tap(member, ProductCallback(product=product).pack()))
                quantity = QuantityCallback(product=product, quantity=1).pack()
                confirmed = self.ordinary_update(tap(member, quantity))
                await self.progress.handled(confirmed)
                pay = self.updates.pay_data(member)
                if pay is None:
                    self.unconfirmed += 1
                    continue
                self.pays += 1
                self.ordinary_update(tap(member, pay))

    def browse(self, member: int) -> dict[str, Any]:
        choice = self.rng.randrange(4)
        if choice == 0:
            return self.updates.command(member, "start")
        if choice == 1:
            return self.updates.tap(member, MenuCallback(item="shop").pack())
        if choice == 2:
            category = self.rng.choice(self.catalog.categories)
            return self.updates.tap(member, ShopCallback(category=category).pack())
        product = self.rng.choice(self.catalog.products)
        return self.updates.tap(member, ProductCallback(product=product).pack())

    async def queries(self, invoices: list[tuple[int, str, int]], backlog: int) -> list[int]:
        """Offer each (payer, payload, stars) once another share of the backlog is handled."""
        sent: list[int] = []
        for index, (payer, payload, stars) in enumerate(invoices):
            share = index * backlog // len(invoices)
            await self.progress.reached(share)
            update_id = next(self.updates.next_id)
            user = {"id": payer, "is_bot": False, "first_name": f"Member {payer}"}
            query = {
                "id": str(update_id),
                "from": {**user, "language_code": "en"},
                "currency": XTR,
                "total_amount": stars,
                "invoice_payload": payload,
            }
            sent.append(self.send({"update_id": update_id, "pre_checkout_query": query}))
        return sent


@dataclass
class BurstSetup:
    """What every burst on one database shares."""

    runtime: Runtime
    settings: Settings
    catalog: Catalog
    progress: Progress
    refused: set[int]
    errors: ErrorCount
    update_ids: Iterator[int]


async def run_burst(
    setup: BurstSetup, framework: str, pace: str, members: list[int], per_chat: int, queries: int
) -> BurstResult:
    """One burst of `members`' chats with `queries` pre-checkout queries through one bot."""
    runtime = setup.runtime
    # The pace is read when the bot is built: each burst builds its own.
    runtime.flood = FloodControl(per_second=1e9) if pace == "lifted" else FloodControl()
    shop = runtime.shop
    payers = members[:: max(1, len(members) // queries)][:queries]
    invoices = []
    for payer in payers:
        member = await shop.members.by_telegram(payer)
        assert member is not None
        checkout = await shop.payments.start(member.id, TOP_UP, "stars")
        invoices.append((payer, checkout.payment.reference, checkout.payment.charge_amount))
    rng = random.Random(members[0])
    plans = [chat_plan(per_chat, rng) for _ in members]
    backlog = sum(len(plan) + 2 * plan.count("buy") for plan in plans)
    api = TimedApi()
    setup.progress.reset()
    errors_before, orders_before = setup.errors.count, await count_orders(shop.db)
    result = BurstResult()
    started = time.perf_counter()
    async with offering(framework, runtime, setup.settings, api) as offer:
        burst = Burst(Updates(api, setup.update_ids), setup.catalog, setup.progress, offer, rng)
        async with asyncio.timeout(BURST_TIMEOUT):
            chats = asyncio.gather(*(burst.chat(m, p) for m, p in zip(members, plans, strict=True)))
            sent, _ = await asyncio.gather(burst.queries(invoices, backlog), chats)
            await setup.progress.reached(len(burst.ordinary))
        # Queries get Telegram's window more to be answered; one that is not is counted.
        with suppress(TimeoutError):
            async with asyncio.timeout(PRE_CHECKOUT_WINDOW):
                await setup.progress.until(lambda: all(str(q) in api.answered for q in sent))
    result.seconds = time.perf_counter() - started
    done = setup.progress.done
    result.ordinary = [done[u] - burst.offered[u] for u in burst.ordinary]
    for query in sent:
        if str(query) not in api.answered:
            result.unanswered += 1
            continue
        at, ok = api.answered[str(query)]
        result.pre_checkout.append(at - burst.offered[query])
        result.refused_queries += not ok
        result.late += at - burst.offered[query] > PRE_CHECKOUT_WINDOW
    result.refused = len(burst.ordinary & setup.refused) + len(api.alerts) + burst.unconfirmed
    result.errors = setup.errors.count - errors_before
    result.pays = burst.pays
    result.orders = await count_orders(shop.db) - orders_before
    return result


@dataclass
class BurstResults:
    """Every burst on one database: per (framework, pace), one per round."""

    runs: dict[tuple[str, str], list[BurstResult]] = field(default_factory=dict)

    @property
    def sound(self) -> bool:
        return all(run.sound for runs in self.runs.values() for run in runs)


async def bench_bursts(
    url: str,
    redis_url: str | None,
    data_dir: Path,
    *,
    chats: int,
    per_chat: int,
    queries: int,
    rounds: int,
    paces: Sequence[str] = PACES,
) -> BurstResults:
    """Alternate aiogram and PTB (and the paces) for `rounds` rounds on one database."""
    await wipe(url, redis_url)
    settings = bench_settings(url, redis_url, data_dir)
    bursts = rounds * len(FRAMEWORKS) * len(paces)
    errors = ErrorCount()
    logging.getLogger().addHandler(errors)
    results = BurstResults()
    try:
        async with running(settings, clock=Clock()) as runtime:
            catalog = await seed(runtime.shop, chats * bursts, chats * bursts)
            setup = BurstSetup(
                runtime,
                settings,
                catalog,
                Progress(runtime),
                watch_refusals(runtime),
                errors,
                iter(range(1, 10**9)),
            )
            index = 0
            for _ in range(rounds):
                for framework in FRAMEWORKS:
                    for pace in paces:
                        first = FIRST_MEMBER + index * chats
                        members = list(range(first, first + chats))
                        run = await run_burst(setup, framework, pace, members, per_chat, queries)
                        results.runs.setdefault((framework, pace), []).append(run)
                        index += 1
    finally:
        logging.getLogger().removeHandler(errors)
    return results


def report_bursts(name: str, results: BurstResults) -> None:
    print(f"\n== pre-checkout while busy, {name}: from offered to answered, in ms")
    print(
        f"{'':8} {'pace':7} {'latency of':14} {'count':>6} {'p50':>8} {'p99':>8} {'max':>8}"
        f"   {'p50 ratio':>9} {'p99 ratio':>9}  10 s window margin"
    )
    for (framework, pace), runs in results.runs.items():
        ordinary = [t for run in runs for t in run.ordinary]
        checkout = [t for run in runs for t in run.pre_checkout]
        # Ratios per round (same burst), then the median over the rounds.
        p50s = [
            percentile(r.pre_checkout, 0.5) / percentile(r.ordinary, 0.5)
            for r in runs
            if r.pre_checkout
        ]
        p99s = [
            percentile(r.pre_checkout, 0.99) / percentile(r.ordinary, 0.99)
            for r in runs
            if r.pre_checkout
        ]
        for label, samples in (("ordinary", ordinary), ("pre-checkout", checkout)):
            if not samples:
                continue
            line = (
                f"{framework:8} {pace:7} {label:14} {len(samples):6d}"
                f" {percentile(samples, 0.5) * 1000:8.1f} {percentile(samples, 0.99) * 1000:8.1f}"
                f" {max(samples) * 1000:8.1f}"
            )
            if label == "pre-checkout" and p50s:
                worst = max(samples)
                line += (
                    f"   {statistics.median(p50s):8.3f}x {statistics.median(p99s):8.3f}x"
                    f"  {PRE_CHECKOUT_WINDOW - worst:5.2f} s left at worst"
                    f" ({PRE_CHECKOUT_WINDOW / worst:.0f}x under)"
                )
            print(line)
        seconds = "/".join(f"{run.seconds:.1f}" for run in runs)
        failed = sum(run.refused_queries + run.late + run.unanswered for run in runs)
        print(
            f"{'':16} bursts of {sum(len(r.ordinary) for r in runs) // len(runs)} updates"
            f" took {seconds} s; pay taps {sum(r.pays for r in runs)},"
            f" orders {sum(r.orders for r in runs)}; queries refused/late/unanswered {failed};"
            f" updates refused {sum(r.refused for r in runs)}, errors {sum(r.errors for r in runs)}"
        )


# --- 2. credits per second ------------------------------------------------------------------

_payments = table_of(Payment)

#: The columns a credit reads of a payment (`core.payments.service._WITH_MEMBER`).
_COLUMNS = (
    "id, reference, member_id, provider, method, amount, charge_amount, charge_currency,"
    " state, provider_charge_id, then_buy, note, created_at, expires_at, paid_at,"
    " credited_at, refunded_at"
)
_JOINED = ", ".join(f"payments.{c.strip()}" for c in _COLUMNS.split(","))
_WITH_MEMBER = (
    f"SELECT {_JOINED}, members.telegram_id, members.locale, members.balance"
    " FROM payments JOIN members ON members.id = payments.member_id"
)

#: The five statements of a credit as SQLAlchemy sends them to sqlite3, between
#: BEGIN IMMEDIATE and COMMIT.
BASE_SQLITE = (
    f"{_WITH_MEMBER} WHERE payments.reference = ? AND payments.provider = ?",
    f"{_WITH_MEMBER} WHERE payments.provider = ? AND payments.provider_charge_id = ?",
    "UPDATE payments SET state=?, provider_charge_id=?, paid_at=?, credited_at=?"
    f" WHERE payments.id = ? AND payments.state IN (?, ?) RETURNING {_COLUMNS}",
    "UPDATE members SET balance=(members.balance + ?), total_spent=(members.total_spent + ?)"
    " WHERE members.id = ? AND members.balance + ? >= ? RETURNING balance",
    "INSERT INTO wallet_entries (member_id, kind, amount, balance_after, order_id,"
    " payment_id, reason, actor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
)
#: The same five as SQLAlchemy sends them to asyncpg, inside BEGIN and COMMIT.
BASE_POSTGRES = (
    f"{_WITH_MEMBER} WHERE payments.reference = $1::VARCHAR AND payments.provider ="
    " $2::VARCHAR FOR UPDATE OF payments",
    f"{_WITH_MEMBER} WHERE payments.provider = $1::VARCHAR AND payments.provider_charge_id ="
    " $2::VARCHAR",
    "UPDATE payments SET state=$1::VARCHAR, provider_charge_id=$2::VARCHAR,"
    " paid_at=$3::TIMESTAMP WITH TIME ZONE, credited_at=$4::TIMESTAMP WITH TIME ZONE"
    " WHERE payments.id = $5::INTEGER AND payments.state IN ($6::VARCHAR, $7::VARCHAR)"
    f" RETURNING {_JOINED}",
    "UPDATE members SET balance=(members.balance + $1::INTEGER),"
    " total_spent=(members.total_spent + $2::INTEGER) WHERE members.id = $3::INTEGER"
    " AND members.balance + $1::INTEGER >= $4::INTEGER RETURNING members.balance",
    "INSERT INTO wallet_entries (member_id, kind, amount, balance_after, order_id,"
    " payment_id, reason, actor, created_at) VALUES ($1::INTEGER, $2::VARCHAR,"
    " $3::INTEGER, $4::INTEGER, $5::INTEGER, $6::INTEGER, $7::VARCHAR, $8::VARCHAR,"
    " $9::TIMESTAMP WITH TIME ZONE) RETURNING wallet_entries.id",
)
_CREDITABLE = (PaymentState.PENDING.value, PaymentState.EXPIRED.value)


@dataclass(frozen=True)
class TopUp:
    """A pending top-up and the provider's word that it was paid."""

    reference: str
    telegram_id: int
    charge_amount: int
    charge_id: str
    #: 易支付's signed notify; empty for Stars.
    notify: dict[str, str]


async def fresh_top_ups(
    shop: Shop, provider: str, members: list[tuple[int, int]], n: int
) -> list[TopUp]:
    """`n` pending top-ups of `provider` ("stars" or "epay") over `members` (id, Telegram id),
    inserted in one transaction, as `Payments.start` would leave them."""
    now = shop.clock.now()
    if provider == "stars":
        charge, currency, method = StarsProvider(STARS_PER_YUAN).stars_for(TOP_UP), XTR, "stars"
    else:
        charge, currency, method = TOP_UP, CNY, "alipay"
    owners = [members[i % len(members)] for i in range(n)]
    references = ["T" + secrets.token_hex(12) for _ in range(n)]
    rows = [
        {
            "reference": reference,
            "member_id": member_id,
            "provider": provider,
            "method": method,
            "amount": TOP_UP,
            "charge_amount": charge,
            "charge_currency": currency,
            "state": PaymentState.PENDING.value,
            "note": "",
            "created_at": now,
            "expires_at": now + timedelta(minutes=shop.payments.rules.expiry_minutes),
        }
        for reference, (member_id, _) in zip(references, owners, strict=True)
    ]

    def add(conn: Connection) -> None:
        conn.execute(insert(_payments), rows)

    await shop.db.run(add)
    top_ups = []
    for reference, (_, telegram_id) in zip(references, owners, strict=True):
        if provider == "stars":
            # Live Stars charge ids run past 128 characters.
            charge_id = "stx" + secrets.token_urlsafe(102)
            top_ups.append(TopUp(reference, telegram_id, charge, charge_id, {}))
            continue
        charge_id = "2025" + secrets.token_hex(8)
        notify = {
            "pid": EPAY_PID,
            "trade_no": charge_id,
            "out_trade_no": reference,
            "type": method,
            "name": "Wallet top-up",
            "money": format_plain(charge),
            "trade_status": TRADE_SUCCESS,
        }
        notify = {**notify, "sign": sign(notify, EPAY_KEY), "sign_type": "MD5"}
        top_ups.append(TopUp(reference, telegram_id, charge, charge_id, notify))
    return top_ups


async def _at_once(
    concurrency: int, top_ups: list[TopUp], credit: Callable[[TopUp], Awaitable[bool]]
) -> float:
    """Credit every top-up, `concurrency` at a time; per second. A credit that was not
    new (created=False) raises: each top-up here is paid once."""
    pending = iter(top_ups)

    async def worker() -> None:
        for top_up in pending:
            if not await credit(top_up):
                raise AssertionError(f"top-up {top_up.reference} was not credited")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(top_ups) / (time.perf_counter() - started)


def shop_credit(shop: Shop, provider: str) -> Callable[[TopUp], Awaitable[bool]]:
    """One top-up credited through the shop, as the bot or the HTTP server calls it."""

    async def credit(top_up: TopUp) -> bool:
        made: Credit
        if provider == "stars":
            made = await shop.payments.credit_stars(
                top_up.telegram_id, top_up.reference, XTR, top_up.charge_amount, top_up.charge_id
            )
        else:
            made = await shop.payments.credit_epay(top_up.notify)
        return made.created

    return credit


def sqlite_baseline(path: Path, top_ups: list[TopUp], clock: Clock) -> float:
    """The credits' statements in plain sqlite3, one connection, one transaction each."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    lock, seen, mark, move, ledger = BASE_SQLITE
    started = time.perf_counter()
    for top_up in top_ups:
        now = clock.now().replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(lock, (top_up.reference, "stars")).fetchone()
        if conn.execute(seen, ("stars", top_up.charge_id)).fetchone() is not None:
            raise AssertionError(f"charge {top_up.charge_id} seen twice")
        payment_id, member_id, amount = row[0], row[2], row[5]
        conn.execute(
            mark,
            (PaymentState.CREDITED.value, top_up.charge_id, now, now, payment_id, *_CREDITABLE),
        ).fetchone()
        balance = conn.execute(move, (amount, 0, member_id, amount, 0)).fetchone()[0]
        conn.execute(
            ledger,
            (member_id, "topup", amount, balance, None, payment_id,
             f"stars {top_up.charge_id}", "payment:stars", now),
        )  # fmt: skip
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(top_ups) / elapsed


async def postgres_baseline(
    pool: asyncpg.Pool, concurrency: int, top_ups: list[TopUp], clock: Clock
) -> float:
    """The credits' statements in plain asyncpg, `concurrency` connections at once."""
    lock, seen, mark, move, ledger = BASE_POSTGRES

    async def credit(top_up: TopUp) -> bool:
        now = clock.now()
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(lock, top_up.reference, "stars")
            if await conn.fetchrow(seen, "stars", top_up.charge_id) is not None:
                return False
            payment_id, member_id, amount = row["id"], row["member_id"], row["amount"]
            await conn.fetchrow(
                mark, PaymentState.CREDITED.value, top_up.charge_id, now, now, payment_id,
                *_CREDITABLE,
            )  # fmt: skip
            balance = await conn.fetchval(move, amount, 0, member_id, 0)
            await conn.fetchval(
                ledger, member_id, "topup", amount, balance, None, payment_id,
                f"stars {top_up.charge_id}", "payment:stars", now,
            )  # fmt: skip
        return True

    return await _at_once(concurrency, top_ups, credit)


@dataclass
class CreditResults:
    """Credits per second on one database: per (kind, concurrency), one per round."""

    rates: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    baseline: str = ""
    credited: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        return not self.problems


async def bench_credits(url: str, data_dir: Path, *, n: int, rounds: int) -> CreditResults:
    """Rounds of: for each concurrency, the baseline and both credits, in a rotating order."""
    await migrate_afresh(url)
    settings = bench_settings(url, None, data_dir)
    shop = build_shop(settings, clock=Clock())
    results = CreditResults()
    pool: asyncpg.Pool | None = None
    try:
        await seed_members(shop, CREDIT_MEMBERS)
        async with shop.db.read() as session:
            members = [
                (row.id, row.telegram_id)
                for row in await session.execute(select(Member.id, Member.telegram_id))
            ]
        sqlite_path = None if shop.db.is_postgres else Path(make_url(url).database or "")
        if sqlite_path is None:
            plain = make_url(url).set(drivername="postgresql")
            pool = await asyncpg.create_pool(
                plain.render_as_string(hide_password=False),
                min_size=max(CONCURRENCIES),
                max_size=max(CONCURRENCIES),
            )
            results.baseline = "plain asyncpg, one connection per credit in flight"
        else:
            results.baseline = "plain sqlite3, one connection (SQLite has one writer)"
        step = 0
        for _ in range(rounds):
            for concurrency in CONCURRENCIES:
                order = CREDIT_KINDS[step % 3 :] + CREDIT_KINDS[: step % 3]
                step += 1
                for kind in order:
                    provider = "epay" if kind == "credit_epay" else "stars"
                    top_ups = await fresh_top_ups(shop, provider, members, n)
                    if kind != "baseline":
                        rate = await _at_once(concurrency, top_ups, shop_credit(shop, provider))
                    elif pool is not None:
                        rate = await postgres_baseline(pool, concurrency, top_ups, shop.clock)
                    else:
                        assert sqlite_path is not None
                        rate = sqlite_baseline(sqlite_path, top_ups, shop.clock)
                    results.rates.setdefault((kind, concurrency), []).append(rate)
                    results.credited += n
        results.problems = await check_credits(shop, results.credited)
    finally:
        if pool is not None:
            await pool.close()
        await shop.close()
    return results


async def check_credits(shop: Shop, expected: int) -> list[str]:
    """Every top-up credited once, one ledger row each, every balance its ledger's sum."""
    problems = []
    async with shop.db.read() as session:
        states = dict(
            (
                await session.execute(select(Payment.state, func.count()).group_by(Payment.state))
            ).all()
        )
        topups = await session.scalar(
            select(func.count()).select_from(WalletEntry).where(WalletEntry.payment_id.is_not(None))
        )
        ledger = (
            select(WalletEntry.member_id, func.sum(WalletEntry.amount).label("total"))
            .group_by(WalletEntry.member_id)
            .subquery()
        )
        drift = await session.scalar(
            select(func.count())
            .select_from(Member)
            .join(ledger, ledger.c.member_id == Member.id)
            .where(ledger.c.total != Member.balance)
        )
    if states != {PaymentState.CREDITED.value: expected}:
        problems.append(f"payments by state {states}, expected {expected} credited")
    if topups != expected:
        problems.append(f"{topups} ledger rows for {expected} credits")
    if drift:
        problems.append(f"{drift} members whose balance is not their ledger's sum")
    return problems


def report_credits(name: str, results: CreditResults) -> None:
    print(f"\n== credits per second, {name}; baseline: {results.baseline}")
    for concurrency in CONCURRENCIES:
        bases = results.rates[("baseline", concurrency)]
        print(
            f"{'baseline':13} {concurrency:2d} at once {statistics.median(bases):8.0f} credits/s"
            f"  1.000x"
        )
        for kind in CREDIT_KINDS[1:]:
            rates = results.rates[(kind, concurrency)]
            ratios = [rate / base for rate, base in zip(rates, bases, strict=True)]
            rounds = "  ".join(f"{r:.0f}/{b:.0f}" for r, b in zip(rates, bases, strict=True))
            print(
                f"{kind:13} {concurrency:2d} at once {statistics.median(rates):8.0f} credits/s"
                f"  {statistics.median(ratios):.3f}x (median of {len(rates)};"
                f" per round shop/baseline: {rounds})"
            )
    for problem in results.problems:
        print(f"NOT SOUND: {problem}")


# --- the bench ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    chats: int = 30
    per_chat: int = 10
    queries: int = 10
    burst_rounds: int = 2
    paces: tuple[str, ...] = PACES
    credits: int = 300
    credit_rounds: int = 3


async def main(sizes: Sizes) -> bool:
    """Run and report every configured database; False when any run was not sound."""
    sound = True
    with tempfile.TemporaryDirectory() as tmp:
        # (name, the bursts' database, the credits' database, Redis): a SQLite file is
        # migrated new, a PostgreSQL database wiped.
        sqlite = "sqlite+aiosqlite:///" + str(Path(tmp) / "{}.db")
        targets: list[tuple[str, str, str, str | None]] = [
            ("sqlite", sqlite.format("bursts"), sqlite.format("credits"), None)
        ]
        pg_url = os.environ.get("BENCH_DATABASE_URL")
        if pg_url:
            redis_url = os.environ.get("BENCH_REDIS_URL")
            name = "postgresql" + (" + redis" if redis_url else "")
            targets.append((name, pg_url, pg_url, redis_url))
        for name, url, credits_url, redis_url in targets:
            bursts = await bench_bursts(
                url, redis_url, Path(tmp), chats=sizes.chats, per_chat=sizes.per_chat,
                queries=sizes.queries, rounds=sizes.burst_rounds, paces=sizes.paces,
            )  # fmt: skip
            report_bursts(name, bursts)
            credits = await bench_credits(
                credits_url, Path(tmp), n=sizes.credits, rounds=sizes.credit_rounds
            )
            report_credits(name.removesuffix(" + redis"), credits)
            sound = sound and bursts.sound and credits.sound
    if not sound:
        print("\nNOT SOUND: refusals, errors, unanswered queries or miscounted credits (see above)")
    return sound


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chats", type=int, default=Sizes.chats, help="busy chats per burst")
    parser.add_argument(
        "--per-chat", type=int, default=Sizes.per_chat, help="updates per chat (≥ 5)"
    )
    parser.add_argument(
        "--queries", type=int, default=Sizes.queries, help="pre-checkouts per burst"
    )
    parser.add_argument("--burst-rounds", type=int, default=Sizes.burst_rounds)
    parser.add_argument("--pace", choices=(*PACES, "both"), default="both")
    parser.add_argument(
        "--credits", type=int, default=Sizes.credits, help="credits per measurement"
    )
    parser.add_argument("--credit-rounds", type=int, default=Sizes.credit_rounds)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    chosen = Sizes(
        chats=args.chats,
        per_chat=args.per_chat,
        queries=args.queries,
        burst_rounds=args.burst_rounds,
        paces=PACES if args.pace == "both" else (args.pace,),
        credits=args.credits,
        credit_rounds=args.credit_rounds,
    )
    raise SystemExit(0 if asyncio.run(main(chosen)) else 1)

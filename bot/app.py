"""`cardshop run` and `cardshop chat`: build the shop, pick the adapter, serve until stopped.

BOT_FRAMEWORK chooses aiogram (default) or python-telegram-bot (`bot.adapters`); without
a TELEGRAM_BOT_TOKEN the same conversations run in this terminal instead. `run` also
runs the shop's one HTTP server (`bot.http`) when something needs it: the webhook,
易支付 calling back, the reseller API (`bot.api`, unless API_ENABLED is off). The tests
run exactly this (`run`) against a Bot API stand-in.
Dependencies go one way: this module picks an adapter, the adapters know only the
runtime they feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Protocol

from redis.asyncio import BlockingConnectionPool, Redis

from bot.adapters.terminal import chat
from bot.api import ResellerApi
from bot.conversation import Transport
from bot.flood import GLOBAL_PER_SECOND, FloodControl, SharedPace
from bot.framework import UPDATE_SOURCE, Registry, Runtime, ShownMessages
from bot.handlers import ALL_CONVERSATIONS, topup
from bot.handlers.delivery import tell_referrer
from bot.http import HttpServer
from bot.notifier import background
from bot.state import ChatStore, DbChatStore, RedisChatStore
from core.chat_state import ChatStates
from core.clock import Clock
from core.commission import CommissionCredit
from core.config import EPAY_TYPES, Settings, SettingsError
from core.demo import DEMO_BUYER
from core.payments import Credit
from core.shop import Shop, build_shop

log = logging.getLogger(__name__)

#: The terminal chat (`cardshop run` without a token) acts as the demo buyer.
TERMINAL_USER_ID = DEMO_BUYER


#: Where the shared paces live in Redis (`bot.flood.SharedPace`).
TELEGRAM_PACE_KEY = "cardshop:pace:telegram"
BROADCAST_PACE_KEY = "cardshop:pace:broadcast"

#: Redis connections one process keeps open; an update beyond them waits for one.
REDIS_MAX_CONNECTIONS = 32
#: How long an update waits for a free Redis connection before it counts as failed.
REDIS_WAIT_SECONDS = 30.0


def redis_client(
    url: str,
    *,
    max_connections: int = REDIS_MAX_CONNECTIONS,
    wait_seconds: float = REDIS_WAIT_SECONDS,
) -> Redis:
    """A client whose pool waits for a free connection instead of failing.

    redis-py's default asyncio pool raises `MaxConnectionsError` the moment every
    connection is busy, which dropped updates under a burst of buyers; a blocking pool
    makes the burst queue briefly instead.
    """
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_seconds
    )
    return Redis.from_pool(pool)


def build_runtime(shop: Shop, redis: Redis | None = None) -> Runtime:
    """Every conversation over the shop; state and de-duplication in Redis when given.

    A worker behind the ingress (UPDATES_FROM=redis) keeps both in the database even
    with Redis: there an update's claim commits with its effect, so an update a dead
    worker left half done is handled again by another, never lost nor doubled
    (`bot.workers`). With Redis, the flood pace and the broadcast rate are the shop's,
    shared by every process, not each process's own.
    """
    records = ChatStates(shop.db, shop.clock, UPDATE_SOURCE)
    store: ChatStore = (
        RedisChatStore(records, redis, UPDATE_SOURCE)
        if redis is not None and shop.settings.updates_from == "telegram"
        else DbChatStore(records)
    )
    runtime = Runtime(shop, Registry(ALL_CONVERSATIONS), store, redis)
    if shop.settings.updates_from == "redis":
        # A chat moves between workers as partitions are rebalanced, so what this process
        # last drew in a message may be stale: remember nothing, and let Telegram's "not
        # modified" (taken as success) stand for an unchanged edit.
        runtime.shown = ShownMessages(capacity=0)
    if redis is not None:
        runtime.flood = FloodControl(
            shared=SharedPace(redis, TELEGRAM_PACE_KEY, GLOBAL_PER_SECOND, burst=GLOBAL_PER_SECOND)
        )
        shop.operations.broadcasts.pace_with(
            SharedPace(redis, BROADCAST_PACE_KEY, shop.settings.broadcast_rate)
        )
    return runtime


@asynccontextmanager
async def running(settings: Settings, *, clock: Clock | None = None) -> AsyncIterator[Runtime]:
    """The runtime with its shop (and Redis), closed again on the way out.

    `clock` is the shop's one clock (the wall clock unless a test or a replay hands one in).
    """
    shop = build_shop(settings, clock=clock)
    redis = redis_client(settings.redis_url) if settings.redis_url else None
    try:
        yield build_runtime(shop, redis)
    finally:
        if redis is not None:
            await redis.aclose()
        await shop.close()


class TelegramAdapter(Protocol):
    """What `bot.adapters.aiogram` and `bot.adapters.ptb` each offer."""

    def own_transport(
        self, runtime: Runtime, settings: Settings
    ) -> AbstractAsyncContextManager[Transport]: ...

    async def serve(self, runtime: Runtime, settings: Settings, http: HttpServer) -> None: ...


def telegram_adapter(settings: Settings) -> TelegramAdapter:
    """The adapter BOT_FRAMEWORK names, imported only when chosen."""
    if settings.bot_framework == "ptb":
        from bot.adapters import ptb

        return ptb
    from bot.adapters import aiogram

    return aiogram


def own_transport(runtime: Runtime, settings: Settings) -> AbstractAsyncContextManager[Transport]:
    """A client of the configured framework for what the bot sends unprompted.

    Scheduled notices and resumed broadcasts start before any update arrives, so they
    cannot borrow the transport an adapter hands its handlers.
    """
    return telegram_adapter(settings).own_transport(runtime, settings)


#: Tells the member their top-up landed (and buys what they were buying), given the
#: transport that reaches them: `bot.handlers.topup.money_landed`.
MoneyLanded = Callable[[Runtime, Transport, Credit], Awaitable[None]]


def http_server(
    runtime: Runtime, transport: Transport, money_landed: MoneyLanded | None, *, api: bool = True
) -> HttpServer:
    """The HTTP server with the payment gateways' routes the shop is configured for, and
    the reseller API when `api` and API_ENABLED (Redis, when set, shares its limits)."""
    shop = runtime.shop
    http = HttpServer(shop.settings)
    if any(method in EPAY_TYPES for method in shop.payments.methods()):
        landed = None if money_landed is None else partial(money_landed, runtime, transport)
        http.add_epay(shop.payments, landed)
    if api and shop.settings.api_enabled:

        def earned(credit: CommissionCredit) -> None:
            http.later(
                f"telling of commission on order {credit.order_id}",
                tell_referrer(shop, transport, credit),
            )

        http.add_api(ResellerApi(shop, runtime.redis, earned=earned))
    return http


@asynccontextmanager
async def beside_the_chat(
    runtime: Runtime, money_landed: MoneyLanded | None, transport: Transport, *, api: bool = False
) -> AsyncIterator[None]:
    """What runs next to the terminal chat, as next to the Telegram bot: the jobs and
    broadcasts, and the HTTP server (so an 易支付 top-up started in the chat lands there;
    with `api`, the reseller API too, so a script can buy while you watch the chat)."""
    async with (
        background(runtime.shop, transport),
        http_server(runtime, transport, money_landed, api=api).serving(),
    ):
        yield


async def run(
    settings: Settings,
    *,
    clock: Clock | None = None,
    money_landed: MoneyLanded | None = topup.money_landed,
) -> None:
    """Serve the bot, with its jobs, broadcasts and HTTP server next to it, until cancelled.

    `money_landed` is told of each credit a gateway's callback brings (None: only logged).
    """
    if settings.updates_from == "redis" and (
        settings.redis_url is None or settings.telegram_bot_token is None
    ):
        raise SettingsError("UPDATES_FROM=redis: a worker needs REDIS_URL and TELEGRAM_BOT_TOKEN")
    async with running(settings, clock=clock) as runtime:
        if settings.telegram_bot_token is None:
            await chat(
                runtime,
                user_id=TERMINAL_USER_ID,
                lang=None,
                alongside=partial(beside_the_chat, runtime, money_landed, api=True),
            )
            return
        async with own_transport(runtime, settings) as own:
            transport = runtime.shown.over(own)
            async with background(runtime.shop, transport):
                http = http_server(runtime, transport, money_landed)
                await telegram_adapter(settings).serve(runtime, settings, http)


async def until_terminated(serving: Coroutine[Any, Any, None]) -> None:
    """Await `serving`; SIGTERM stops it the way Ctrl-C (SIGINT) does.

    systemd and Docker stop a service with SIGTERM, whose default ends the process on
    the spot, dropping the taps being handled. Here it cancels the serving task instead,
    as `asyncio.run` does on SIGINT: the adapter stops taking updates, lets those in
    flight finish and answer (bounded), and the process exits 0. A second SIGTERM is
    left to its default, for an operator who wants it gone now.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        loop.remove_signal_handler(signal.SIGTERM)
        log.info("SIGTERM: finishing the updates in flight, then stopping")
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        await serving
    except asyncio.CancelledError:
        if not terminated:
            raise
        task.uncancel()
    finally:
        if not terminated:
            loop.remove_signal_handler(signal.SIGTERM)


def main_chat(settings: Settings, *, user_id: int, lang: str | None, admin: bool = False) -> int:
    """`cardshop chat`; `admin` lets this user act as an admin (adds it to ADMIN_IDS)."""
    if admin and user_id not in settings.admin_ids:
        settings = settings.model_copy(update={"admin_ids": [*settings.admin_ids, user_id]})

    async def serve() -> None:
        async with running(settings) as runtime:
            await chat(
                runtime,
                user_id=user_id,
                lang=lang,
                # A member's try-out chat: no API listening (that is `cardshop run`).
                alongside=partial(beside_the_chat, runtime, topup.money_landed, api=False),
            )

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def main_ingress(settings: Settings) -> int:
    """`cardshop ingress`: Telegram's one webhook into Redis streams for the workers."""
    from bot.workers import ingress, ingress_settings_problem

    problem = ingress_settings_problem(settings)
    if problem is not None:
        raise SettingsError(problem)
    return _serve(ingress(settings))


def main_run(settings: Settings) -> int:
    """`cardshop run`; SIGINT and SIGTERM both stop it gracefully with status 0."""
    return _serve(run(settings))


def _serve(serving: Coroutine[Any, Any, None]) -> int:
    """Log to stderr and await `serving` until SIGINT or SIGTERM stops it (status 0)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(until_terminated(serving))
    return 0
    return 0

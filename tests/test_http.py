"""The bot's HTTP server (`bot.http`) over real HTTP: 易支付's notify and return routes.

A notify is signed here the way 易支付 gateways sign (MD5 over the sorted non-empty
parameters but `sign`/`sign_type`, then the key), independently of core's code. The
webhook route is exercised end to end in tests/e2e (test_starter, test_forged).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from bot.app import beside_the_chat, build_runtime
from bot.conversation import Transport
from bot.http import HttpServer, listen_address
from core.clock import ManualClock
from core.config import EPAY_NOTIFY_PATH, EPAY_RETURN_PATH, Settings, SettingsError
from core.models import WalletEntry
from core.payments import Credit, PaymentState
from core.shop import Shop, build_shop
from core.uow import Database
from tests.e2e.harness import free_port

PID = "1001"
KEY = "epay-test-key"


def sign(params: dict[str, str], key: str = KEY) -> dict[str, str]:
    """`params` with the `sign` 易支付 expects, and `sign_type`."""
    signed = {k: v for k, v in params.items() if v != "" and k not in ("sign", "sign_type")}
    text = "&".join(f"{k}={signed[k]}" for k in sorted(signed)) + key
    return {**params, "sign": hashlib.md5(text.encode()).hexdigest(), "sign_type": "MD5"}


@pytest.fixture
def epay_settings(settings: Settings) -> Settings:
    port = free_port()
    return settings.model_copy(
        update={
            "http_listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "epay_url": "http://127.0.0.1:9/",  # never called: a notify needs no query
            "epay_pid": PID,
            "epay_key": SecretStr(KEY),
        }
    )


@pytest.fixture
def epay_shop(epay_settings: Settings, db: Database, clock: ManualClock) -> Shop:
    return build_shop(epay_settings, db=db, clock=clock)


@asynccontextmanager
async def served(
    shop: Shop, landed: Callable[[Credit], Awaitable[None]] | None
) -> AsyncIterator[str]:
    """The 易支付 routes on HTTP_LISTEN; yields the server's root URL."""
    server = HttpServer(shop.settings)
    server.add_epay(shop.payments, landed)
    async with server.serving():
        host, port = listen_address(shop.settings)
        yield f"http://{host}:{port}"


async def pending_top_up(shop: Shop, amount: int = 1_000) -> dict[str, str]:
    """A member's pending 支付宝 top-up, and the notify its gateway sends once paid."""
    member = await shop.members.register(501, display_name="Ann")
    checkout = await shop.payments.start(member.id, amount, "alipay")
    return {
        "pid": PID,
        "trade_no": "2026112210000001",
        "out_trade_no": checkout.payment.reference,
        "type": "alipay",
        "name": "top-up",
        "money": f"{amount // 100}.{amount % 100:02d}",
        "trade_status": "TRADE_SUCCESS",
    }


async def top_up_entries(shop: Shop) -> int:
    async with shop.db.read() as session:
        count = await session.scalar(
            select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "topup")
        )
    return int(count or 0)


async def test_a_notify_replayed_concurrently_credits_once_and_always_reads_success(
    epay_shop: Shop,
) -> None:
    notify = sign(await pending_top_up(epay_shop))
    landed: list[Credit] = []

    async def tell(credit: Credit) -> None:
        landed.append(credit)

    async with served(epay_shop, tell) as root, aiohttp.ClientSession() as session:

        async def call(n: int) -> tuple[int, str, str]:
            send = session.get if n % 2 else session.post
            options: dict[str, Any] = (
                {"params": notify} if n % 2 else {"data": notify}  # GET and POST alike
            )
            async with send(root + EPAY_NOTIFY_PATH, **options) as response:
                return response.status, await response.text(), response.content_type

        answers = await asyncio.gather(*(call(n) for n in range(10)))
    assert answers == [(200, "success", "text/plain")] * 10
    [credit] = landed
    assert credit.created
    assert (credit.balance_before, credit.balance_after) == (0, 1_000)
    assert await top_up_entries(epay_shop) == 1
    member = await epay_shop.members.by_telegram(501)
    assert member is not None
    assert member.balance == 1_000
    payment = await epay_shop.payments.get(notify["out_trade_no"])
    assert payment is not None
    assert payment.state is PaymentState.CREDITED


@pytest.mark.parametrize(
    "forgery",
    ["signature", "amount", "unknown order", "merchant", "not paid", "conflicting values"],
)
async def test_a_forged_notify_is_a_400_credits_nothing_and_is_logged_in_one_line(
    epay_shop: Shop, forgery: str, caplog: pytest.LogCaptureFixture
) -> None:
    notify = await pending_top_up(epay_shop)
    query: dict[str, str] = {}
    match forgery:
        case "signature":
            notify = sign(notify, key="guessed")
        case "amount":
            notify = {**sign(notify), "money": "1000.00"}  # tampered after signing
        case "unknown order":
            notify = sign({**notify, "out_trade_no": "T" + "0" * 24})
        case "merchant":
            notify = sign({**notify, "pid": "2002"})
        case "not paid":
            notify = sign({**notify, "trade_status": "WAIT_BUYER_PAY"})
        case "conflicting values":
            notify = sign(notify)
            query = {"money": "0.01"}
    landed: list[Credit] = []

    async def tell(credit: Credit) -> None:
        landed.append(credit)

    with caplog.at_level(logging.INFO):
        async with served(epay_shop, tell) as root, aiohttp.ClientSession() as session:
            url = root + EPAY_NOTIFY_PATH
            async with session.post(url, params=query, data=notify) as response:
                assert (response.status, await response.text()) == (400, "fail")
    assert landed == []
    assert await top_up_entries(epay_shop) == 0
    payment = await epay_shop.payments.get(notify["out_trade_no"])
    assert payment is None or payment.state is PaymentState.PENDING
    refused = [r for r in caplog.records if "epay notify refused" in r.getMessage()]
    assert len(refused) == 1
    assert "\n" not in refused[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_the_return_page_sends_the_buyer_back_to_the_bot(epay_shop: Shop) -> None:
    async with served(epay_shop, None) as root, aiohttp.ClientSession() as session:
        headers = {"Accept-Language": "en-GB,en;q=0.9"}
        async with session.get(root + EPAY_RETURN_PATH, headers=headers) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
    assert "Go back to the bot" in page


async def test_stopping_lets_the_news_of_a_credit_finish(epay_shop: Shop) -> None:
    """The member is told after the gateway's answer; stopping waits for that (bounded)."""
    notify = sign(await pending_top_up(epay_shop))
    release, told = asyncio.Event(), asyncio.Event()
    stop = asyncio.Event()

    async def tell(credit: Credit) -> None:
        await release.wait()
        told.set()

    async def serve() -> None:
        async with served(epay_shop, tell) as root:
            async with (
                aiohttp.ClientSession() as session,
                session.get(root + EPAY_NOTIFY_PATH, params=notify) as response,
            ):
                assert await response.text() == "success"
            await stop.wait()

    serving = asyncio.create_task(serve())
    stop.set()
    done, _ = await asyncio.wait({serving}, timeout=0.3)
    assert not done  # still telling the member
    release.set()
    await serving
    assert told.is_set()


def test_http_listen_must_be_host_and_port(settings: Settings) -> None:
    with pytest.raises(SettingsError, match="HTTP_LISTEN"):
        listen_address(settings.model_copy(update={"http_listen": "8080"}))
    assert listen_address(settings.model_copy(update={"http_listen": "0.0.0.0:80"})) == (
        "0.0.0.0",
        80,
    )


async def test_a_server_no_route_needs_does_not_listen(settings: Settings) -> None:
    port = free_port()
    server = HttpServer(settings.model_copy(update={"http_listen": f"127.0.0.1:{port}"}))
    assert not server.needed
    async with server.serving():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # the port is still free


async def test_a_port_already_taken_is_a_configuration_error_naming_http_listen(
    epay_shop: Shop,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(
            epay_shop.settings.model_copy(update={"http_listen": f"127.0.0.1:{port}"})
        )
        server.add_epay(epay_shop.payments, None)
        with pytest.raises(SettingsError, match=f"HTTP_LISTEN 127.0.0.1:{port}: .*in use"):
            async with server.serving():
                pass


async def test_a_notify_the_shop_cannot_record_now_is_not_acknowledged(
    epay_settings: Settings, clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database is away: no `success`, so the gateway calls again later."""
    gone = tmp_path / "no-such-folder" / "shop.db"
    shop = build_shop(
        epay_settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{gone}"}),
        clock=clock,
    )
    notify = sign(
        {
            "pid": PID,
            "trade_no": "2026112210000002",
            "out_trade_no": "T" + "3" * 24,
            "type": "alipay",
            "name": "top-up",
            "money": "10.00",
            "trade_status": "TRADE_SUCCESS",
        }
    )
    try:
        with caplog.at_level(logging.ERROR):
            async with served(shop, None) as root, aiohttp.ClientSession() as session:
                url = root + EPAY_NOTIFY_PATH
                async with session.get(url, params=notify) as response:
                    assert (response.status, await response.text()) == (500, "fail")
    finally:
        await shop.close()
    assert "not credited now" in caplog.text


async def test_the_terminal_chat_serves_the_notify_too(epay_shop: Shop) -> None:
    """`cardshop chat` and a tokenless `cardshop run` offer 易支付, so the money must land
    there as well: the chat runs beside the same HTTP server as the Telegram bot."""
    notify = sign(await pending_top_up(epay_shop))
    landed: list[Credit] = []

    async def tell(_runtime: object, _transport: object, credit: Credit) -> None:
        landed.append(credit)

    runtime = build_runtime(epay_shop)
    host, port = listen_address(epay_shop.settings)
    async with (
        beside_the_chat(runtime, tell, cast(Transport, object())),  # nothing is sent
        aiohttp.ClientSession() as session,
        session.get(f"http://{host}:{port}{EPAY_NOTIFY_PATH}", params=notify) as response,
    ):
        assert await response.text() == "success"
        for _ in range(100):
            if landed:
                break
            await asyncio.sleep(0.05)
    assert [credit.balance_after for credit in landed] == [1_000]

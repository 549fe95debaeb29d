"""The reseller API against the running `cardshop run` (`bot.app.run`), over real HTTP.

The bot runs as in the scenarios (polling the Bot API stand-in, on the test's clock)
with API_ENABLED on a free port; requests are signed here from the issue's formula
(`tests.test_api_signing.by_the_issue`), not with the server's code, and sent with
aiohttp's client. After each test the `db` fixture checks that every balance is the
sum of its ledger. The API does not depend on the chat framework, so it runs on aiogram.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, update

from bot.api.routes import ROUTES
from bot.app import run
from core.clock import ManualClock
from core.config import Settings
from core.models import ApiNonce, Code, Member, Order, WalletEntry
from core.shop import Shop
from core.uow import Database
from tests.botapi import BotApiStub
from tests.e2e.harness import free_port
from tests.factories import make_member, make_product, tiers_file_with
from tests.test_api_signing import by_the_issue

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PRICE = 1_000  # 分; platinum pays 80 %
PLATINUM_PRICE = 800


@pytest.fixture
def adapter() -> str:
    return "aiogram"


def limited_tiers(folder: Path, per_minute: int) -> Path:
    """The shipped ladder with every tier's API rate set to `per_minute` and the purchase
    risk limits out of the way (a race of 200 orders is not a buyer to pause)."""
    path = tiers_file_with(folder, max_orders=100_000, max_failures=100_000)
    text = re.sub(
        r"^api_requests_per_minute = \d+",
        f"api_requests_per_minute = {per_minute}",
        path.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Key:
    member_id: int
    key_id: str
    secret: str


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def error(self) -> str | None:
        return self.body.get("error")


class Client:
    """Signs and sends requests as a reseller's program would, on the shop's clock."""

    def __init__(self, session: aiohttp.ClientSession, root: str, clock: ManualClock) -> None:
        self.session = session
        self.root = root
        self.clock = clock

    async def call(
        self,
        key: Key | None,
        method: str,
        path: str,
        payload: object = None,
        *,
        raw: bytes | None = None,
        nonce: str | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
        signed_path: str | None = None,
        signed_body: bytes | None = None,
        drop: str | None = None,
    ) -> Answer:
        body = raw if raw is not None else b"" if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if key is not None:
            stamp = str(timestamp if timestamp is not None else int(self.clock.now().timestamp()))
            nonce = nonce or secrets.token_hex(12)
            signature = by_the_issue(
                secret or key.secret, stamp, nonce, method,
                signed_path or path, body if signed_body is None else signed_body,
            )  # fmt: skip
            headers |= {
                "X-Api-Key": key.key_id,
                "X-Timestamp": stamp,
                "X-Nonce": nonce,
                "X-Signature": signature,
            }
            headers.pop(drop or "", None)
        async with self.session.request(
            method, self.root + path, data=body or None, headers=headers
        ) as response:
            answer = await response.json(content_type=None)
            return Answer(response.status, answer, dict(response.headers))


@dataclass
class Served:
    """What the tests set up through the shop's own services (the server has its own)."""

    shop: Shop
    client: Client

    async def key(self, *, balance: int = 100_000, tier: str = "platinum") -> Key:
        member = await make_member(self.shop.db, self.shop.clock, balance=balance, tier=tier)
        issued = await self.shop.api_keys.issue(member)
        return Key(member, issued.key.key_id, issued.secret)


@pytest.fixture
def serve(
    api: BotApiStub, bot_settings: Settings, shop: Shop, clock: ManualClock, tmp_path: Path
) -> Callable[..., contextlib.AbstractAsyncContextManager[Served]]:
    """`async with serve(per_minute=..., redis=...) as it`: `cardshop run` with the API on
    a free port; `it.client` talks to it, `it.shop` sets up members and keys."""

    @contextlib.asynccontextmanager
    async def start(
        per_minute: int = 10_000, redis: bool = False, platinum_reserves: bool = True
    ) -> AsyncIterator[Served]:
        tiers = limited_tiers(tmp_path, per_minute)
        if not platinum_reserves:  # platinum is the first tier with `reservation`
            text = tiers.read_text(encoding="utf-8")
            tiers.write_text(text.replace("reservation = true", "reservation = false", 1))
        settings = bot_settings.model_copy(
            update={
                "api_enabled": True,
                "tiers_file": tiers,
                "redis_url": REDIS_URL if redis else None,
            }
        )
        async with running_api(settings, clock) as root, aiohttp.ClientSession() as session:
            yield Served(shop, Client(session, root, clock))

    return start


@contextlib.asynccontextmanager
async def running_api(settings: Settings, clock: ManualClock) -> AsyncIterator[str]:
    """`bot.app.run` with the API on its own free port, once it answers there."""
    port = free_port()
    settings = settings.model_copy(update={"http_listen": f"127.0.0.1:{port}"})
    root = f"http://127.0.0.1:{port}"
    task = asyncio.create_task(run(settings, clock=clock))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                if task.done():
                    task.result()
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(root + "/api/v1/openapi.json") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the API never answered")
        yield root
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def snapshot(db: Database) -> dict[str, object]:
    """Everything a refused request must leave as it was."""
    async with db.read() as session:
        balances = (await session.execute(select(Member.id, Member.balance))).all()
        return {
            "balances": sorted(tuple(row) for row in balances),
            "orders": await session.scalar(select(func.count(Order.id))),
            "ledger": await session.scalar(select(func.count(WalletEntry.id))),
            "unsold": await session.scalar(
                select(func.count(Code.id)).where(Code.order_id.is_(None))
            ),
            "held": await session.scalar(
                select(func.count(Code.id)).where(Code.reserved_by.is_not(None))
            ),
            "nonces": await session.scalar(select(func.count()).select_from(ApiNonce)),
        }


async def a_product(it: Served, codes: int = 10, **options: Any) -> str:
    """A product on sale at PRICE with `codes` codes; its SKU."""
    shop = it.shop
    product_id, _ = await make_product(
        shop.db, shop.vault, shop.clock, price=PRICE, codes=codes, **options
    )
    return (await shop.catalog.product(product_id)).sku


def order(sku: str, quantity: int = 1, key: str | None = None, **more: object) -> dict[str, object]:
    return {"sku": sku, "quantity": quantity, "idempotency_key": key or secrets.token_hex(8)} | more


# --- signatures -----------------------------------------------------------------------------


async def test_every_signature_failure_is_a_401_that_changes_nothing_and_is_logged(
    serve: Callable[..., Any], db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve() as it:
        client = it.client
        key, other = await it.key(), await it.key()
        sku = await a_product(it)
        revoked = await it.key()
        await it.shop.api_keys.revoke(revoked.member_id, revoked.key_id)
        now = int(it.shop.clock.now().timestamp())
        path = "/api/v1/orders"
        used = secrets.token_hex(8)
        first = await client.call(key, "POST", path, order(sku), nonce=used)
        assert first.status == 201, first.body
        before = await snapshot(db)
        unknown = Key(key.member_id, "ak_" + "0" * 16, key.secret)
        failures: dict[str, dict[str, Any]] = {
            "wrong signature": {"secret": other.secret},
            "old timestamp": {"timestamp": now - 301},
            "future timestamp": {"timestamp": now + 301},
            "timestamp not a number": {"timestamp": "soon"},
            "replayed nonce": {"nonce": used},
            "unknown key": {"key": unknown},
            "revoked key": {"key": revoked},
            "tampered body": {"signed_body": json.dumps(order(sku, 2)).encode()},
            "tampered path": {"signed_path": "/api/v1/reservations"},
            "tampered query": {"signed_path": path + "?x=1"},
            **{f"no {name}": {"drop": name} for name in
               ("X-Api-Key", "X-Timestamp", "X-Nonce", "X-Signature")},
        }  # fmt: skip
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for case, change in failures.items():
                send = {"key": key} | change
                answer = await client.call(send.pop("key"), "POST", path, order(sku), **send)
                assert (answer.status, answer.error) == (401, "unauthorized"), case
                assert answer.body["message"], case
        assert await snapshot(db) == before
        refused = [r for r in caplog.records if "api: refused" in r.getMessage()]
        assert len(refused) == len(failures)
        assert all("\n" not in r.getMessage() for r in refused)
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        # The secret and the signature never reach the log.
        assert key.secret not in caplog.text


async def test_the_document_and_the_docs_need_no_signature_and_unknown_paths_are_json_404s(
    serve: Callable[..., Any],
) -> None:
    async with serve() as it, aiohttp.ClientSession() as session:
        root = it.client.root
        async with session.get(root + "/api/v1/openapi.json") as response:
            document = await response.json()
        assert response.status == 200
        documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
        assert documented == {(route.method, route.path) for route in ROUTES}
        async with session.get(root + "/api/v1/docs") as response:
            assert (response.status, response.content_type) == (200, "text/html")
            assert "X-Signature" in await response.text()
        for method, path in [("GET", "/api/v1/nothing"), ("PUT", "/api/v1/orders")]:
            async with session.request(method, root + path) as response:
                assert response.status == 404
                assert (await response.json())["error"] == "not_found"


# --- buying ---------------------------------------------------------------------------------


async def test_products_balance_orders_and_polling_read_as_the_member_sees_them(
    serve: Callable[..., Any], clock: ManualClock
) -> None:
    async with serve() as it:
        client = it.client
        key, stranger = await it.key(balance=10_000), await it.key()
        sku = await a_product(it, codes=5, max_per_order=3)

        products = await client.call(key, "GET", "/api/v1/products")
        assert products.status == 200
        assert products.body["tier"] == "platinum"
        [line] = [p for p in products.body["products"] if p["sku"] == sku]
        assert line | {"names": None} == {
            "sku": sku, "names": None, "unit_price": PLATINUM_PRICE, "currency": "CNY",
            "stock": 5, "reserved": 0, "max_per_order": 3,
        }  # fmt: skip

        balance = await client.call(key, "GET", "/api/v1/balance")
        assert balance.body == {
            "balance": 10_000, "currency": "CNY", "points": 0,
            "tier": {"key": "platinum", "names": {"zh_CN": "铂金会员", "en": "Platinum"}},
        }  # fmt: skip

        placed = await client.call(key, "POST", "/api/v1/orders", order(sku, 2))
        assert placed.status == 201
        body = placed.body
        assert (body["quantity"], body["total"], body["unit_price"]) == (2, 1_600, PLATINUM_PRICE)
        assert (body["balance_after"], body["created"], body["status"]) == (
            8_400,
            True,
            "delivered",
        )
        assert len(set(body["codes"])) == 2

        again = await client.call(key, "GET", f"/api/v1/orders/{body['id']}")
        assert again.status == 200
        assert again.body["codes"] == body["codes"]
        theirs = await client.call(stranger, "GET", f"/api/v1/orders/{body['id']}")
        assert (theirs.status, theirs.error) == (404, "order_not_found")
        huge = await client.call(key, "GET", "/api/v1/orders/99999999999999999999")
        assert huge.status == 404

        since = (clock.now() - timedelta(minutes=1)).isoformat()
        polled = await client.call(key, "GET", f"/api/v1/orders?since={since.replace('+', '%2B')}")
        assert polled.status == 200, polled.body
        assert [o["id"] for o in polled.body["orders"]] == [body["id"]]
        assert polled.body["orders"][0]["codes"] is None
        later = (clock.now() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert (await client.call(key, "GET", f"/api/v1/orders?since={later}")).body == {
            "orders": []
        }
        for bad in ("yesterday", "2026-11-22T10:00:00", "1700000000", ""):
            refused = await client.call(key, "GET", f"/api/v1/orders?since={bad}")
            assert (refused.status, refused.error) == (422, "invalid_input"), bad
        missing = await client.call(key, "GET", "/api/v1/orders")
        assert (missing.status, missing.body["params"]["field"]) == (422, "since")


async def test_200_concurrent_orders_for_the_last_5_codes_sell_exactly_5(
    serve: Callable[..., Any], db: Database
) -> None:
    async with serve() as it:
        keys = [await it.key(balance=100_000) for _ in range(4)]
        sku = await a_product(it, codes=5)
        answers = await asyncio.gather(
            *(it.client.call(keys[n % 4], "POST", "/api/v1/orders", order(sku)) for n in range(200))
        )
    sold = [a for a in answers if a.status == 201]
    refused = [a for a in answers if a.status != 201]
    assert len(sold) == 5
    assert {(a.status, a.error) for a in refused} == {(409, "out_of_stock")}
    assert all(a.body["message"] == "Sorry, this item is sold out for now." for a in refused)
    codes = [code for a in sold for code in a.body["codes"]]
    assert len(set(codes)) == 5
    state = await snapshot(db)
    assert (state["orders"], state["unsold"]) == (5, 0)
    balances = dict(state["balances"])  # type: ignore[call-overload]
    assert sum(100_000 - balances[k.member_id] for k in keys) == 5 * PLATINUM_PRICE


async def test_one_idempotency_key_sent_20_times_at_once_is_one_order(
    serve: Callable[..., Any], db: Database
) -> None:
    async with serve() as it:
        key = await it.key(balance=10_000)
        sku = await a_product(it)
        body = order(sku, 2, key="batch-2026-11-22")
        answers = await asyncio.gather(
            *(it.client.call(key, "POST", "/api/v1/orders", body) for _ in range(20))
        )
        assert sorted(a.status for a in answers) == [200] * 19 + [201]
        assert len({a.body["id"] for a in answers}) == 1
        assert len({tuple(a.body["codes"]) for a in answers}) == 1
        reused = order(sku, 3, key="batch-2026-11-22")
        other = await it.client.call(key, "POST", "/api/v1/orders", reused)
        assert (other.status, other.error) == (409, "idempotency_conflict")
    state = await snapshot(db)
    assert state["orders"] == 1
    assert (key.member_id, 10_000 - 2 * PLATINUM_PRICE) in state["balances"]  # type: ignore[operator]
    async with db.read() as session:
        stored = await session.scalar(select(Order.idempotency_key))
    assert stored == "api:batch-2026-11-22"


async def test_max_total_below_the_price_is_a_409_and_nothing_is_charged(
    serve: Callable[..., Any], db: Database
) -> None:
    async with serve() as it:
        key = await it.key(balance=10_000)
        sku = await a_product(it)
        before = await snapshot(db)
        refused = await it.client.call(
            key, "POST", "/api/v1/orders", order(sku, 2, max_total=2 * PLATINUM_PRICE - 1)
        )
        assert (refused.status, refused.error) == (409, "price_above_limit")
        assert refused.body["params"]["total"] == 2 * PLATINUM_PRICE
        assert "Nothing was charged" in refused.body["message"]
        after = await snapshot(db)
        assert {k: v for k, v in after.items() if k != "nonces"} == {
            k: v for k, v in before.items() if k != "nonces"
        }
        exact = await it.client.call(
            key, "POST", "/api/v1/orders", order(sku, 2, max_total=2 * PLATINUM_PRICE)
        )
        assert exact.status == 201


async def test_bad_bodies_are_400_or_422_and_change_nothing(
    serve: Callable[..., Any], db: Database
) -> None:
    async with serve() as it:
        key = await it.key(balance=10_000)
        sku = await a_product(it)
        before = await snapshot(db)
        cases: list[tuple[bytes, int, str]] = [
            (b"{not json", 400, "bad_request"),
            (b"", 400, "bad_request"),
            (b"[1, 2]", 422, "invalid_input"),
            (json.dumps({"sku": sku, "quantity": 1}).encode(), 422, "invalid_input"),
            (json.dumps(order(sku, "1")).encode(), 422, "invalid_input"),  # type: ignore[arg-type]
            (json.dumps(order(sku, 0)).encode(), 422, "invalid_input"),
            (json.dumps(order(sku, 10**30)).encode(), 422, "invalid_input"),
            (json.dumps(order(sku, 101)).encode(), 422, "quantity_out_of_range"),
            (json.dumps(order(sku, max_total=-1)).encode(), 422, "invalid_input"),
            (json.dumps(order(sku, key="x" * 61)).encode(), 422, "invalid_input"),
            (json.dumps(order(sku, extra=1)).encode(), 422, "invalid_input"),
            (json.dumps(order("NO-SUCH-SKU")).encode(), 404, "product_not_found"),
            (json.dumps(order("bad sku!")).encode(), 422, "invalid_input"),
        ]
        for raw, status, error in cases:
            answer = await it.client.call(key, "POST", "/api/v1/orders", raw=raw)
            assert (answer.status, answer.error) == (status, error), raw
            assert answer.body["message"]
        after = await snapshot(db)
    # Refused purchases are counted for risk control, but no money or code moved.
    assert {k: v for k, v in after.items() if k != "nonces"} == {
        k: v for k, v in before.items() if k != "nonces"
    }


async def test_the_balance_refusal_reads_as_the_bot_says_it(serve: Callable[..., Any]) -> None:
    async with serve() as it:
        key = await it.key(balance=500)
        sku = await a_product(it)
        refused = await it.client.call(key, "POST", "/api/v1/orders", order(sku))
    assert (refused.status, refused.error) == (409, "insufficient_balance")
    assert refused.body["params"] == {"balance": 500, "required": 800, "missing": 300}
    assert refused.body["message"] == (
        "Your balance is ¥5.00, ¥3.00 short for this. Please top up first."
    )


# --- tiers and limits -----------------------------------------------------------------------


async def test_a_downgraded_member_is_refused_403_with_the_reason_until_the_tier_returns(
    serve: Callable[..., Any], db: Database
) -> None:
    async with serve() as it:
        key = await it.key()
        tiers = it.shop.tiers
        await tiers.set_tier(key.member_id, "gold", actor="test", reason="downgrade")
        before = await snapshot(db)
        refused = await it.client.call(key, "GET", "/api/v1/balance")
        assert (refused.status, refused.error) == (403, "api_not_allowed")
        assert refused.body["message"] == "API access is not part of Gold."
        assert refused.body["params"] == {"tier": "gold"}
        after = await snapshot(db)
        assert {k: v for k, v in after.items() if k != "nonces"} == {
            k: v for k, v in before.items() if k != "nonces"
        }
        await tiers.set_tier(key.member_id, "platinum", actor="test", reason="back")
        assert (await it.client.call(key, "GET", "/api/v1/balance")).status == 200


async def test_past_the_tiers_rate_a_key_gets_429_with_retry_after(
    serve: Callable[..., Any], clock: ManualClock
) -> None:
    async with serve(per_minute=3) as it:
        key, other = await it.key(), await it.key()
        statuses = [(await it.client.call(key, "GET", "/api/v1/balance")).status for _ in range(3)]
        assert statuses == [200] * 3
        limited = await it.client.call(key, "GET", "/api/v1/balance")
        assert (limited.status, limited.error) == (429, "rate_limited")
        assert limited.headers["Retry-After"] == "60"
        assert limited.body["params"] == {"limit": 3, "retry_after": 60}
        # Per key: another key is not slowed down.
        assert (await it.client.call(other, "GET", "/api/v1/balance")).status == 200
        clock.advance(timedelta(seconds=61))
        assert (await it.client.call(key, "GET", "/api/v1/balance")).status == 200


async def test_with_redis_two_servers_share_the_rate_and_the_nonces(
    serve: Callable[..., Any], bot_settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    async with serve(per_minute=3, redis=True) as it:
        key = await it.key()
        second = bot_settings.model_copy(
            update={
                "api_enabled": True,
                "tiers_file": limited_tiers(tmp_path, 3),
                "redis_url": REDIS_URL,
            }
        )
        async with running_api(second, clock) as root:
            other = Client(it.client.session, root, clock)
            nonce = secrets.token_hex(8)
            assert (await it.client.call(key, "GET", "/api/v1/balance", nonce=nonce)).status == 200
            replay = await other.call(key, "GET", "/api/v1/balance", nonce=nonce)
            assert (replay.status, replay.error) == (401, "unauthorized")
            assert (await other.call(key, "GET", "/api/v1/balance")).status == 200
            assert (await it.client.call(key, "GET", "/api/v1/balance")).status == 200
            limited = await other.call(key, "GET", "/api/v1/balance")
            assert (limited.status, limited.headers.get("Retry-After")) == (429, "60")


# --- reservations ---------------------------------------------------------------------------


async def test_reserving_listing_and_releasing_by_api(
    serve: Callable[..., Any], db: Database
) -> None:
    async with serve() as it:
        key, rival = await it.key(balance=10_000), await it.key(balance=10_000)
        sku = await a_product(it, codes=5)
        held = await it.client.call(
            key, "POST", "/api/v1/reservations", {"sku": sku, "quantity": 3}
        )
        assert held.status == 201, held.body
        assert (held.body["quantity"], held.body["remaining"]) == (3, 3)
        mine = await it.client.call(key, "GET", "/api/v1/products")
        [line] = [p for p in mine.body["products"] if p["sku"] == sku]
        assert (line["stock"], line["reserved"]) == (5, 3)
        theirs = await it.client.call(rival, "GET", "/api/v1/products")
        [line] = [p for p in theirs.body["products"] if p["sku"] == sku]
        assert (line["stock"], line["reserved"]) == (2, 0)
        too_many = await it.client.call(rival, "POST", "/api/v1/orders", order(sku, 3))
        assert (too_many.status, too_many.error) == (409, "out_of_stock")
        listed = await it.client.call(key, "GET", "/api/v1/reservations")
        assert [r["id"] for r in listed.body["reservations"]] == [held.body["id"]]
        path = f"/api/v1/reservations/{held.body['id']}"
        assert (await it.client.call(rival, "DELETE", path)).status == 404
        released = await it.client.call(key, "DELETE", path)
        assert released.body == {"id": held.body["id"], "released": 3}
        assert (await it.client.call(key, "DELETE", path)).error == "reservation_not_found"
        assert (await snapshot(db))["held"] == 0


async def test_reservations_need_a_tier_with_reservation(serve: Callable[..., Any]) -> None:
    async with serve(platinum_reserves=False) as it:
        key = await it.key()
        sku = await a_product(it)
        for method, path, payload in [
            ("GET", "/api/v1/reservations", None),
            ("POST", "/api/v1/reservations", {"sku": sku, "quantity": 1}),
            ("DELETE", "/api/v1/reservations/1", None),
        ]:
            refused = await it.client.call(key, method, path, payload)
            assert (refused.status, refused.error) == (403, "not_allowed_for_tier"), path
            assert refused.body["message"] == "This is available from Diamond up."
        assert (await it.client.call(key, "GET", "/api/v1/products")).status == 200


# --- the docs page --------------------------------------------------------------------------


async def test_the_docs_pages_python_example_works_as_pasted(
    serve: Callable[..., Any], db: Database, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example signs with `time.time()`: here that reads the shop's clock, as the
    machine's clock and the shop's agree in production."""
    monkeypatch.setattr(time, "time", lambda: clock.now().timestamp())
    async with serve() as it, aiohttp.ClientSession() as session:
        key = await it.key(balance=10_000)
        sku = await a_product(it)
        async with session.get(it.client.root + "/api/v1/docs") as response:
            page = await response.text()
        blocks = re.findall(r"<pre><code>(.*?)</code></pre>", page, re.DOTALL)
        [example] = [html.unescape(b) for b in blocks if "import hashlib" in html.unescape(b)]
        for name, value in {
            "CARDSHOP_API": it.client.root,
            "CARDSHOP_KEY_ID": key.key_id,
            "CARDSHOP_SECRET": key.secret,
            "CARDSHOP_SKU": sku,
        }.items():
            monkeypatch.setenv(name, value)

        def paste_and_run() -> str:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(example, "example.py", "exec"), {"__name__": "__main__"})
            return printed.getvalue()

        printed = await asyncio.to_thread(paste_and_run)
    balance_line, order_line = printed.splitlines()
    assert balance_line.startswith("(200, {'balance': 10000")
    assert order_line.startswith("(201, {'id': ")
    state = await snapshot(db)
    assert state["orders"] == 1
    assert (key.member_id, 10_000 - PLATINUM_PRICE) in state["balances"]  # type: ignore[operator]


async def test_an_api_order_tells_the_referrer_of_their_commission_once(
    serve: Callable[..., Any], api: BotApiStub
) -> None:
    async with serve() as it:
        shop = it.shop
        referrer = await make_member(shop.db, shop.clock, tier="platinum", telegram_id=4242)
        key = await it.key()
        async with shop.db.transaction() as session:
            await session.execute(
                update(Member).where(Member.id == key.member_id).values(referrer_id=referrer)
            )
            await session.execute(update(Member).where(Member.id == referrer).values(locale="en"))
        sku = await a_product(it)
        placed = await it.client.call(key, "POST", "/api/v1/orders", order(sku, 2, key="ref-1"))
        again = await it.client.call(key, "POST", "/api/v1/orders", order(sku, 2, key="ref-1"))
        assert (placed.status, again.status) == (201, 200)

        def told() -> list[str]:
            return [m.text or "" for m in api.sent_to(4242) if "commission" in (m.text or "")]

        await api.wait_for(told, what="the commission notice")
        await asyncio.sleep(0.2)  # a second notice would be on its way by now
        # Platinum earns 3 % of the 1,600 the order cost.
        assert told() == ["💰 +¥0.48 commission from an order of a member you referred (b***)."]

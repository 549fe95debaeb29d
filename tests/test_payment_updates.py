"""Payment updates without Telegram: read alike from both frameworks, routed by the runtime.

A pre-checkout query is answered at once (no chat lock, no registration), ok only for
the payer's own pending top-up, else refused in the payer's language; a payment message
goes to the handler a conversation registered for it, once, under the chat's lock.
End-to-end behaviour over the real adapters is in tests/e2e/test_payments_plumbing.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiogram.types
import pytest
import telegram
from pydantic import SecretStr

from bot.adapters.aiogram import make_bot
from bot.adapters.ptb import build_application
from bot.adapters.screen import TerminalTransport, chat_namer
from bot.app import build_runtime
from bot.conversation import (
    Context,
    Conversation,
    Document,
    Incoming,
    Keyboard,
    RefundRefusedError,
)
from bot.framework import Registry, Runtime
from bot.incoming import incoming_from
from bot.payments import pre_checkout_refusal
from core.clock import ManualClock
from core.config import Settings
from core.payments import PreCheckoutRefusal
from core.shop import Shop, build_shop
from core.uow import Database

PAYER = {"id": 501, "is_bot": False, "first_name": "Ann", "language_code": "en"}
CHAT = {"id": 501, "type": "private"}
PAYMENT = {"currency": "XTR", "total_amount": 70, "invoice_payload": "T0123abc"}

PRE_CHECKOUT = {"update_id": 10, "pre_checkout_query": {"id": "q1", "from": PAYER, **PAYMENT}}
PAID = {
    "update_id": 11,
    "message": {
        "message_id": 5,
        "date": 1_700_000_000,
        "chat": CHAT,
        "from": PAYER,
        "successful_payment": {
            **PAYMENT,
            "telegram_payment_charge_id": "stxCHARGE",
            "provider_payment_charge_id": "",
        },
    },
}
REFUNDED = {
    "update_id": 12,
    "message": {
        "message_id": 6,
        "date": 1_700_000_000,
        "chat": CHAT,
        "from": PAYER,
        "refunded_payment": {**PAYMENT, "telegram_payment_charge_id": "stxCHARGE"},
    },
}


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        (
            PRE_CHECKOUT,
            {"kind": "pre_checkout", "update_id": 10, "pre_checkout_id": "q1", "charge_id": None},
        ),
        (PAID, {"kind": "paid", "update_id": 11, "message_id": 5, "charge_id": "stxCHARGE"}),
        (
            REFUNDED,
            {"kind": "refunded", "update_id": 12, "message_id": 6, "charge_id": "stxCHARGE"},
        ),
    ],
)
def test_payment_updates_read_alike_from_both_frameworks(
    update: dict[str, Any], expected: dict[str, Any]
) -> None:
    from_aiogram = incoming_from(aiogram.types.Update.model_validate(update), "shop_bot")
    from_ptb = incoming_from(telegram.Update.de_json(update, None), "shop_bot")
    assert from_aiogram == from_ptb
    assert from_aiogram is not None
    for field, value in {
        **expected,
        "user_id": 501,
        "chat_id": 501,
        "language_code": "en",
        "currency": "XTR",
        "total_amount": 70,
        "invoice_payload": "T0123abc",
    }.items():
        assert getattr(from_aiogram, field) == value, field


def test_registry_refuses_two_handlers_for_one_payment_kind() -> None:
    first, second = Conversation("first"), Conversation("second")

    @first.payment("paid")
    async def one(ctx: Context) -> None: ...

    @second.payment("paid")
    async def two(ctx: Context) -> None: ...

    with pytest.raises(ValueError, match="payment 'paid' is registered twice"):
        Registry([first, second])


# --- the runtime, over a recording transport -----------------------------------------------


class PaymentTransport:
    """Records what the runtime sends and answers; a payment test needs nothing else."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.pre_checkouts: list[tuple[str, bool, str | None]] = []

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        self.sent.append((chat_id, text))
        return len(self.sent)

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        raise AssertionError("nothing here edits")

    async def copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        raise AssertionError("nothing here copies")

    async def answer_callback(
        self, callback_id: str, text: str | None = None, alert: bool = False
    ) -> None:
        raise AssertionError("nothing here taps")

    async def send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None = None
    ) -> int:
        raise AssertionError("nothing here sends files")

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> int:
        raise AssertionError("nothing here sends photos")

    async def download(self, document: Document) -> bytes:
        raise AssertionError("nothing here downloads")

    async def send_invoice(
        self, chat_id: int, title: str, description: str, payload: str, stars: int
    ) -> int:
        raise AssertionError("the runtime sends no invoice")

    async def answer_pre_checkout(self, query_id: str, ok: bool, error: str | None = None) -> None:
        self.pre_checkouts.append((query_id, ok, error))

    async def refund_star_payment(self, user_id: int, charge_id: str) -> None:
        raise AssertionError("the runtime refunds nothing")


@pytest.fixture
def stars_shop(settings: Settings, db: Database, clock: ManualClock) -> Shop:
    """A shop taking Stars at 10 per yuan."""
    stars = settings.model_copy(update={"stars_per_yuan": Decimal(10)})
    return build_shop(stars, db=db, clock=clock)


def pre_checkout(
    payload: str,
    stars: int,
    *,
    user_id: int = 501,
    language_code: str | None = "en",
    query_id: str = "q1",
    currency: str = "XTR",
) -> Incoming:
    return Incoming(
        kind="pre_checkout",
        user_id=user_id,
        chat_id=user_id,
        update_id=None,
        pre_checkout_id=query_id,
        currency=currency,
        total_amount=stars,
        invoice_payload=payload,
        language_code=language_code,
    )


async def test_a_pre_checkout_is_answered_while_the_payers_chat_is_busy(
    stars_shop: Shop,
) -> None:
    """Another update of the payer's holds the chat's lock: the query does not wait for it."""
    runtime, transport = build_runtime(stars_shop), PaymentTransport()
    member = await stars_shop.members.register(501, display_name="Ann")
    checkout = await stars_shop.payments.start(member.id, 1_000, "stars")
    invoice = checkout.invoice
    assert invoice is not None
    async with runtime.locks.hold(501):
        await asyncio.wait_for(
            runtime.handle(pre_checkout(invoice.payload, invoice.stars), transport), 30
        )
    assert transport.pre_checkouts == [("q1", True, None)]


@pytest.mark.parametrize(
    ("case", "refusal"),
    [
        ("unknown", PreCheckoutRefusal.UNKNOWN),
        ("foreign", PreCheckoutRefusal.NOT_YOURS),
        ("expired", PreCheckoutRefusal.EXPIRED),
        ("amount", PreCheckoutRefusal.AMOUNT_MISMATCH),
    ],
)
async def test_a_pre_checkout_for_no_top_up_of_the_payers_is_refused_in_their_language(
    stars_shop: Shop, clock: ManualClock, case: str, refusal: PreCheckoutRefusal
) -> None:
    runtime, transport = build_runtime(stars_shop), PaymentTransport()
    owner = await stars_shop.members.register(600, display_name="Owner")
    payer = await stars_shop.members.register(501, display_name="Ann", language_code="zh-hans")
    checkout = await stars_shop.payments.start(
        owner.id if case == "foreign" else payer.id, 1_000, "stars"
    )
    invoice = checkout.invoice
    assert invoice is not None
    payload, stars = invoice.payload, invoice.stars
    if case == "unknown":
        payload = "T" + "0" * 24
    elif case == "expired":
        clock.advance(timedelta(minutes=stars_shop.payments.rules.expiry_minutes + 1))
    elif case == "amount":
        stars -= 1
    # The query's language is English; the payer chose Chinese in the shop, which wins.
    await runtime.handle(pre_checkout(payload, stars, language_code="en"), transport)
    expected = pre_checkout_refusal(runtime.translator(payer.locale or ""), refusal)
    assert transport.pre_checkouts == [("q1", False, expected)]


async def test_a_stranger_is_refused_in_the_querys_language_and_not_registered(
    stars_shop: Shop,
) -> None:
    runtime, transport = build_runtime(stars_shop), PaymentTransport()
    await runtime.handle(pre_checkout("T" + "1" * 24, 70, user_id=777), transport)
    expected = pre_checkout_refusal(runtime.translator("en"), PreCheckoutRefusal.UNKNOWN)
    assert transport.pre_checkouts == [("q1", False, expected)]
    assert await stars_shop.members.by_telegram(777) is None


async def test_a_shop_that_cannot_check_a_pre_checkout_refuses_it(
    settings: Settings, clock: ManualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that cannot be opened: the payment is refused, not left unanswered."""
    gone = tmp_path / "no-such-folder" / "shop.db"
    broken = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{gone}", "stars_per_yuan": Decimal(10)}
    )
    shop = build_shop(broken, clock=clock)
    try:
        runtime, transport = build_runtime(shop), PaymentTransport()
        with caplog.at_level(logging.ERROR):
            await runtime.handle(pre_checkout("T" + "2" * 24, 70), transport)
    finally:
        await shop.close()
    expected = pre_checkout_refusal(runtime.translator("en"), PreCheckoutRefusal.UNAVAILABLE)
    assert transport.pre_checkouts == [("q1", False, expected)]
    assert "could not check" in caplog.text


def payment_message(kind: str, update_id: int, charge_id: str, **fields: Any) -> Incoming:
    values: dict[str, Any] = {
        "kind": kind,
        "user_id": 501,
        "chat_id": 501,
        "update_id": update_id,
        "message_id": update_id,
        "currency": "XTR",
        "total_amount": 100,
        "invoice_payload": "T0123abc",
        "charge_id": charge_id,
        "language_code": "en",
        **fields,
    }
    return Incoming(**values)


def recording_runtime(shop: Shop, seen: list[tuple[str, str | None, str | None]]) -> Runtime:
    """The runtime with one conversation handling both payment messages, noting each."""
    payments = Conversation("payments")

    @payments.payment("paid")
    async def paid(ctx: Context) -> None:
        seen.append(("paid", ctx.incoming.charge_id, ctx.state.name))
        await ctx.reply("thanks")

    @payments.payment("refunded")
    async def refunded(ctx: Context) -> None:
        seen.append(("refunded", ctx.incoming.charge_id, ctx.state.name))

    @payments.command("ask")
    async def ask(ctx: Context) -> None:
        ctx.state.set("payments:typing")
        await ctx.reply("how many?")

    return Runtime(shop, Registry([payments]), build_runtime(shop).store)


async def test_payment_messages_reach_their_handler_once_leaving_the_state_alone(
    shop: Shop,
) -> None:
    seen: list[tuple[str, str | None, str | None]] = []
    runtime, transport = recording_runtime(shop, seen), PaymentTransport()
    await runtime.handle(Incoming(kind="command", user_id=501, chat_id=501, command="ask",
                                  text="/ask", update_id=1), transport)  # fmt: skip
    paid = payment_message("paid", 2, "stxA")
    await runtime.handle(paid, transport)
    await runtime.handle(paid, transport)  # redelivered: handled already
    await runtime.handle(payment_message("refunded", 3, "stxA"), transport)
    # Paid in a group (an invoice forwarded there): money is heard wherever it comes.
    group = payment_message("paid", 4, "stxB", chat_id=-100, chat_type="group")
    await runtime.handle(group, transport)
    assert seen == [
        ("paid", "stxA", "payments:typing"),
        ("refunded", "stxA", "payments:typing"),
        ("paid", "stxB", None),
    ]
    assert (await build_runtime(shop).store.arrive(501, "501:501", None)).state.state == (
        "payments:typing"
    )


async def test_a_payment_message_no_conversation_handles_is_logged(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, transport = Runtime(shop, Registry([]), build_runtime(shop).store), PaymentTransport()
    with caplog.at_level(logging.ERROR):
        await runtime.handle(payment_message("paid", 1, "stxLOST"), transport)
    assert "no conversation handles it" in caplog.text
    assert "stxLOST" in caplog.text


# --- where the adapters reach Telegram -----------------------------------------------------

TOKEN = "123456:test-token"


@pytest.mark.parametrize(
    ("base", "requests", "files"),
    [
        (
            "http://127.0.0.1:8081/",
            f"http://127.0.0.1:8081/bot{TOKEN}/getMe",
            f"http://127.0.0.1:8081/file/bot{TOKEN}/photos/1.jpg",
        ),
        (  # Telegram's test environment, where Stars cost nothing
            "https://api.telegram.org/bot{token}/test",
            f"https://api.telegram.org/bot{TOKEN}/test/getMe",
            f"https://api.telegram.org/file/bot{TOKEN}/test/photos/1.jpg",
        ),
    ],
)
async def test_both_adapters_reach_the_api_base_they_are_given(
    shop: Shop, settings: Settings, base: str, requests: str, files: str
) -> None:
    given = settings.model_copy(
        update={"telegram_bot_token": SecretStr(TOKEN), "telegram_api_base": base}
    )
    runtime = build_runtime(shop)
    aiogram_bot = make_bot(given, runtime.flood)
    try:
        assert aiogram_bot.session.api.api_url(TOKEN, "getMe") == requests
        assert aiogram_bot.session.api.file_url(TOKEN, "photos/1.jpg") == files
    finally:
        await aiogram_bot.session.close()
    ptb_bot = build_application(runtime, given).bot
    assert f"{ptb_bot.base_url}/getMe" == requests
    assert f"{ptb_bot.base_file_url}/photos/1.jpg" == files


async def test_the_terminal_shows_an_invoice_and_says_stars_need_telegram(
    shop: Shop, tmp_path: Path
) -> None:
    runtime, out = build_runtime(shop), io.StringIO()
    en = runtime.translator("en")
    terminal = TerminalTransport(out, tmp_path, chat_id=501, t=en, name_chat=chat_namer(runtime))
    await terminal.send_invoice(501, "Top up ¥10.00", "For your wallet", "T0123abc", 100)
    shown = out.getvalue()
    assert "Top up ¥10.00\nFor your wallet" in shown
    assert "(an invoice for 100 Telegram Stars: Stars are paid in Telegram" in shown
    with pytest.raises(RefundRefusedError, match="refunded through Telegram"):
        await terminal.refund_star_payment(501, "stxCHARGE")

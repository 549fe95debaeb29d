"""The bot's payment plumbing end to end, on both adapters and both databases.

Against the Bot API stand-in and the 易支付 stand-in: Telegram's pre-checkout query is
answered ok only for the payer's own pending top-up, and at once, even while a slow
update holds the payer's chat or another one; 易支付's notify reaches the shop's one
HTTP server (polling or webhook) and credits once however often it is replayed, and a
forged one credits nothing; an admin refunds a Stars payment from the chat only while
the wallet still holds it, and a refund Telegram refuses leaves the wallet as it was.

The buyer's own flow (the top-up menu, the invoice it sends, the message when the money
lands) is tests/e2e/test_topup.py's; here invoices are sent through the bot's own
transport, as the top-up conversation sends them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from bot.app import build_runtime, own_transport
from bot.names import actor_for
from bot.payments import pre_checkout_refusal, state_name
from core.clock import ManualClock
from core.config import EPAY_NOTIFY_PATH, Settings
from core.models import WalletEntry
from core.payments import Credit, PaymentState, PaymentView, PreCheckoutRefusal
from core.shop import Shop, build_shop
from core.uow import Database
from tests.botapi import BotApiStub, PaymentStatus, TgUser
from tests.conftest import TEST_KEY
from tests.e2e.harness import Chat, free_port, running_bot, settle, webhook_settings
from tests.e2e.test_admin import audit_rows
from tests.e2e.test_membership import t
from tests.epay import EpayGateway
from tests.test_cli import cardshop

ADMIN = 9_101
PID, KEY = "1001", "epay-merchant-key"
en = t("en")


@pytest.fixture
async def gateway(clock: ManualClock) -> AsyncIterator[EpayGateway]:
    async with EpayGateway(
        {PID: KEY}, notify_delays=(0.05,) * 5, wall_clock=lambda: clock.now().timestamp()
    ) as stand_in:
        yield stand_in


def listening_on(settings: Settings, port: int) -> Settings:
    """`settings` with the HTTP server on `port`, and 易支付 calling back there."""
    return settings.model_copy(
        update={"http_listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"}
    )


@pytest.fixture
def bot_settings(bot_settings: Settings, gateway: EpayGateway) -> Settings:
    """The bot taking Stars (10 per yuan) and 易支付 (at the stand-in), with an admin."""
    paying = bot_settings.model_copy(
        update={
            "admin_ids": [ADMIN],
            "stars_per_yuan": Decimal(10),
            "epay_url": gateway.url,
            "epay_pid": PID,
            "epay_key": SecretStr(KEY),
        }
    )
    return listening_on(paying, free_port())


@pytest.fixture
def shop(bot_settings: Settings, db: Database, clock: ManualClock) -> Shop:
    """The shop as the bot builds it: its payment providers come from these settings."""
    return build_shop(bot_settings, db=db, clock=clock)


async def registered(chat: Callable[..., Chat], user_id: int, language: str = "en") -> Chat:
    member = chat(user_id, language_code=language)
    await member.say("/start")
    return member


async def member_of(shop: Shop, user: TgUser) -> int:
    member = await shop.members.by_telegram(user.id)
    assert member is not None
    return member.id


async def send_invoice(shop: Shop, chat_id: int, payload: str, stars: int) -> int:
    """An invoice in `chat_id`, sent as the top-up conversation sends it."""
    async with own_transport(build_runtime(shop), shop.settings) as transport:
        return await transport.send_invoice(chat_id, "Top up", "¥ for your wallet", payload, stars)


async def stars_top_up(shop: Shop, user: TgUser, amount: int = 1_000) -> tuple[int, str, int]:
    """A pending Stars top-up of `user`'s: its invoice's (message id, payload, stars)."""
    checkout = await shop.payments.start(await member_of(shop, user), amount, "stars")
    assert checkout.invoice is not None
    payload, stars = checkout.invoice.payload, checkout.invoice.stars
    return await send_invoice(shop, user.id, payload, stars), payload, stars


async def top_up_entries(shop: Shop) -> int:
    async with shop.db.read() as session:
        count = await session.scalar(
            select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "topup")
        )
    return int(count or 0)


async def balance(shop: Shop, user_id: int) -> int:
    member = await shop.members.by_telegram(user_id)
    assert member is not None
    return member.balance


# --- Telegram Stars: the pre-checkout query --------------------------------------------------


async def test_a_pre_checkout_is_taken_only_for_the_payers_own_pending_top_up(
    bot: BotApiStub, chat: Callable[..., Chat], shop: Shop, clock: ManualClock
) -> None:
    ann = await registered(chat, 4_001, "en")
    bob = await registered(chat, 4_002, "zh-hans")

    message_id, _, _ = await stars_top_up(shop, ann.user)
    assert (await bot.pay_invoice(ann.user, message_id)).paid

    # Ann's top-up, its invoice forwarded to Bob's chat: Bob cannot pay it.
    _, payload, stars = await stars_top_up(shop, ann.user)
    foreign = await send_invoice(shop, bob.chat_id, payload, stars)
    refused = await bot.pay_invoice(bob.user, foreign)
    assert (refused.status, refused.error_message) == (
        PaymentStatus.DECLINED,
        pre_checkout_refusal(t("zh_CN"), PreCheckoutRefusal.NOT_YOURS),
    )

    unknown = await send_invoice(shop, ann.chat_id, "T" + "0" * 24, 100)
    refused = await bot.pay_invoice(ann.user, unknown)
    assert refused.error_message == pre_checkout_refusal(en, PreCheckoutRefusal.UNKNOWN)

    late, _, _ = await stars_top_up(shop, ann.user)
    clock.advance(timedelta(minutes=shop.payments.rules.expiry_minutes + 1))
    refused = await bot.pay_invoice(ann.user, late)
    assert refused.error_message == pre_checkout_refusal(en, PreCheckoutRefusal.EXPIRED)


@pytest.mark.parametrize("busy", ["the payer's chat", "another chat"])
async def test_a_pre_checkout_is_answered_while_a_slow_update_is_being_handled(
    bot: BotApiStub, chat: Callable[..., Chat], shop: Shop, busy: str
) -> None:
    """A reply stuck behind a 429 keeps its update (and its chat's lock) busy for seconds;
    the query is answered meanwhile, not after it (PTB used to handle one update at a time).
    """
    ann = await registered(chat, 4_101)
    slow = ann if busy == "the payer's chat" else await registered(chat, 4_102)
    message_id, _, _ = await stars_top_up(shop, ann.user)

    bot.fail_next("sendMessage", error_code=429, retry_after=3)
    bot.inject_message(slow.user, "/start")
    held = await bot.wait_for(
        lambda: [n for n, call in enumerate(bot.calls) if call.status == 429],
        what="the slow update's reply to be held back",
    )
    outcome = await bot.pay_invoice(ann.user, message_id)
    assert outcome.paid
    [answered] = [
        n
        for n, call in enumerate(bot.calls)
        if call.method == "answerPreCheckoutQuery"
        and call.params.get("pre_checkout_query_id") == outcome.query_id
    ]

    def replied() -> list[int]:
        return [
            n
            for n, call in enumerate(bot.calls)
            if n > held[0]
            and call.method == "sendMessage"
            and call.status == 200
            and call.params.get("chat_id") in (slow.chat_id, str(slow.chat_id))
        ]

    [reply, *_] = await bot.wait_for(replied, timeout=15, what="the slow update's reply")
    assert answered < reply


async def test_a_chats_updates_are_still_answered_in_order(
    bot: BotApiStub, chat: Callable[..., Chat]
) -> None:
    """Updates run concurrently now; the first one held back by a 429, the chat's lock
    keeps the ones behind it from overtaking."""
    ann = await registered(chat, 4_151)
    bot.fail_next("sendMessage", error_code=429, retry_after=1)
    commands = [f"/step{n}" for n in range(1, 7)]
    for command in commands:
        bot.inject_message(ann.user, command)

    def answers() -> list[str]:
        texts = [m.text or "" for m in bot.sent_to(ann.chat_id)]
        return [c for text in texts for c in commands if f"{c}." in text]

    await bot.wait_for(lambda: len(answers()) == len(commands), timeout=15, what="six answers")
    assert answers() == commands


# --- 易支付: the notify on the shop's HTTP server -----------------------------------------------


async def epay_top_up(shop: Shop, gateway: EpayGateway, user: TgUser, amount: int) -> PaymentView:
    """A pending 支付宝 top-up whose pay link the buyer opened at the gateway."""
    checkout = await shop.payments.start(await member_of(shop, user), amount, "alipay")
    assert checkout.url is not None
    assert (await gateway.visit(checkout.url)).ok
    return checkout.payment


async def test_a_notify_replayed_ten_times_at_once_credits_once(
    bot: BotApiStub, chat: Callable[..., Chat], shop: Shop, gateway: EpayGateway
) -> None:
    ann = await registered(chat, 4_201)
    payment = await epay_top_up(shop, gateway, ann.user, 5_000)
    await gateway.pay(payment.reference)
    [first] = await gateway.notified(payment.reference)
    replays = await gateway.replay_notify(payment.reference, 10)
    assert first.acknowledged
    assert all(reply.acknowledged for reply in replays)
    assert {(reply.status, reply.body) for reply in replays} == {(200, "success")}
    assert await top_up_entries(shop) == 1
    assert await balance(shop, ann.chat_id) == 5_000
    credited = await shop.payments.get(payment.reference)
    assert credited is not None
    assert credited.state is PaymentState.CREDITED


async def test_forged_notifies_are_refused_and_credit_nothing(
    bot: BotApiStub, chat: Callable[..., Chat], shop: Shop, gateway: EpayGateway
) -> None:
    ann = await registered(chat, 4_301)
    payment = await epay_top_up(shop, gateway, ann.user, 5_000)
    notify_url = f"{shop.settings.public_url}{EPAY_NOTIFY_PATH}"
    attempts = [
        await gateway.notify_forged_signature(payment.reference),
        await gateway.notify_tampered_amount(payment.reference, "0.01"),
        await gateway.notify_tampered_amount(payment.reference, "0.01", resign=False),
        await gateway.notify_wrong_pid(payment.reference, "2002"),
        await gateway.notify_unknown_order(notify_url),
    ]
    assert [(a.status, a.body) for a in attempts] == [(400, "fail")] * len(attempts)
    assert await top_up_entries(shop) == 0
    assert await balance(shop, ann.chat_id) == 0
    pending = await shop.payments.get(payment.reference)
    assert pending is not None
    assert pending.state is PaymentState.PENDING


async def test_one_server_carries_the_webhook_and_the_notify(
    api: BotApiStub,
    bot_settings: Settings,
    db: Database,
    clock: ManualClock,
    gateway: EpayGateway,
) -> None:
    hooked = webhook_settings(bot_settings)
    settings = listening_on(hooked, int(hooked.http_listen.rpartition(":")[2]))
    shop = build_shop(settings, db=db, clock=clock)
    async with running_bot(api, settings, clock):
        ann = Chat(api, api.user(4_401, language_code="en", first_name="Ann"))
        [welcome] = await ann.say("/start")
        assert "Welcome, Ann!" in (welcome.text or "")
        payment = await epay_top_up(shop, gateway, ann.user, 2_000)
        await gateway.pay(payment.reference)
        [notify] = await gateway.notified(payment.reference)
    assert notify.acknowledged
    assert notify.url.startswith(str(settings.public_url))
    assert await balance(shop, ann.chat_id) == 2_000


# --- an admin refunds a Stars payment --------------------------------------------------------


async def paid_in_stars(bot: BotApiStub, shop: Shop, user: TgUser, amount: int) -> Credit:
    """A Stars top-up paid at Telegram and credited, as the top-up conversation credits it."""
    message_id, _, _ = await stars_top_up(shop, user, amount)
    outcome = await bot.pay_invoice(user, message_id)
    assert outcome.charge is not None
    charge = outcome.charge
    credit = await shop.payments.credit_stars(
        user.id,
        charge.invoice_payload,
        charge.currency,
        charge.total_amount,
        charge.telegram_payment_charge_id,
    )
    await settle(bot)
    return credit


async def open_refund(admin: Chat, payment: PaymentView) -> None:
    """/admin → 💳 Payments → the payment → ↩ Refund: the confirmation."""
    await admin.say("/admin")
    await admin.tap(en._("💳 Payments"))
    await admin.tap(f"#{payment.id}")
    await admin.tap(en._("↩ Refund"))


async def test_an_admin_refunds_stars_only_while_the_wallet_still_holds_them(
    bot: BotApiStub, chat: Callable[..., Chat], shop: Shop
) -> None:
    ann = await registered(chat, 4_501)
    admin = chat(ADMIN, language_code="en", first_name="Boss")
    credit = await paid_in_stars(bot, shop, ann.user, 1_000)
    payment, member = credit.payment, await member_of(shop, ann.user)
    await shop.operations.admin.adjust("test", member, -400, reason="spent on codes")

    await open_refund(admin, payment)
    [told] = await admin.tap(en._("✅ Yes, refund"))
    assert en._(
        "⚠️ Not refunded: the wallet holds {balance}, less than the {amount} to take"
        " back. Nothing was changed."
    ).format(balance=en.money(600), amount=en.money(1_000)) in (told.text or "")
    assert bot.calls_to("refundStarPayment") == []
    assert await balance(shop, ann.chat_id) == 600
    unchanged = await shop.payments.get(payment.reference)
    assert unchanged is not None
    assert unchanged.state is PaymentState.CREDITED

    await shop.operations.admin.adjust("test", member, 400, reason="codes refunded")
    bot.fail_next("refundStarPayment", error_code=400, description="Bad Request: CHARGE_NOT_FOUND")
    await open_refund(admin, payment)
    [told] = await admin.tap(en._("✅ Yes, refund"))
    # Telegram's reason, as each framework words it ("Charge_not_found" in PTB).
    assert "Telegram refused the refund (" in (told.text or "")
    assert "CHARGE_NOT_FOUND" in (told.text or "").upper()
    assert await balance(shop, ann.chat_id) == 1_000
    restored = await shop.payments.get(payment.reference)
    assert restored is not None
    assert restored.state is PaymentState.CREDITED

    await open_refund(admin, payment)
    [told] = await admin.tap(en._("✅ Yes, refund"))
    assert en._("✅ Refunded: {amount} taken from the wallet, {charge} given back.").format(
        amount=en.money(1_000),
        charge=en.ngettext("{count} Star", "{count} Stars", 100).format(count=100),
    ) in (told.text or "")
    assert bot.charges[str(payment.provider_charge_id)].refunded_by == "bot"
    assert await balance(shop, ann.chat_id) == 0
    [listed] = await admin.tap(en._("« Payments"))
    assert f"#{payment.id} · {en._('⭐ Telegram Stars')}" in (listed.text or "")
    [credited] = await admin.tap(state_name(en, PaymentState.CREDITED))
    assert f"#{payment.id} ·" not in (credited.text or "")
    [refunded] = await admin.tap(state_name(en, PaymentState.REFUNDED))
    assert f"#{payment.id} ·" in (refunded.text or "")
    refunds = await audit_rows(shop, "refund_payment")
    assert refunds
    assert {row.actor for row in refunds} == {actor_for(ADMIN)}


async def test_the_shell_refunds_a_stars_payment_through_the_bots_own_client(
    bot: BotApiStub,
    chat: Callable[..., Chat],
    shop: Shop,
    bot_settings: Settings,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ann = await registered(chat, 4_601)
    credit = await paid_in_stars(bot, shop, ann.user, 1_000)
    await shop.operations.admin.adjust("test", await member_of(shop, ann.user), -1, reason="x")
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(bot_settings.data_dir))
    monkeypatch.setenv("STARS_PER_YUAN", "10")
    monkeypatch.setenv("BOT_FRAMEWORK", bot_settings.bot_framework)
    monkeypatch.setenv("TELEGRAM_API_BASE", bot.base_url)
    refund = ("refund-payment", str(credit.payment.id), "--lang", "en")

    assert await cardshop(*refund) == 2  # no TELEGRAM_BOT_TOKEN: no way to Telegram
    assert "TELEGRAM_BOT_TOKEN" in capsys.readouterr().err

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", bot.token)
    assert await cardshop(*refund) == 1
    assert capsys.readouterr().err == (
        "⚠️ Not refunded: the wallet holds ¥9.99, less than the ¥10.00 to take back."
        " Nothing was changed.\n"
    )
    await shop.operations.admin.adjust("test", await member_of(shop, ann.user), 1, reason="x")
    assert await cardshop(*refund) == 0
    assert capsys.readouterr().out == (
        f"payment #{credit.payment.id}: refunded, 10.00 taken from the wallet,"
        " 100 Stars given back\n"
    )
    assert bot.charges[str(credit.payment.provider_charge_id)].refunded_by == "bot"
    assert await balance(shop, ann.chat_id) == 0
    [*_, done] = await audit_rows(shop, "refund_payment")
    assert done.actor.startswith("cli:")

"""Wallet top-ups from chat, end to end on both adapters and both databases.

A member with ¥0 funds the wallet by Telegram Stars (the Bot API stand-in plays the
Telegram app: invoice, pre-checkout, `successful_payment`) or by 易支付 (the gateway
stand-in: the pay link, the buyer paying, the signed notify to the bot's HTTP server),
and then buys; or buys in one step, the order placed the moment the money lands. Every
scenario reads the outcome back from what the member saw and from the database, and the
`db` fixture checks afterwards that every ledger sums to its balance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, timedelta
from decimal import Decimal
from typing import TypeVar

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bot.app import build_runtime, own_transport
from bot.i18n import Translator
from bot.notifier import TransportNotifier
from core.clock import ManualClock
from core.config import Settings
from core.models import Order, Payment, WalletEntry
from core.payments import PaymentState
from core.shop import Shop, build_jobs, build_shop
from core.uow import Database
from tests.botapi import BotApiStub, StoredMessage
from tests.conftest import ledger_drift
from tests.e2e.harness import Chat, free_port, running_bot, settle
from tests.e2e.test_shopping import button, codes_in, count, order_codes, seed
from tests.epay import EpayGateway

T = TypeVar("T")

LOCALES = {"zh_CN": "zh-hans", "en": "en"}
PID, KEY = "1001", "kE7pM2xQ9vLs4RtY"
#: ¥1 = 2 Stars, so ¥100 is an invoice of 200 Stars.
STARS_PER_YUAN = Decimal(2)
HUNDRED = 10_000


@pytest.fixture(autouse=True)
def quick_typist(api: BotApiStub) -> None:
    """These members tap faster than Telegram's per-chat flood limit; a 429 would only
    slow the scenario (the limit is the framework's own scenarios' business)."""
    api.limits.per_chat_burst = 100


@pytest.fixture
async def gateway(clock: ManualClock) -> AsyncIterator[EpayGateway]:
    """The 易支付 stand-in, retrying a notify quickly until the bot reads it."""
    async with EpayGateway(
        {PID: KEY}, notify_delays=(0.2,) * 20, wall_clock=lambda: clock.now().timestamp()
    ) as stand_in:
        yield stand_in


@pytest.fixture
def bot_settings(
    settings: Settings, api: BotApiStub, adapter: str, gateway: EpayGateway
) -> Settings:
    """The bot on the stand-ins, taking Stars and 易支付 (支付宝, 微信, QQ钱包), its HTTP
    server on a free port that PUBLIC_URL names, as a reverse proxy would."""
    port = free_port()
    return settings.model_copy(
        update={
            "telegram_bot_token": SecretStr(api.token),
            "telegram_api_base": api.base_url,
            "bot_framework": adapter,
            "stars_per_yuan": STARS_PER_YUAN,
            "epay_url": gateway.url.rstrip("/"),
            "epay_pid": PID,
            "epay_key": SecretStr(KEY),
            "epay_methods": ("alipay", "wxpay", "qqpay"),
            "public_url": f"http://127.0.0.1:{port}",
            "http_listen": f"127.0.0.1:{port}",
        }
    )


@pytest.fixture
def paying(bot_settings: Settings, db: Database, clock: ManualClock) -> Shop:
    """The shop as the bot has it configured (the plain `shop` takes no payments)."""
    return build_shop(bot_settings, db=db, clock=clock)


def tr(locale: str) -> Translator:
    return Translator(locale, currency="CNY", zone=UTC)


def money(locale: str, fen: int) -> str:
    return tr(locale).money(fen)


def text(locale: str, message: str) -> str:
    return tr(locale)._(message)


def bot_messages(member: Chat) -> list[StoredMessage]:
    return [m for m in member.api.sent_to(member.chat_id) if m.from_bot]


async def replies(
    member: Chat, action: Callable[[], Awaitable[T]]
) -> tuple[T, list[StoredMessage]]:
    """Run `action` (a payment, a notify); then what the bot sent the member because of it."""
    seen = {m.message_id for m in bot_messages(member)}

    def new() -> list[StoredMessage]:
        return [m for m in bot_messages(member) if m.message_id not in seen]

    result = await action()
    await member.api.wait_for(new, what=f"the bot to write to {member.chat_id}")
    await settle(member.api)
    return result, new()


async def press(member: Chat, message: StoredMessage, label: str) -> list[StoredMessage]:
    return await member.press(message.message_id, button(message, label))


async def register(chat: Callable[..., Chat], shop: Shop, user_id: int, locale: str) -> Chat:
    member = chat(user_id, language_code=LOCALES[locale])
    await member.say("/start")
    return member


async def member_id(shop: Shop, member: Chat) -> int:
    found = await shop.members.by_telegram(member.chat_id)
    assert found is not None
    return found.id


async def methods_for(member: Chat, locale: str, amount: int) -> StoredMessage:
    """/topup, then the preset `amount`: the method screen."""
    [menu] = await member.say("/topup")
    assert text(locale, "💰 <b>Top up your balance</b>").replace("<b>", "").replace("</b>", "") in (
        menu.text or ""
    )
    [methods] = await press(member, menu, money(locale, amount))
    assert methods.message_id == menu.message_id
    return methods


async def invoice_for(member: Chat, methods: StoredMessage, locale: str) -> StoredMessage:
    """Tap ⭐ Telegram Stars: the screen says what the invoice buys, the invoice follows."""
    changed = await press(member, methods, text(locale, "⭐ Telegram Stars"))
    [invoice] = [m for m in changed if "invoice" in m.message]
    return invoice


async def pay_link(member: Chat, methods: StoredMessage, method: str) -> str:
    """Tap an 易支付 method: the gateway's pay link, as the button carries it."""
    [page] = await press(member, methods, method)
    [url] = [b["url"] for b in page.buttons if "url" in b]
    return str(url)


async def pay_stars(member: Chat, invoice: StoredMessage) -> list[StoredMessage]:
    """The member taps Pay under the invoice; what the bot said once the money was in."""
    outcome, said = await replies(member, lambda: member.api.pay_invoice(member.user, invoice))
    assert outcome.paid, outcome
    return said


async def pay_epay(member: Chat, gateway: EpayGateway, url: str) -> list[StoredMessage]:
    """The member opens the link and pays; the gateway notifies the bot until it says success."""
    submission = await gateway.visit(url)
    assert submission.ok, submission.error
    out_trade_no = submission.params["out_trade_no"]
    _, said = await replies(member, lambda: gateway.pay(out_trade_no))
    attempts = await gateway.notified(out_trade_no)
    assert attempts[-1].acknowledged
    return said


def landed_text(locale: str, amount: int, before: int, after: int) -> list[str]:
    t = tr(locale)
    return [
        t._("✅ <b>{amount} added to your balance</b>")
        .format(amount=t.money(amount))
        .replace("<b>", "")
        .replace("</b>", ""),
        t._("Balance: {balance} → {after}").format(balance=t.money(before), after=t.money(after)),
    ]


async def top_ups(shop: Shop, member: int) -> list[WalletEntry]:
    async with shop.db.read() as session:
        rows = await session.scalars(
            select(WalletEntry).where(WalletEntry.member_id == member, WalletEntry.kind == "topup")
        )
        return list(rows)


async def payments_of(shop: Shop, member: int) -> list[Payment]:
    async with shop.db.read() as session:
        return list(await session.scalars(select(Payment).where(Payment.member_id == member)))


async def confirmation(member: Chat, locale: str) -> StoredMessage:
    """/shop → Game cards → Steam cards → Steam ¥100 → 1: the confirmation."""
    [menu] = await member.say("/shop")
    [games] = await press(member, menu, "游戏点卡" if locale == "zh_CN" else "Game cards")
    [steam] = await press(member, games, "Steam 充值卡" if locale == "zh_CN" else "Steam cards")
    [product] = await press(member, steam, "Steam ¥100")
    [confirm] = await press(member, product, "1")
    return confirm


def starting(locale: str, msgid: str) -> str:
    """A button label up to its first placeholder, to find it whatever the amount."""
    return text(locale, msgid).split("{")[0]


async def buy_one(member: Chat, locale: str) -> StoredMessage:
    confirm = await confirmation(member, locale)
    [paid] = await press(member, confirm, starting(locale, "✅ Pay {total}"))
    return paid


# --- top up, then buy ------------------------------------------------------------------------


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_member_with_nothing_tops_up_by_stars_and_buys(
    chat: Callable[..., Chat], paying: Shop, locale: str
) -> None:
    ids = await seed(paying)
    member = await register(chat, paying, 3001, locale)
    buyer = await member_id(paying, member)
    methods = await methods_for(member, locale, HUNDRED)
    labels = [b["text"] for b in methods.buttons if "callback_data" in b]
    names = ["⭐ Telegram Stars", "Alipay", "WeChat Pay", "QQ Wallet"]
    assert labels[:4] == [text(locale, name) for name in names]

    invoice = await invoice_for(member, methods, locale)
    sent = member.api.invoice(member.chat_id, invoice.message_id)
    assert (sent.currency, sent.total_amount, sent.provider_token) == ("XTR", 200, "")
    assert money(locale, HUNDRED) in sent.title
    assert await paying.wallet.balance(buyer) == 0

    [landed] = await pay_stars(member, invoice)
    for line in landed_text(locale, HUNDRED, 0, HUNDRED):
        assert line in (landed.text or "")
    assert await paying.wallet.balance(buyer) == HUNDRED
    [entry] = await top_ups(paying, buyer)
    [payment] = await payments_of(paying, buyer)
    assert (entry.amount, entry.payment_id) == (HUNDRED, payment.id)
    assert payment.state == PaymentState.CREDITED

    paid = await buy_one(member, locale)
    [order] = await paying.orders.recent(buyer)
    assert codes_in(paid) == await order_codes(paying, order.id)
    assert await paying.wallet.balance(buyer) == HUNDRED - order.total
    assert await paying.stock.available(ids["steam"]) == 3
    assert await ledger_drift(paying.db) == []


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_member_with_nothing_tops_up_by_epay_and_buys(
    chat: Callable[..., Chat], paying: Shop, gateway: EpayGateway, locale: str
) -> None:
    await seed(paying)
    member = await register(chat, paying, 3002, locale)
    buyer = await member_id(paying, member)
    methods = await methods_for(member, locale, HUNDRED)
    url = await pay_link(member, methods, text(locale, "Alipay"))
    assert url.startswith(f"{gateway.url}submit.php?")

    [landed] = await pay_epay(member, gateway, url)
    for line in landed_text(locale, HUNDRED, 0, HUNDRED):
        assert line in (landed.text or "")
    [payment] = await payments_of(paying, buyer)
    assert (payment.state, payment.method) == (PaymentState.CREDITED, "alipay")
    assert gateway.order(payment.reference).money == "100.00"

    # "I have paid": the screen with the link now says the money is in.
    page = member.api.message(member.chat_id, methods.message_id)
    [status] = await press(member, page, starting(locale, "🔄 I have paid: check status"))
    shown = text(locale, "✅ {amount} was added to your balance.")
    assert shown.format(amount=money(locale, HUNDRED)) in (status.text or "")

    paid = await buy_one(member, locale)
    [order] = await paying.orders.recent(buyer)
    assert codes_in(paid) == await order_codes(paying, order.id)
    assert await paying.wallet.balance(buyer) == HUNDRED - order.total


# --- buy in one step ---------------------------------------------------------------------------


async def short_confirmation(member: Chat, locale: str) -> StoredMessage:
    confirm = await confirmation(member, locale)
    assert not [b for b in confirm.buttons if b["text"].startswith(starting(locale, "✅ Pay"))]
    return confirm


@pytest.mark.parametrize("method", ["stars", "epay"])
async def test_pay_the_missing_amount_tops_up_and_buys_in_one_step(
    chat: Callable[..., Chat], paying: Shop, gateway: EpayGateway, method: str
) -> None:
    ids = await seed(paying)
    locale = "en"
    member = await register(chat, paying, 3003, locale)
    buyer = await member_id(paying, member)
    await paying.operations.admin.top_up("test", buyer, 3_000, reason="paid in")
    quote = await paying.catalog.quote(buyer, ids["steam"], 1)
    missing = quote.total - 3_000
    confirm = await short_confirmation(member, locale)
    labels = [b["text"] for b in confirm.buttons]
    offered = paying.payments.rules.preset_for(missing)  # the smallest preset covering it
    assert f"💰 Top up {money(locale, offered)}" in labels
    assert f"⚡ Pay the missing {money(locale, missing)}" in labels

    [methods] = await press(member, confirm, "⚡ Pay the missing")
    assert "Steam ¥100 × 1" in (methods.text or "")
    if method == "stars":
        said = await pay_stars(member, await invoice_for(member, methods, locale))
    else:
        said = await pay_epay(member, gateway, await pay_link(member, methods, "WeChat Pay"))

    landed, delivered = said
    for line in landed_text(locale, missing, 3_000, quote.total):
        assert line in (landed.text or "")
    [order] = await paying.orders.recent(buyer)
    assert order.total == quote.total
    assert codes_in(delivered) == await order_codes(paying, order.id)
    assert await paying.wallet.balance(buyer) == 0
    [payment] = await payments_of(paying, buyer)
    assert payment.then_buy is not None
    async with paying.db.read() as session:
        key = await session.scalar(select(Order.idempotency_key).where(Order.id == order.id))
    assert key == payment.then_buy["idempotency_key"]


async def test_stock_gone_before_the_money_lands_leaves_it_in_the_wallet(
    chat: Callable[..., Chat], paying: Shop
) -> None:
    ids = await seed(paying)
    locale = "zh_CN"
    member = await register(chat, paying, 3004, locale)
    buyer = await member_id(paying, member)
    quote = await paying.catalog.quote(buyer, ids["steam"], 1)
    confirm = await short_confirmation(member, locale)
    [methods] = await press(member, confirm, starting(locale, "⚡ Pay the missing {amount}"))
    invoice = await invoice_for(member, methods, locale)

    # Someone else buys the whole stock while the member is paying.
    rival = await paying.members.register(3999, display_name="Rival")
    await paying.operations.admin.top_up("test", rival.id, 100 * HUNDRED, reason="paid in")
    for number in range(4):  # a plain member buys one code an order
        await paying.orders.place(rival.id, ids["steam"], 1, idempotency_key=f"rival-{number}")

    [landed] = await pay_stars(member, invoice)
    shown = landed.text or ""
    for line in landed_text(locale, quote.total, 0, quote.total):
        assert line in shown
    assert text(locale, "Sorry, this item is sold out for now.") in shown
    assert text(locale, "The money stays in your balance, ready for your next order.") in shown
    back = button(landed, text(locale, "« Back to the product"))
    assert back == f"prod:{ids['steam']}:1"
    assert await count(paying, Order, Order.member_id == buyer) == 0
    assert await paying.wallet.balance(buyer) == quote.total


async def test_a_payment_whose_notify_never_came_is_found_told_and_bought(
    chat: Callable[..., Chat],
    paying: Shop,
    gateway: EpayGateway,
    bot_settings: Settings,
    clock: ManualClock,
) -> None:
    """The payments job asks the gateway about a pending top-up, credits it, and the
    member hears it as from a notify: the money, then the order bought in one step."""
    ids = await seed(paying)
    member = await register(chat, paying, 3011, "en")
    buyer = await member_id(paying, member)
    quote = await paying.catalog.quote(buyer, ids["steam"], 1)
    confirm = await short_confirmation(member, "en")
    [methods] = await press(member, confirm, "⚡ Pay the missing")
    submission = await gateway.visit(await pay_link(member, methods, "Alipay"))
    # The buyer pays at the gateway, whose notify never reaches the shop.
    gateway.order(submission.params["out_trade_no"]).status = 1

    clock.advance(timedelta(minutes=1))  # the job's next period
    async with own_transport(build_runtime(paying), bot_settings) as transport:
        jobs = build_jobs(paying, TransportNotifier(paying, transport))
        _, said = await replies(member, jobs.run_due)
    landed, delivered = said
    for line in landed_text("en", quote.total, 0, quote.total):
        assert line in (landed.text or "")
    [order] = await paying.orders.recent(buyer)
    assert codes_in(delivered) == await order_codes(paying, order.id)
    assert await paying.wallet.balance(buyer) == 0


# --- what the member types and taps ----------------------------------------------------------


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_amounts_that_are_no_top_up_change_nothing(
    chat: Callable[..., Chat], paying: Shop, locale: str
) -> None:
    member = await register(chat, paying, 3005, locale)
    buyer = await member_id(paying, member)
    await member.say("/topup")
    hint = text(locale, "Please send an amount in yuan, such as 100 or 12.50.")
    limits = text(locale, "A top-up can be from {min} to {max}.").format(
        min=money(locale, 100), max=money(locale, 500_000)
    )
    for typed, answer in [
        ("abc", hint),
        ("0", hint),
        ("-5", hint),
        ("0.5", limits),
        ("5000.01", limits),
        ("1e9", limits),
    ]:
        [reply] = await member.say(typed)
        assert reply.text == answer, typed
    [methods] = await member.say("12.5")  # still asked for an amount: the state was kept
    assert money(locale, 1_250) in (methods.text or "")
    assert await payments_of(paying, buyer) == []


async def test_forged_and_stale_topup_buttons_are_refused(
    chat: Callable[..., Chat], paying: Shop
) -> None:
    owner = await register(chat, paying, 3006, "en")
    methods = await methods_for(owner, "en", HUNDRED)
    await pay_link(owner, methods, "Alipay")
    [payment] = await payments_of(paying, await member_id(paying, owner))

    thief = await register(chat, paying, 3007, "en")
    thief_id = await member_id(paying, thief)
    stale = await methods_for(thief, "en", HUNDRED)
    stale_stars = button(stale, "⭐ Telegram Stars")
    await methods_for(thief, "en", 5_000)  # a new method screen: the old one's nonce is gone
    [menu] = await thief.say("/balance")
    invalid = "This button is no longer valid."
    forged = {
        stale_stars: invalid,
        "topupm:forged0:stars": invalid,
        f"topupm:{stale_stars.split(':')[1]}:paypal": invalid,
        f"topups:{payment.id}": "No such payment.",
        "topup:99": "A top-up can be from ¥1.00 to ¥5,000.00.",
        "topup:99999999": "A top-up can be from ¥1.00 to ¥5,000.00.",
        "topup:-1": invalid,
        "buytop:forged0": invalid,
    }
    for data, answer in forged.items():
        assert await thief.press(menu.message_id, data) == [], data
        reply = thief.answer()
        assert reply is not None, data
        assert reply.startswith(answer), (data, reply)
    assert await payments_of(paying, thief_id) == []
    assert not thief.api.calls_to("sendInvoice")


async def test_an_expired_top_up_says_so_when_asked(
    chat: Callable[..., Chat], paying: Shop, clock: ManualClock
) -> None:
    member = await register(chat, paying, 3008, "en")
    methods = await methods_for(member, "en", HUNDRED)
    await pay_link(member, methods, "QQ Wallet")
    page = member.api.message(member.chat_id, methods.message_id)
    await press(member, page, "🔄 I have paid")
    assert (member.answer() or "").startswith("⏳ Not received yet.")

    clock.advance(timedelta(minutes=31))
    [expired] = await press(member, page, "🔄 I have paid")
    assert "expired unpaid" in (expired.text or "")
    [payment] = await payments_of(paying, await member_id(paying, member))
    assert payment.state == PaymentState.EXPIRED


# --- exactly once --------------------------------------------------------------------------


async def test_the_same_successful_payment_again_and_in_parallel_credits_once(
    chat: Callable[..., Chat], paying: Shop
) -> None:
    member = await register(chat, paying, 3009, "en")
    buyer = await member_id(paying, member)
    invoice = await invoice_for(member, await methods_for(member, "en", HUNDRED), "en")
    outcome, said = await replies(member, lambda: member.api.pay_invoice(member.user, invoice))
    assert outcome.update is not None
    assert outcome.charge is not None
    assert len(said) == 1
    told = len(bot_messages(member))

    # Telegram delivers the update three more times, two of them as new updates, while
    # three more credits of the same charge race in from elsewhere.
    charge = outcome.charge
    for _ in range(3):
        member.api.redeliver(outcome.update)
    for _ in range(2):
        member.api.inject_update_raw({"message": outcome.update["message"]})
    credits = await asyncio.gather(
        *(
            paying.payments.credit_stars(
                member.user.id,
                charge.invoice_payload,
                charge.currency,
                charge.total_amount,
                charge.telegram_payment_charge_id,
            )
            for _ in range(3)
        )
    )
    await settle(member.api)
    assert not any(credit.created for credit in credits)
    assert len(await top_ups(paying, buyer)) == 1
    assert await paying.wallet.balance(buyer) == HUNDRED
    assert len(bot_messages(member)) == told  # told once, when the money came
    assert await ledger_drift(paying.db) == []


async def test_a_bot_stopped_between_invoice_and_payment_credits_after_its_restart(
    api: BotApiStub, bot_settings: Settings, clock: ManualClock, paying: Shop
) -> None:
    """The invoice outlives the process that sent it: the top-up is in the database, so
    the restarted bot accepts the payment and credits it."""
    member = Chat(api, api.user(3012, language_code="en"))
    async with running_bot(api, bot_settings, clock):
        await member.say("/start")
        invoice = await invoice_for(member, await methods_for(member, "en", HUNDRED), "en")
    async with running_bot(api, bot_settings, clock):
        [landed] = await pay_stars(member, invoice)
    for line in landed_text("en", HUNDRED, 0, HUNDRED):
        assert line in (landed.text or "")
    assert await paying.wallet.balance(await member_id(paying, member)) == HUNDRED


async def test_a_refund_telegram_makes_is_told_and_leaves_the_wallet(
    chat: Callable[..., Chat], paying: Shop
) -> None:
    member = await register(chat, paying, 3010, "en")
    buyer = await member_id(paying, member)
    invoice = await invoice_for(member, await methods_for(member, "en", HUNDRED), "en")
    outcome, _ = await replies(member, lambda: member.api.pay_invoice(member.user, invoice))
    charge = outcome.charge
    assert charge is not None

    async def support_refunds() -> None:
        member.api.support_refund(charge.telegram_payment_charge_id)

    _, [told] = await replies(member, support_refunds)
    assert "was refunded" in (told.text or "")
    assert await paying.wallet.balance(buyer) == 0
    [payment] = await payments_of(paying, buyer)
    assert payment.state == PaymentState.REFUNDED

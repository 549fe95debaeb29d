"""The conversation framework without Telegram: codec, catalogs, errors, state, runtime.

End-to-end behaviour over the real adapters lives in tests/e2e; these pin the rules
every adapter inherits from `bot.framework` and friends.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.adapters.terminal import chat as terminal_chat
from bot.app import build_runtime, redis_client
from bot.callbacks import BadCallbackError, Callback
from bot.conversation import Button, Context, Conversation, Document, Incoming, Keyboard
from bot.errors import render_error
from bot.framework import Registry, Runtime
from bot.handlers import ALL_CONVERSATIONS
from bot.i18n import LOCALES_DIR, Translator
from bot.state import ChatStore, DbChatStore, RedisChatStore
from core.chat_state import AlreadyHandledError, ChatStates, ChatStateView, UpdateWrites
from core.errors import ErrorCode, ShopError
from core.shop import Shop

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class PageCallback(Callback):
    prefix = "tpage"
    item: int
    page: int
    sort: Literal["new", "top"]
    mine: bool
    tag: str | None


# --- the callback codec ------------------------------------------------------------------


def test_callback_round_trip() -> None:
    data = PageCallback(item=42, page=0, sort="top", mine=True, tag=None)
    packed = data.pack()
    assert packed == "tpage:42:0:top:1:"
    assert PageCallback.unpack(packed) == data


@pytest.mark.parametrize(
    "raw",
    [
        "tpage:42:0:top:1",  # a field short
        "tpage:42:0:top:1::",  # a field too many
        "other:42:0:top:1:",  # someone else's prefix
        "tpage:-1:0:top:1:",  # negative id
        "tpage:042:0:top:1:",  # not canonical
        "tpage:+42:0:top:1:",
        "tpage: 42:0:top:1:",
        "tpage:42:0:top:true:",
        "tpage:42:0:best:1:",  # not one of the choices
        "tpage:4.2:0:top:1:",
        "tpage:42:0:top:1:" + "x" * 60,  # over 64 bytes
        "",
    ],
)
def test_untrusted_callback_data_is_refused(raw: str) -> None:
    with pytest.raises(BadCallbackError):
        PageCallback.unpack(raw)


def test_pack_refuses_what_telegram_would() -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        PageCallback(item=1, page=1, sort="new", mine=False, tag="长" * 20).pack()
    with pytest.raises(ValueError, match="must not contain"):
        PageCallback(item=1, page=1, sort="new", mine=False, tag="a:b").pack()
    with pytest.raises(ValueError, match="negative"):
        PageCallback(item=-5, page=1, sort="new", mine=False, tag=None)


def test_prefixes_are_unique() -> None:
    with pytest.raises(TypeError, match=r"prefix .tpage. already used by .*PageCallback"):

        class Clash(Callback):
            prefix = "tpage"

    assert Callback._by_prefix["tpage"] is PageCallback


def test_class_names_are_unique() -> None:
    """A second class of a used name is refused even on a fresh prefix (it used to replace)."""
    from bot.handlers.browse import ProductCallback

    with pytest.raises(TypeError, match="class name 'ProductCallback' already used"):

        class ProductCallback(Callback):  # type: ignore[no-redef]
            prefix = "tclash"

    assert "tclash" not in Callback._by_prefix
    assert Callback._by_name["ProductCallback"].__module__ == "bot.handlers.browse"


def test_every_handler_callback_has_its_own_name_and_prefix() -> None:
    """Importing all handlers registers each callback once: no clash is hidden at import."""
    import bot.handlers.admin_products
    import bot.handlers.admin_stats
    import bot.handlers.admin_stock
    import bot.handlers.browse
    import bot.handlers.orders  # noqa: F401

    ours = [cls for cls in Callback._by_prefix.values() if cls.__module__.startswith("bot.")]
    assert len({cls.__name__ for cls in ours}) == len(ours)
    assert set(Callback._by_name.values()) == set(Callback._by_prefix.values())


def test_a_button_packs_its_callback() -> None:
    assert Button("Go", PageCallback(item=1, page=2, sort="new", mine=False, tag="x")).data == (
        "tpage:1:2:new:0:x"
    )
    with pytest.raises(ValueError, match="exactly one"):
        Button("Nothing")


# --- catalogs ----------------------------------------------------------------------------


def _catalog(locale: str) -> dict[str, Any]:
    with (LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return {message.id: message for message in read_po(handle) if message.id}


def test_every_message_is_translated_in_both_catalogs() -> None:
    keywords = {"_": None, "N_": None, "ngettext": (1, 2)}
    in_code: set[Any] = set()
    for folder in ("bot", "core"):
        for _, _, message, _, _ in extract_from_dir(ROOT / folder, keywords=keywords):
            in_code.add(message)
    assert in_code, "nothing extracted: wrong keywords?"
    problems = []
    for locale in ("zh_CN", "en"):
        catalog = _catalog(locale)
        for msgid in sorted(in_code, key=str):
            entry = catalog.get(msgid)
            if entry is None:
                problems.append(f"{locale}: missing {msgid!r} (run `make i18n`)")
            elif entry.fuzzy:
                problems.append(f"{locale}: fuzzy {msgid!r}")
            else:
                strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
                if not all(strings):
                    problems.append(f"{locale}: untranslated {msgid!r}")
    assert not problems, "\n".join(problems)


def test_money_numbers_and_times_follow_the_locale(shop: Shop) -> None:
    zh = Translator("zh_CN", currency="CNY", zone=shop.settings.zone)
    en = zh.for_locale("en")
    assert zh.money(123456) == "¥1,234.56"
    assert en.money(5) == "¥0.05"
    assert en.number(1234567) == "1,234,567"
    assert zh.datetime(shop.clock.now()) == "2026-11-22 10:00"


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(ErrorCode))
@pytest.mark.parametrize("locale", ["zh_CN", "en"])
def test_every_error_code_has_a_message(shop: Shop, code: ErrorCode, locale: str) -> None:
    t = Translator(locale, currency="CNY", zone=shop.settings.zone)
    text = render_error(ShopError(code), t, shop.ladder)
    assert text
    assert code.value not in text
    if locale == "zh_CN":
        assert re.search(r"[\u4e00-\u9fff]", text), text


def test_refusal_details_are_formatted(shop: Shop) -> None:
    zh = Translator("zh_CN", currency="CNY", zone=shop.settings.zone)
    en = zh.for_locale("en")
    short = ShopError(ErrorCode.INSUFFICIENT_BALANCE, balance=1050, required=5000, missing=3950)
    assert render_error(short, zh, shop.ladder) == "当前余额 ¥10.50，还差 ¥39.50，请先充值。"
    tier = ShopError(ErrorCode.NOT_ALLOWED_FOR_TIER, capability="export", required="gold")
    assert render_error(tier, en, shop.ladder) == "This is available from Gold up."
    assert render_error(tier, zh, shop.ladder) == "黄金会员及以上等级才能使用此功能。"
    sold_out = ShopError(ErrorCode.OUT_OF_STOCK, available=0, sku="x")
    assert render_error(sold_out, en, shop.ladder) == "Sorry, this item is sold out for now."


# --- state and de-duplication --------------------------------------------------------------


@pytest.fixture
async def redis() -> Any:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except RedisConnectionError:
        await client.aclose()
        pytest.skip("no Redis at 127.0.0.1:6379")
    yield client
    await client.aclose()


async def _stored(store: ChatStore, key: str) -> ChatStateView:
    """The state under `key` (chat:user), read the way an update reads it."""
    return (await store.arrive(int(key.split(":")[1]), key, None)).state


async def _round_trip(store: ChatStore) -> None:
    assert (await _stored(store, "1:1")).state is None
    buying = ChatStateView("buy:quantity", {"product": 7, "name": "点卡"})
    await store.settle(UpdateWrites(state=("1:1", buying)))
    confirming = ChatStateView("buy:confirm", {"product": 7, "quantity": 2})
    await store.settle(UpdateWrites(state=("1:1", confirming)))
    assert await _stored(store, "1:1") == confirming
    assert (await _stored(store, "2:2")).state is None
    await store.settle(UpdateWrites(state=("1:1", ChatStateView())))
    assert (await _stored(store, "1:1")).state is None


async def test_db_state_store_round_trip(shop: Shop) -> None:
    await _round_trip(DbChatStore(ChatStates(shop.db, shop.clock, "telegram")))


async def test_redis_state_store_round_trip(shop: Shop, redis: Redis) -> None:
    records = ChatStates(shop.db, shop.clock, "telegram")
    await _round_trip(
        RedisChatStore(records, redis, "telegram", namespace=f"test-{secrets.token_hex(4)}")
    )


async def test_db_claims_each_update_once(shop: Shop) -> None:
    """A claim riding an effect rolls it back when the update was claimed already."""
    records = ChatStates(shop.db, shop.clock, "telegram")
    assert not (await records.arrive(1, None, 77)).seen
    await records.settle(UpdateWrites(claim=77))
    await records.settle(UpdateWrites(claim=77))  # at the end: a taken claim is no error
    assert (await records.arrive(1, None, 77)).seen
    assert not (await records.arrive(1, None, 78)).seen
    assert not (await ChatStates(shop.db, shop.clock, "other").arrive(1, None, 77)).seen
    with (
        pytest.raises(AlreadyHandledError),
        shop.db.riding(records.rider(UpdateWrites(claim=77))),
    ):
        await shop.members.register(42, display_name="rolled back")
    assert await shop.members.by_telegram(42) is None


async def test_redis_claims_each_update_once(shop: Shop, redis: Redis) -> None:
    store = RedisChatStore(
        ChatStates(shop.db, shop.clock, "telegram"),
        redis,
        "telegram",
        namespace=f"test-{secrets.token_hex(4)}",
    )
    arrivals = await asyncio.gather(*(store.arrive(1, "1:1", 77) for _ in range(8)))
    assert sorted(arrival.seen for arrival in arrivals) == [False] + [True] * 7


async def test_a_burst_beyond_the_redis_pool_waits_instead_of_dropping_updates(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py's default pool raised MaxConnectionsError past its size: updates were lost."""
    client = redis_client(REDIS_URL, max_connections=2)
    try:
        await client.ping()
    except RedisConnectionError:
        await client.aclose()
        pytest.skip("no Redis at " + REDIS_URL)
    runtime = build_runtime(shop, client)
    transport = RecordingTransport()
    first_update = secrets.randbelow(10**12)
    burst = [_message("/help", first_update + n, user_id=700_000 + n) for n in range(60)]
    try:
        with caplog.at_level(logging.ERROR):
            await asyncio.gather(*(runtime.handle(incoming, transport) for incoming in burst))
    finally:
        await client.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sorted(chat for chat, _ in transport.sent) == [700_000 + n for n in range(60)]


# --- the runtime, over a recording transport ----------------------------------------------


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.answers: list[tuple[str, str | None, bool]] = []
        self.edits: list[tuple[int, int, str]] = []

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        self.sent.append((chat_id, text))
        return len(self.sent)

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        self.edits.append((chat_id, message_id, text))

    async def copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        raise NotImplementedError

    async def answer_callback(
        self, callback_id: str, text: str | None = None, alert: bool = False
    ) -> None:
        self.answers.append((callback_id, text, alert))

    async def send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None = None
    ) -> int:
        raise NotImplementedError

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> int:
        raise NotImplementedError

    async def download(self, document: Document) -> bytes:
        raise NotImplementedError


class PokeCallback(Callback):
    prefix = "tpoke"
    n: int


def _runtime(shop: Shop) -> Runtime:
    probe = Conversation("probe")

    @probe.command("refuse")
    async def refuse(ctx: Context) -> None:
        ctx.state.set("probe:typing", step=1)
        raise ShopError(ErrorCode.INSUFFICIENT_BALANCE, balance=0, missing=100, required=100)

    @probe.command("crash")
    async def crash(ctx: Context) -> None:
        ctx.state.set("probe:typing", step=1)
        raise RuntimeError("boom")

    @probe.command("ask")
    async def ask(ctx: Context) -> None:
        ctx.state.set("probe:typing", step=1)
        await ctx.reply("how many?")

    @probe.state("probe:typing")
    async def typed(ctx: Context) -> None:
        ctx.state.clear()
        await ctx.reply(f"got {ctx.incoming.text} at step {ctx.state.get('step', 'none')}")

    @probe.callback(PokeCallback)
    async def poked(ctx: Context, data: PokeCallback) -> None:
        if data.n == 0:
            raise RuntimeError("poked wrong")
        await ctx.reply(f"poked {data.n}")

    base = build_runtime(shop)
    return Runtime(shop, Registry([probe, *ALL_CONVERSATIONS]), base.store)


def _message(text: str, update_id: int, user_id: int = 501) -> Incoming:
    if text.startswith("/"):
        name, _, args = text[1:].partition(" ")
        return Incoming(
            kind="command",
            user_id=user_id,
            chat_id=user_id,
            text=text,
            command=name,
            args=args,
            update_id=update_id,
            language_code="en",
        )
    return Incoming(
        kind="text",
        user_id=user_id,
        chat_id=user_id,
        text=text,
        update_id=update_id,
        language_code="en",
    )


def _tap(data: str, update_id: int, user_id: int = 501) -> Incoming:
    return Incoming(
        kind="callback",
        user_id=user_id,
        chat_id=user_id,
        callback_id=f"q{update_id}",
        callback_data=data,
        callback_message_id=1,
        update_id=update_id,
        language_code="en",
    )


async def test_state_is_saved_only_when_the_handler_succeeds(shop: Shop) -> None:
    runtime, transport = _runtime(shop), RecordingTransport()
    await runtime.handle(_message("/refuse", 1), transport)
    assert transport.sent[-1] == (
        501,
        "Your balance is ¥0.00, ¥1.00 short for this. Please top up first.",
    )
    await runtime.handle(_message("/crash", 2), transport)
    assert "something went wrong" in transport.sent[-1][1]
    assert (await _stored(runtime.store, "501:501")).state is None

    await runtime.handle(_message("/ask", 3), transport)
    assert (await _stored(runtime.store, "501:501")).state == "probe:typing"
    await runtime.handle(_message("7", 4), transport)
    assert transport.sent[-1][1] == "got 7 at step none"
    assert (await _stored(runtime.store, "501:501")).state is None


async def test_a_command_abandons_pending_input(shop: Shop) -> None:
    runtime, transport = _runtime(shop), RecordingTransport()
    await runtime.handle(_message("/ask", 1), transport)
    await runtime.handle(_message("/help", 2), transport)
    assert (await _stored(runtime.store, "501:501")).state is None
    await runtime.handle(_message("7", 3), transport)
    assert "send /help" in transport.sent[-1][1]


async def test_every_callback_is_answered_once(shop: Shop) -> None:
    runtime, transport = _runtime(shop), RecordingTransport()
    await runtime.handle(_tap("tpoke:3", 1), transport)
    await runtime.handle(_tap("tpoke:0", 2), transport)  # the handler crashes
    await runtime.handle(_tap("tpoke:x", 3), transport)  # malformed
    await runtime.handle(_tap("nobody:1", 4), transport)  # unknown prefix
    await runtime.handle(_tap("tpoke:3", 4), transport)  # a redelivery: already answered
    assert [answer[0] for answer in transport.answers] == ["q1", "q2", "q3", "q4"]
    assert transport.edits == [(501, 1, "poked 3")]
    assert "something went wrong" in (transport.answers[1][1] or "")
    assert (transport.answers[2][1] or "").startswith("This button is no longer valid")
    assert transport.answers[3][2] is True


def test_registry_refuses_clashes() -> None:
    first, second = Conversation("first"), Conversation("second")

    @first.command("same")
    async def one(ctx: Context) -> None: ...

    @second.command("other", "same")
    async def two(ctx: Context) -> None: ...

    with pytest.raises(ValueError, match="'same' is registered twice"):
        Registry([first, second])


async def test_terminal_chat_speaks_the_same_conversations(shop: Shop) -> None:
    runtime, out = build_runtime(shop), io.StringIO()
    script = io.StringIO("/start\n/9\n/2\n/frobnicate\n")
    await terminal_chat(runtime, user_id=9, lang="zh", stdin=script, stdout=out)
    shown = out.getvalue()
    assert "欢迎光临！" in shown
    assert "[/9] 🌐 Language 语言" in shown
    assert "Welcome, Terminal!" in shown
    assert "<b>" not in shown
    assert "I don't know the command /frobnicate" in shown
    member = await shop.members.by_telegram(9)
    assert member is not None
    assert member.locale == "en"

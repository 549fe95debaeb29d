"""Hostile and extreme input through the real bot: refused politely, audited, never a crash.

Forged button data (random, and the boundaries that once crashed handlers), the longest
names and texts Telegram allows (with NUL bytes and lone surrogates a client can put in
JSON), and webhook bodies that are no update, for both adapters on both databases.
"""

from __future__ import annotations

import logging
import random
import string
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import aiohttp
import pytest
from sqlalchemy import select

from bot.callbacks import Callback
from bot.errors import bad_button, render_error
from bot.framework import Registry
from bot.handlers import ALL_CONVERSATIONS
from bot.handlers.admin import admins_only
from bot.names import actor_for
from core.clock import ManualClock
from core.config import Settings
from core.errors import ErrorCode, ShopError
from core.models import (
    AuditEntry,
    Base,
    Member,
    ProcessedUpdate,
    TicketMessage,
    Violation,
    WalletEntry,
)
from core.shop import Shop
from core.text import BIGINT_MAX, INTEGER_MAX, storable
from core.uow import Database
from tests.botapi import BotApiStub
from tests.e2e.harness import WEBHOOK_SECRET, Chat, running_bot, settle, webhook_settings
from tests.e2e.test_membership import t

STRANGER = 3_101
ADMIN = 9_101
#: Tables a refused tap may write to: the update's id, and the audit row of an attempt.
BOOKKEEPING = {ProcessedUpdate.__tablename__, AuditEntry.__tablename__}
#: Number spellings no button carries: past INTEGER, past BIGINT, past 64 bits, not ASCII.
BAD_NUMBERS = (
    str(INTEGER_MAX + 1),
    str(BIGINT_MAX + 1),
    str(2**64),
    "99999999999999999999",
    "-1",
    "²",
    "٣",
    "1e3",
    "0x1",
    "\x00",
    "\ud800",
)


@pytest.fixture
def bot_settings(bot_settings: Settings) -> Settings:
    return bot_settings.model_copy(update={"admin_ids": [ADMIN]})


def forged_datas(seed: int, count: int) -> list[str]:
    """Boundary cases for every known prefix, then random data, reproducibly."""
    registry = Registry(ALL_CONVERSATIONS)
    datas = ["buypay:\ud800", "admbs:cancel\x00", "\ud800", "\x00", ":", "", "x" * 200]
    for prefix, spec in sorted(registry.callbacks.items()):
        fields = list(spec.data_type.model_fields)
        for index in range(len(fields)):
            for bad in BAD_NUMBERS:
                values = ["1"] * len(fields)
                values[index] = bad
                datas.append(":".join([prefix, *values]))
    rng = random.Random(seed)
    prefixes = sorted(registry.callbacks)
    alphabet = string.printable + "\x00\ud800\udfff²名😀\ufffd"
    while len(datas) < count:
        head = rng.choice([*prefixes, "".join(rng.choices(string.ascii_lowercase, k=4))])
        tail = "".join(rng.choices(alphabet, k=rng.randint(0, 70)))
        datas.append(f"{head}:{tail}" if rng.random() < 0.8 else tail)
    return datas


def _plain_value(annotation: Any) -> str:
    """A value a field of this type accepts: a Literal's first choice, else `1`."""
    choices = get_args(annotation)
    return str(choices[0]) if get_origin(annotation) is Literal else "1"


def extreme_datas() -> list[str]:
    """Well-formed data with the largest id a button may carry in each number field."""
    datas = []
    for prefix, spec in sorted(Registry(ALL_CONVERSATIONS).callbacks.items()):
        fields = spec.data_type.model_fields
        plain = [_plain_value(info.annotation) for info in fields.values()]
        for index, info in enumerate(fields.values()):
            if info.annotation in (int, int | None):
                values = [*plain]
                values[index] = str(INTEGER_MAX)
                datas.append(":".join([prefix, *values]))
    return datas


def is_admin_prefix(data: str) -> bool:
    spec = Registry(ALL_CONVERSATIONS).callbacks.get(Callback.prefix_of(storable(data)))
    return spec is not None and spec.guard is admins_only


async def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the shop keeps, but the bookkeeping of updates and audit."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with db.read() as session:
        for table in Base.metadata.sorted_tables:
            if table.name not in BOOKKEEPING:
                result = await session.execute(select(table).order_by(*table.primary_key))
                rows[table.name] = [tuple(row) for row in result]
    return rows


async def press_all(api: BotApiStub, who: Chat, message_id: int, datas: list[str]) -> list[str]:
    """Inject every tap at once (as a flood would), then wait until each is answered."""
    queries = []
    for data in datas:
        update = api.inject_callback(who.user, message_id, data, require_button=False)
        queries.append(update["callback_query"]["id"])
    who.queries.extend(queries)
    await api.wait_for(
        lambda: all(q in api.answered_callbacks for q in queries),
        timeout=120,
        what=f"answers to {len(queries)} forged taps",
    )
    await settle(api)
    return queries


def refusals(locale: str, shop: Shop) -> set[str]:
    """Every polite no in `locale`: a stale button, admins only, or a shop refusal."""
    translator = t(locale)
    return {
        bad_button(translator),
        translator._("Sorry, this is only for the shop's admins."),
        *(render_error(ShopError(code), translator, shop.ladder) for code in ErrorCode),
    }


async def test_forged_button_data_is_refused_audited_and_changes_nothing(
    chat: Callable[..., Chat],
    bot: BotApiStub,
    shop: Shop,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger = chat(STRANGER, language_code="zh-hans")
    admin = chat(ADMIN, language_code="en")
    await stranger.say("/start")
    await admin.say("/start")
    before = await snapshot(db)
    datas = forged_datas(seed=7, count=600)

    with caplog.at_level(logging.INFO):
        answered = await press_all(bot, stranger, stranger.last_keyboard().message_id, datas)
        boundary = [d for d in datas if d.count(":") >= 1 and not is_admin_prefix(d)][:150]
        admin_queries = await press_all(bot, admin, admin.last_keyboard().message_id, boundary)

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    allowed_zh, allowed_en = refusals("zh_CN", shop), refusals("en", shop)
    for query, data in zip(answered, datas, strict=True):
        answer = bot.answered_callbacks[query]
        assert answer.show_alert, data
        assert answer.text in allowed_zh, (data, answer.text)
    for query, data in zip(admin_queries, boundary, strict=True):
        answer = bot.answered_callbacks[query]
        assert answer.show_alert, data
        assert answer.text in allowed_en, (data, answer.text)
    assert await snapshot(db) == before

    async with db.read() as session:
        denied = list(
            await session.scalars(
                select(AuditEntry.target).where(
                    AuditEntry.action == "denied", AuditEntry.actor == actor_for(STRANGER)
                )
            )
        )
    expected = [storable(d)[:128] for d in datas if is_admin_prefix(d)]
    assert sorted(denied) == sorted(expected)
    assert len(expected) > 100

    # The largest ids a button may carry are looked up, not crashed on, whoever taps.
    extremes = extreme_datas()
    assert len(extremes) > 20
    with caplog.at_level(logging.INFO):
        await press_all(bot, admin, admin.last_keyboard().message_id, extremes)
        await press_all(bot, stranger, stranger.last_keyboard().message_id, extremes)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# --- the longest of everything Telegram allows ---------------------------------------------

FIRST_NAME = "𝕬" * 63 + "\ud800"  # 64 characters, one a lone surrogate from a raw JSON client
LAST_NAME = "名" * 63 + "\x00"
USERNAME = "u" * 32
LONGEST_TEXT = ("长" * 2000 + "\x00" + "\udfff") * 2 + "x" * 94  # 4096 characters


async def test_the_longest_names_and_texts_are_stored_on_every_database(
    chat: Callable[..., Chat], api: BotApiStub, shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    names = {"first_name": FIRST_NAME, "last_name": LAST_NAME}
    member = chat(4_201, language_code="x" * 35, username=USERNAME, **names)
    admin = chat(ADMIN, language_code="en", username="b" * 32, **names)
    en = t("en")
    with caplog.at_level(logging.INFO):
        await member.say("/start")
        await member.say("/ticket")
        await member.tap(t("en")._("Something else"))
        await member.say(LONGEST_TEXT)

        await admin.say("/admin")
        await admin.tap(en._("👥 Members"))
        for nobody in ("²", "#²", "99999999999999999999", "\x00"):
            [missing] = await admin.say(nobody)
            assert en._("No member {query}. Send a Telegram id or @username.")[:9] in (
                missing.text or ""
            )
        [card] = await admin.say("@" + USERNAME.upper())
        assert "4201" in (card.text or "")
        await admin.tap(en._("💰 Top up"))
        for wrong in ("1e1000000", "99999999999999999999", "²"):
            [hint] = await admin.say(wrong)
            assert en._("Please send an amount in yuan, such as 100 or 12.50.") in (hint.text or "")
        await admin.say("100")
        await admin.say(LONGEST_TEXT)
        await admin.tap(en._("🚩 Flag violation"))
        await admin.say(LONGEST_TEXT)
        await admin.tap(en._("👤 Manager"))
        [too_long] = await admin.say("7700001 " + "A" * 300)
        assert en._("That name is too long: at most {max} characters.").format(max=128) in (
            too_long.text or ""
        )
        [not_an_id] = await admin.say("99999999999999999999 Amy")
        assert en._("Please send the Telegram id, a space, then the name: 7700001 Amy") in (
            not_an_id.text or ""
        )

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    full_name = storable(f"{FIRST_NAME} {LAST_NAME}")[:128]  # 129 with the space: cut
    async with shop.db.read() as session:
        stored = {
            row.telegram_id: (row.display_name, row.username)
            for row in await session.scalars(select(Member))
        }
        [entry] = list(await session.scalars(select(WalletEntry)))
        [violation] = list(await session.scalars(select(Violation)))
        [message] = list(await session.scalars(select(TicketMessage)))
    assert stored == {4_201: (full_name, USERNAME), ADMIN: (full_name, "b" * 32)}
    assert entry.amount == 10_000
    assert entry.reason == violation.reason == message.text == storable(LONGEST_TEXT)


# --- webhook bodies --------------------------------------------------------------------------

BROKEN_BODIES = [
    b"{not json",
    b"\xff\xfe\x00",
    b"[1, 2]",
    b'"an update"',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"update_id": 1, "message": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001,
    b'{"update_id": "one"}',
    b'{"update_id": 2, "message": "text"}',
    b'{"update_id": 3, "callback_query": [1, 2, 3]}',
]


async def test_a_webhook_body_that_is_no_update_is_a_400_in_one_line(
    api: BotApiStub,
    bot_settings: Settings,
    db: Database,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = webhook_settings(bot_settings)
    url = str(settings.webhook_url)
    headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
    async with running_bot(api, settings, clock):
        with caplog.at_level(logging.INFO):
            async with aiohttp.ClientSession() as session:
                for body in BROKEN_BODIES:
                    async with session.post(url, data=body, headers=headers) as response:
                        assert response.status == 400, body[:40]
        member = Chat(api, api.user(4_301, language_code="en", first_name="Web"))
        [reply] = await member.say("/start")
        assert "Welcome, Web!" in (reply.text or "")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    refused = [r for r in caplog.records if "webhook: refused a body" in r.getMessage()]
    assert len(refused) == len(BROKEN_BODIES)

"""Untrusted input is bounded where it is parsed: refused politely, never a crash.

Button data, typed search queries and amounts, and names from Telegram reach the shop
from people who may be hostile or unlucky. Each case here once crashed a handler or a
transaction (`OverflowError`, `UnicodeEncodeError`, `decimal.Overflow`, a NUL byte or a
129-character name on PostgreSQL); end to end, through the real bot, they are in
tests/e2e/test_forged.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.callbacks import BadCallbackError
from bot.handlers.buy import PayCallback
from bot.handlers.orders import OrderCallback
from bot.incoming import callback_incoming, message_incoming
from core.audit import DENIED
from core.errors import ErrorCode, ShopError
from core.models import TierChange
from core.money import MAX_FEN, parse_yuan
from core.shop import Shop
from core.text import BIGINT_MAX, INTEGER_MAX, storable, whole_number

#: What Telegram allows at most: 64 characters of first name, 64 of last name, 32 of username.
FIRST_NAME = "𝕬" * 64  # astral characters: two UTF-16 units, four UTF-8 bytes each
LAST_NAME = "名" * 64
USERNAME = "u" * 32


# --- button data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        f"order:{INTEGER_MAX + 1}:1",  # beyond PostgreSQL INTEGER
        "order:9223372036854775808:1",  # beyond SQLite's 64-bit integers
        f"order:1:{INTEGER_MAX + 1}",
        "order:²:1",
        "buypay:\ud800",  # a lone surrogate: not encodable as UTF-8
        "buypay:ab\x00",
        "buypay:ab\ufffd",  # what the edge puts in place of either
        "buypay:a\nb",
    ],
)
def test_out_of_range_or_unprintable_data_is_a_bad_button(raw: str) -> None:
    data_type = OrderCallback if raw.startswith("order") else PayCallback
    with pytest.raises(BadCallbackError):
        data_type.unpack(raw)


def test_the_largest_id_is_still_a_button() -> None:
    assert OrderCallback.unpack(f"order:{INTEGER_MAX}:1").order == INTEGER_MAX


# --- text at the edge ------------------------------------------------------------------------


class _User:
    id = 42
    language_code = "en\x00"
    username = "a\ud800b"
    full_name = "x\x00y"


class _Chat:
    id = 42
    type = "private"


class _Message:
    message_id = 1
    chat = _Chat()
    from_user = _User()
    text = "hi\x00 \udfff there"
    caption = None
    document = None
    reply_to_message = None
    successful_payment = None
    refunded_payment = None


class _Query:
    id = "q1"
    from_user = _User()
    data = "admbs:cancel\x00"
    message = _Message()


def test_the_edge_makes_every_text_storable() -> None:
    message = message_incoming(7, _Message())
    assert message is not None
    assert message.text == "hi\ufffd \ufffd there"
    assert (message.full_name, message.username, message.language_code) == (
        "x\ufffdy",
        "a\ufffdb",
        "en\ufffd",
    )
    tap = callback_incoming(8, _Query())
    assert tap.callback_data == "admbs:cancel\ufffd"
    # A valid surrogate pair is one character in a str, and stays.
    assert storable("😀") == "😀"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        ("-12", -12),
        ("²", None),
        ("٣", None),
        ("1.0", None),
        ("", None),
        ("-", None),
        (str(INTEGER_MAX), INTEGER_MAX),
        (str(INTEGER_MAX + 1), None),
        ("9" * 5000, None),
    ],
)
def test_whole_numbers_are_ascii_and_bounded(text: str, expected: int | None) -> None:
    assert whole_number(text) == expected


# --- amounts -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1e1000000", "-1e1000000", "9e999999", "21474836.48", "NaN"])
def test_an_amount_beyond_the_columns_is_invalid_not_an_overflow(text: str) -> None:
    with pytest.raises(ShopError) as refused:
        parse_yuan(text)
    assert refused.value.code is ErrorCode.INVALID_AMOUNT


def test_the_largest_amount_parses() -> None:
    assert parse_yuan("21474836.47") == MAX_FEN
    assert parse_yuan("1E+2") == 10_000


# --- the database ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["²", "#²", "99999999999999999999", f"#{INTEGER_MAX + 1}", str(BIGINT_MAX + 1), "@", "\x00"],
)
async def test_member_search_refuses_what_no_column_holds(shop: Shop, query: str) -> None:
    with pytest.raises(ShopError) as refused:
        await shop.members.find(query)
    assert refused.value.code is ErrorCode.MEMBER_NOT_FOUND


async def test_a_member_with_the_longest_telegram_name_registers(shop: Shop) -> None:
    """129 characters with the space: cut to the column's 128 rather than refused."""
    full_name = f"{FIRST_NAME} {LAST_NAME}"
    assert len(full_name) == 129
    member = await shop.members.register(
        10_001, username=USERNAME, display_name=full_name, language_code="zh-hans"
    )
    assert (member.display_name, member.username) == (full_name[:128], USERNAME)
    again = await shop.members.register(10_001, username="v" * 100, display_name="x\x00" * 99)
    assert (again.display_name, again.username) == (("x\ufffd" * 99)[:128], "v" * 64)
    assert (await shop.members.find("@" + "V" * 64)).id == member.id
    assert (await shop.members.find("10001")).id == member.id


async def test_a_long_reason_for_a_tier_change_is_kept(shop: Shop) -> None:
    member = await shop.members.register(10_002)
    await shop.tiers.set_tier(member.id, "gold", actor="cli:root", reason="调" * 500)
    async with shop.db.read() as session:
        assert await session.scalar(select(TierChange.reason)) == "调" * 500


async def test_a_denied_attempt_with_a_nul_byte_is_audited(shop: Shop) -> None:
    await shop.operations.audit.denied("tg:3001", "admbs:cancel\x00" + "x" * 500)
    [row] = await shop.operations.audit.recent(actor="tg:3001", action=DENIED)
    assert row.target == ("admbs:cancel\ufffd" + "x" * 500)[:128]


async def test_audit_states_with_unstorable_text_are_kept(shop: Shop) -> None:
    await shop.operations.audit.log(
        "cli:root", "topup", "member:1", None, {"reason": "a\x00\ud800"}
    )
    [row] = await shop.operations.audit.recent(actor="cli:root")
    assert row.after == {"reason": "a\ufffd\ufffd"}

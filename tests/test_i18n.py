"""The catalogs read as one careful writer wrote them, in each language.

Chinese: the member is always 您, the manager always 专属客户经理. English: a count is
never followed by a fixed plural ("1 duplicates"), so every such message goes through
`ngettext`, and both catalogs carry the plural rule their language needs. Money is
written "¥" for the shop's yuan in both languages.
"""

from __future__ import annotations

import re
from datetime import UTC
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po

from bot.i18n import LOCALES_DIR, Translator

ROOT = Path(__file__).resolve().parent.parent

#: Placeholders that hold words or money, never a count; every other one is taken to be
#: a number, so a new count is checked without anyone listing it.
NOT_COUNTS = frozenset(
    {
        "amount", "audience", "balance", "category", "command", "date", "from_tier", "kind",
        "label", "language", "member", "name", "pool", "pools", "price", "quarter", "query",
        "sku", "source", "status", "text", "tier", "time", "to_tier", "topic", "window",
    }
)  # fmt: skip
PLACEHOLDER = re.compile(r"\{(\w+)\}")
#: A count of one followed by a plural noun, possibly after "more" or "of your" and one
#: more word: "1 orders", "+1 points", "1 more growth points", "1 of your points".
FIXED_PLURAL = re.compile(r"(?<![\w.])1\s+(?:(?:more|of\s+your)\s+(?:[a-z-]+\s+)?)?([a-z]+s)\b")
#: Words ending in "s" after a count that are not plural nouns.
NOT_PLURAL_NOUNS = frozenset({"is", "was", "has", "as", "plus", "us", "this", "its", "opens"})


def catalog(locale: str) -> Catalog:
    with (LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=locale)


def translations(message: Message) -> tuple[str, ...]:
    return message.string if isinstance(message.string, tuple) else (message.string,)


def as_one(text: str) -> str:
    """The text with every count set to 1 and every other placeholder left as it is."""
    return PLACEHOLDER.sub(lambda m: m.group(0) if m.group(1) in NOT_COUNTS else "1", text)


def fixed_plurals(text: str) -> list[str]:
    rendered = as_one(text)
    return [
        match.group(0)
        for match in FIXED_PLURAL.finditer(rendered)
        if match.group(1) not in NOT_PLURAL_NOUNS
    ]


# --- plural forms --------------------------------------------------------------------------


def test_the_makefile_extracts_ngettext_with_both_forms() -> None:
    assert "-k ngettext:1,2" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize(
    ("locale", "nplurals", "rule"),
    [("zh_CN", 1, "nplurals=1; plural=0;"), ("en", 2, "nplurals=2; plural=(n != 1);")],
)
def test_each_catalog_has_its_plural_rule_and_forms(locale: str, nplurals: int, rule: str) -> None:
    messages = catalog(locale)
    assert messages.plural_forms == rule
    plural = [m for m in messages if m.id and m.pluralizable]
    assert plural, "no ngettext message at all: wrong extraction keywords?"
    wrong = [m.id for m in plural if len(translations(m)) != nplurals]
    assert not wrong


def test_no_english_message_puts_a_fixed_plural_after_a_count() -> None:
    """Every "{count} things" is an ngettext pair, so one thing is never "1 things"."""
    problems = []
    for message in catalog("en"):
        if not message.id:
            continue
        singular = message.id[0] if isinstance(message.id, tuple) else message.id
        texts = [singular]
        if message.pluralizable:
            texts.append(translations(message)[0])
        else:
            texts += translations(message)
        problems += [f"{singular!r}: {hit!r}" for text in texts for hit in fixed_plurals(text)]
    assert not problems, "use ngettext for:\n" + "\n".join(problems)


def test_the_plural_check_catches_what_it_is_for() -> None:
    assert fixed_plurals("{added} added, {duplicate} duplicates") == ["1 duplicates"]
    assert fixed_plurals("Revenue: {amount} from {orders} orders ({codes} codes)") == [
        "1 orders",
        "1 codes",
    ]
    assert fixed_plurals("earn {count} more growth points") == ["1 more growth points"]
    assert fixed_plurals("⏳ {points} of your points expire") == ["1 of your points"]
    assert fixed_plurals("+{points} point") == []
    assert fixed_plurals("{tier} adds:") == []
    assert fixed_plurals("{count} point expires on {date}") == []


def test_counts_read_right_in_english() -> None:
    en = Translator("en", currency="CNY", zone=UTC)
    assert en.ngettext("{count} duplicate", "{count} duplicates", 1).format(count=1) == (
        "1 duplicate"
    )
    assert en.ngettext("{count} order", "{count} orders", 2).format(count=2) == "2 orders"
    assert en.duration(240) == "4 hours"
    assert en.duration(15) == "15 minutes"


# --- Chinese wording -----------------------------------------------------------------------


def test_chinese_addresses_the_member_as_nin() -> None:
    informal = [m.id for m in catalog("zh_CN") if m.id and any("你" in s for s in translations(m))]
    assert not informal, f"use 您, never 你: {informal}"


def test_chinese_names_the_manager_one_way() -> None:
    """The manager is 专属客户经理 everywhere, never 专属经理, 客户经理 or 经理 alone."""
    variants = []
    for message in catalog("zh_CN"):
        for text in translations(message) if message.id else ():
            for hit in re.finditer("经理", text):
                if text[max(0, hit.start() - 4) : hit.start()] != "专属客户":
                    variants.append(text)
    assert not variants, variants


@pytest.mark.parametrize(
    ("msgid", "wording"),
    [
        ("Order fulfilment rate", "订单履约率"),
        ("⚡ Trial of next level", "⚡ 快速通道：试用高一级会员"),
        ("(your growth points already count for {amount})", "（其中 {amount} 由成长值折算）"),
        ("No serious violations in the last 3 months", "近三个月无严重违规"),
        (
            "After the review of {quarter}, your level has moved from {from_tier} to {to_tier}."
            " Send /level to see how to climb back.",
            "根据{quarter}考核，您的会员等级已由{from_tier}调整为{to_tier}。"
            "发送 /level 查看如何升回。",
        ),
    ],
)
def test_chinese_uses_the_fields_terms(msgid: str, wording: str) -> None:
    assert Translator("zh_CN", currency="CNY", zone=UTC)._(msgid) == wording


def test_a_quarter_reads_as_each_language_says_it() -> None:
    zh = Translator("zh_CN", currency="CNY", zone=UTC)
    assert zh.quarter("2026Q4") == "2026年第4季度"
    assert zh.for_locale("en").quarter("2026Q4") == "Q4 2026"


# --- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
def test_yuan_is_written_with_the_yen_sign_in_both_languages(locale: str) -> None:
    t = Translator(locale, currency="CNY", zone=UTC)
    assert t.money(842) == "¥8.42"
    assert t.money(123456) == "¥1,234.56"
    assert t.money(-500) == "-¥5.00"


def test_other_currencies_keep_their_locale_symbol() -> None:
    assert Translator("en", currency="USD", zone=UTC).money(150) == "$1.50"

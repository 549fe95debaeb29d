"""Babel catalogs and locale-aware formatting.

Text is marked with `_()` (or `N_()` at module level, translated later) and formatted
with `.format()` after translating, so translators see whole sentences with named
placeholders. Catalogs live in `bot/locales/<locale>/LC_MESSAGES/messages.po`; `make i18n`
extracts, merges and compiles them.
"""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, get_currency_symbol
from babel.support import NullTranslations, Translations

from core.members import SUPPORTED_LOCALES, locale_for

LOCALES_DIR = Path(__file__).with_name("locales")
DOMAIN = "messages"

__all__ = ["SUPPORTED_LOCALES", "Translator", "locale_for", "translations"]

#: Symbols the shop's members know, whatever the locale: CLDR writes yuan as "CN¥" in
#: English (to tell it from the yen), but every price in this shop is in yuan and its
#: members, Chinese- or English-speaking, read it as "¥".
SHOP_SYMBOLS: dict[str, str] = {"CNY": "¥"}


def N_(message: str) -> str:  # noqa: N802 - the gettext convention extractors look for
    """Mark text for extraction without translating it yet (module-level constants)."""
    return message


@cache
def translations(locale: str) -> NullTranslations:
    """The catalog for `locale`, from its compiled `.mo`.

    A `.mo` missing or older than its `.po` (someone edited a translation and did not
    run `make compile-locales`) is compiled in memory instead, so the bot never speaks
    from a stale catalog.
    """
    if locale not in SUPPORTED_LOCALES:
        raise ValueError(f"unsupported locale {locale!r}")
    folder = LOCALES_DIR / locale / "LC_MESSAGES"
    po, mo = folder / f"{DOMAIN}.po", folder / f"{DOMAIN}.mo"
    if mo.is_file() and mo.stat().st_mtime >= po.stat().st_mtime:
        return Translations.load(str(LOCALES_DIR), [locale], domain=DOMAIN)
    with po.open("rb") as source:
        catalog = read_po(source, locale=locale, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


@cache
def babel_locale(locale: str) -> Locale:
    """The parsed Babel locale, once per locale: Babel re-parses a locale name (scanning
    its list of locales) on every call given a string, a measured ~0.5 ms per price."""
    return Locale.parse(locale)


@cache
def _cldr_symbol(currency: str, locale: str) -> str:
    return get_currency_symbol(currency, locale=babel_locale(locale))


class Translator:
    """Text and numbers in one locale: what every message to a member goes through."""

    def __init__(self, locale: str, *, currency: str, zone: ZoneInfo) -> None:
        self.locale = locale
        self.currency = currency
        self.zone = zone
        self._catalog = translations(locale)

    def _(self, message: str) -> str:
        return self._catalog.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._catalog.ngettext(singular, plural, n)

    def money(self, fen: int) -> str:
        """An amount in 分 in the shop currency, e.g. ¥1,234.56 (¥ for yuan in every locale)."""
        text = format_currency(Decimal(fen) / 100, self.currency, locale=babel_locale(self.locale))
        symbol = SHOP_SYMBOLS.get(self.currency)
        if symbol is None:
            return text
        return text.replace(_cldr_symbol(self.currency, self.locale), symbol, 1)

    def duration(self, minutes: int) -> str:
        """A support window as a person says it: "4 hours", "15 minutes"."""
        if minutes % 60 == 0:
            hours = minutes // 60
            return self.ngettext("{count} hour", "{count} hours", hours).format(count=hours)
        return self.ngettext("{count} minute", "{count} minutes", minutes).format(count=minutes)

    def quarter(self, label: str) -> str:
        """A quarter label from core (`2026Q4`) as the locale says it: 2026年第4季度, Q4 2026."""
        year, number = label.split("Q")
        return self._("Q{number} {year}").format(number=number, year=year)

    def number(self, value: int | Decimal) -> str:
        return format_decimal(value, locale=babel_locale(self.locale))

    def datetime(self, moment: dt.datetime) -> str:
        """A moment in the shop's time zone, e.g. 2026-11-22 18:00."""
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def for_locale(self, locale: str) -> Translator:
        """The same shop in another member's language (relays, notifications)."""
        return Translator(locale, currency=self.currency, zone=self.zone)

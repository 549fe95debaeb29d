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

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import NullTranslations, Translations

from core.members import SUPPORTED_LOCALES, locale_for

LOCALES_DIR = Path(__file__).with_name("locales")
DOMAIN = "messages"

__all__ = ["SUPPORTED_LOCALES", "Translator", "locale_for", "translations"]


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
        """An amount in 分 as the locale writes the shop currency (¥12.50, CN¥12.50)."""
        return format_currency(Decimal(fen) / 100, self.currency, locale=self.locale)

    def number(self, value: int | Decimal) -> str:
        return format_decimal(value, locale=self.locale)

    def datetime(self, moment: dt.datetime) -> str:
        """A moment in the shop's time zone, e.g. 2026-11-22 18:00."""
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def for_locale(self, locale: str) -> Translator:
        """The same shop in another member's language (relays, notifications)."""
        return Translator(locale, currency=self.currency, zone=self.zone)

"""How the bot names what both its handlers and its background loops show.

An admin acting in the chat is named `tg:<telegram id>` in the audit log and on a
broadcast (so the notifier can tell them how it went); a ticket's category is shown by
its localized topic name.
"""

from __future__ import annotations

from bot.conversation import escape
from bot.i18n import N_, Translator

#: How an admin acting in the chat is named in the audit log and on a broadcast.
ACTOR_PREFIX = "tg:"

#: Topic names for the categories in the ladder's [support] section.
CATEGORY_NAMES: dict[str, str] = {
    "order": N_("Order problem"),
    "invalid_code": N_("Code does not work"),
    "stolen_account": N_("Account stolen"),
    "payment": N_("Payment or top-up"),
    "account": N_("My account"),
    "other": N_("Something else"),
}


def actor_for(telegram_id: int) -> str:
    return f"{ACTOR_PREFIX}{telegram_id}"


def telegram_id_of(actor: str) -> int | None:
    """The chat of an admin named by `actor_for`; None for the shell or the system."""
    number = actor.removeprefix(ACTOR_PREFIX)
    return int(number) if actor.startswith(ACTOR_PREFIX) and number.isdigit() else None


def category_name(t: Translator, category: str) -> str:
    label = CATEGORY_NAMES.get(category)
    return t._(label) if label else escape(category)

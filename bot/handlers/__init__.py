"""Every conversation the bot carries, in routing order (the fallback lives in `help`)."""

from __future__ import annotations

from bot.conversation import Conversation
from bot.handlers import (
    balance,
    browse,
    buy,
    checkin,
    help,
    language,
    level,
    manager,
    orders,
    start,
    ticket,
)

ALL_CONVERSATIONS: tuple[Conversation, ...] = (
    start.conversation,
    language.conversation,
    browse.conversation,
    buy.conversation,
    orders.conversation,
    balance.conversation,
    level.conversation,
    checkin.conversation,
    ticket.conversation,
    manager.conversation,
    help.conversation,
)

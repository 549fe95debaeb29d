"""Every conversation the bot carries, in routing order (the fallback lives in `help`)."""

from __future__ import annotations

from bot.conversation import Conversation
from bot.handlers import (
    admin,
    admin_broadcast,
    admin_members,
    admin_payments,
    admin_products,
    admin_stats,
    admin_stock,
    admin_tickets,
    balance,
    browse,
    buy,
    checkin,
    elsewhere,
    help,
    language,
    level,
    manager,
    orders,
    reservations,
    start,
    ticket,
    topup,
)

ALL_CONVERSATIONS: tuple[Conversation, ...] = (
    start.conversation,
    language.conversation,
    browse.conversation,
    buy.conversation,
    reservations.conversation,
    orders.conversation,
    balance.conversation,
    topup.conversation,
    level.conversation,
    checkin.conversation,
    ticket.conversation,
    manager.conversation,
    admin.conversation,
    admin_products.conversation,
    admin_stock.conversation,
    admin_members.conversation,
    admin_tickets.conversation,
    admin_broadcast.conversation,
    admin_stats.conversation,
    admin_payments.conversation,
    elsewhere.conversation,
    help.conversation,
)

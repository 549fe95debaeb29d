"""What a person did in a chat (`Incoming`), and how a Telegram update says it.

This is the one place that knows the kinds of update the bot reads. aiogram and
python-telegram-bot model the same Bot API objects with the same field names, so one
reading of an update, typed by the protocols below, serves both adapters; the terminal
builds `Incoming`s itself. A new kind of update is a new `IncomingKind`, a branch in
`incoming_from`, its name in `UPDATE_TYPES`, and a route in the runtime
(`bot.framework.Runtime.handle`): no adapter changes.

Payments arrive as three kinds: Telegram asks whether to accept a Stars payment
(`pre_checkout`, answered at once), then says it went through (`paid`, a message with
`successful_payment`) or, later, that it was refunded (`refunded`, a message with
`refunded_payment`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Protocol

from core.text import storable

#: command, text, document: a message; media: a photo, sticker, voice… (no text to read);
#: edited: a message changed after it was sent; callback: a tapped button;
#: member_status: the member blocked or unblocked the bot (Telegram's my_chat_member);
#: pre_checkout: Telegram asks whether to take a payment (pre_checkout_query);
#: paid / refunded: a message saying a payment went through / was refunded.
IncomingKind = Literal[
    "command",
    "text",
    "callback",
    "document",
    "media",
    "edited",
    "member_status",
    "pre_checkout",
    "paid",
    "refunded",
]

#: The Telegram update types `incoming_from` reads, and so what both adapters ask Telegram
#: for (`allowed_updates`). Not asked for, so never sent: channel posts (a channel has no
#: member to answer), inline queries, polls, reactions, `chat_member` (other people's
#: membership, only sent to admins) and join requests: the shop has nothing to do with them.
#: `pre_checkout_query` must be asked for: without it Telegram cancels every Stars payment.
UPDATE_TYPES: tuple[str, ...] = (
    "message",
    "edited_message",
    "callback_query",
    "my_chat_member",
    "pre_checkout_query",
)

#: Message fields that carry something other than text: read as `media`, to be told that
#: text is expected. Looked up by name, as both frameworks name them as the Bot API does.
MEDIA_FIELDS = (
    "animation",
    "audio",
    "contact",
    "dice",
    "location",
    "photo",
    "poll",
    "sticker",
    "story",
    "venue",
    "video",
    "video_note",
    "voice",
)


@dataclass(frozen=True, slots=True)
class Document:
    """A file the member sent; fetch its bytes with `ctx.download(document)`."""

    file_id: str
    filename: str | None
    mime_type: str | None
    size: int | None


@dataclass(frozen=True, slots=True)
class Incoming:
    """One thing a person did in a chat, whatever the framework that carried it."""

    kind: IncomingKind
    user_id: int
    chat_id: int
    chat_type: str = "private"
    update_id: int | None = None
    message_id: int | None = None
    text: str = ""
    #: For commands: the name without `/` or `@bot`, lower case, and the rest of the line.
    command: str | None = None
    args: str = ""
    callback_id: str | None = None
    callback_data: str | None = None
    callback_message_id: int | None = None
    reply_to_message_id: int | None = None
    document: Document | None = None
    #: For member_status: the bot's status in the chat now ("kicked": blocked, "member"…).
    member_status: str | None = None
    #: For pre_checkout: the query to answer.
    pre_checkout_id: str | None = None
    #: For pre_checkout, paid and refunded: the payment as Telegram states it (currency
    #: "XTR" for Stars, the amount in its smallest unit, the payload our invoice carried).
    currency: str | None = None
    total_amount: int | None = None
    invoice_payload: str | None = None
    #: For paid and refunded: `telegram_payment_charge_id`, what a refund names.
    charge_id: str | None = None
    language_code: str | None = None
    username: str | None = None
    full_name: str = ""
    #: The bot's own @username (without @), for links to its private chat; None when the
    #: adapter has none (the terminal).
    bot_username: str | None = None


def split_command(text: str) -> tuple[str, str] | None:
    """`/Start@shop_bot ref_X` → ("start", "ref_X"); None when `text` is no command."""
    if not text.startswith("/") or len(text) < 2:
        return None
    head, _, rest = text[1:].partition(" ")
    name = head.split("@", 1)[0].lower()
    return (name, rest.strip()) if name else None


def addressed_elsewhere(text: str, bot_username: str | None) -> bool:
    """True for `/cmd@other_bot`: in a group, a command meant for another bot."""
    head = text[1:].partition(" ")[0]
    _, at, mention = head.partition("@")
    return bool(at) and bot_username is not None and mention.lower() != bot_username.lower()


# --- Telegram updates, as both frameworks model them ---------------------------------------


class _User(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def language_code(self) -> str | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def full_name(self) -> str: ...


class _Chat(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def type(self) -> str: ...


class _Document(Protocol):
    @property
    def file_id(self) -> str: ...
    @property
    def file_name(self) -> str | None: ...
    @property
    def mime_type(self) -> str | None: ...
    @property
    def file_size(self) -> int | None: ...


class _Replied(Protocol):
    @property
    def message_id(self) -> int: ...


class _Payment(Protocol):
    """A `successful_payment` or `refunded_payment`: the same four fields in both."""

    @property
    def currency(self) -> str: ...
    @property
    def total_amount(self) -> int: ...
    @property
    def invoice_payload(self) -> str | None: ...
    @property
    def telegram_payment_charge_id(self) -> str: ...


class _Message(Protocol):
    @property
    def message_id(self) -> int: ...
    @property
    def chat(self) -> _Chat: ...
    @property
    def from_user(self) -> _User | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def caption(self) -> str | None: ...
    @property
    def document(self) -> _Document | None: ...
    @property
    def reply_to_message(self) -> _Replied | None: ...
    @property
    def successful_payment(self) -> _Payment | None: ...
    @property
    def refunded_payment(self) -> _Payment | None: ...


class _CallbackMessage(Protocol):
    """A message a button sat on; it may be inaccessible (old), but has a chat and an id."""

    @property
    def message_id(self) -> int: ...
    @property
    def chat(self) -> _Chat: ...


class _CallbackQuery(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def from_user(self) -> _User: ...
    @property
    def data(self) -> str | None: ...
    @property
    def message(self) -> _CallbackMessage | None: ...


class _ChatMember(Protocol):
    @property
    def status(self) -> str: ...


class _ChatMemberUpdated(Protocol):
    @property
    def chat(self) -> _Chat: ...
    @property
    def from_user(self) -> _User: ...
    @property
    def new_chat_member(self) -> _ChatMember: ...


class _PreCheckoutQuery(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def from_user(self) -> _User: ...
    @property
    def currency(self) -> str: ...
    @property
    def total_amount(self) -> int: ...
    @property
    def invoice_payload(self) -> str: ...


class _Update(Protocol):
    """The fields of `UPDATE_TYPES`, read by `incoming_from`."""

    @property
    def update_id(self) -> int: ...
    @property
    def message(self) -> _Message | None: ...
    @property
    def edited_message(self) -> _Message | None: ...
    @property
    def callback_query(self) -> _CallbackQuery | None: ...
    @property
    def my_chat_member(self) -> _ChatMemberUpdated | None: ...
    @property
    def pre_checkout_query(self) -> _PreCheckoutQuery | None: ...


class BadUpdateError(ValueError):
    """A webhook body that is no Telegram update (not JSON, not an object, too deep)."""


def update_json(body: bytes) -> dict[str, Any]:
    """The JSON object of a webhook body, or BadUpdateError with a one-line reason.

    The secret header proves the sender, not the body: a proxy can truncate it, and
    whoever learned the secret can send anything. Nesting deeper than Python's recursion
    limit makes `json.loads` raise RecursionError, so that counts as malformed too.
    """
    try:
        update = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadUpdateError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
        raise BadUpdateError("not an update object")
    return update


def incoming_from(update: _Update, bot_username: str | None) -> Incoming | None:
    """The neutral view of an update; None for what carries nothing to answer.

    `bot_username` is the bot's own, to tell a command for it from one for another bot.
    """
    if update.message is not None:
        return message_incoming(update.update_id, update.message, bot_username)
    if update.edited_message is not None:
        return message_incoming(update.update_id, update.edited_message, bot_username, edited=True)
    if update.callback_query is not None:
        return callback_incoming(update.update_id, update.callback_query, bot_username)
    if update.my_chat_member is not None:
        return status_incoming(update.update_id, update.my_chat_member, bot_username)
    if update.pre_checkout_query is not None:
        return pre_checkout_incoming(update.update_id, update.pre_checkout_query, bot_username)
    return None


def _optional(text: str | None) -> str | None:
    return None if text is None else storable(text)


def _sender(user: _User, bot_username: str | None) -> dict[str, Any]:
    return {
        "user_id": user.id,
        "language_code": _optional(user.language_code),
        "username": _optional(user.username),
        "full_name": storable(user.full_name),
        "bot_username": bot_username,
    }


def message_incoming(
    update_id: int, message: _Message, bot_username: str | None = None, *, edited: bool = False
) -> Incoming | None:
    """A message; None when it has no sender or says nothing a member said.

    No sender: an anonymous channel's post in a group. Nothing said: service messages
    (someone joined, a message was pinned…), which the shop does not answer; but the
    two about money (a payment went through, a payment was refunded) are read.
    """
    user = message.from_user
    if user is None:
        return None
    common: dict[str, Any] = {
        "update_id": update_id,
        "chat_id": message.chat.id,
        "chat_type": message.chat.type,
        "message_id": message.message_id,
        "reply_to_message_id": (
            message.reply_to_message.message_id if message.reply_to_message else None
        ),
        **_sender(user, bot_username),
    }
    text = storable(message.text or message.caption or "")
    if edited:
        return Incoming(kind="edited", text=text, **common)
    if message.successful_payment is not None:
        return Incoming(kind="paid", **common, **_payment(message.successful_payment))
    if message.refunded_payment is not None:
        return Incoming(kind="refunded", **common, **_payment(message.refunded_payment))
    if message.document is not None:
        document = Document(
            file_id=message.document.file_id,
            filename=_optional(message.document.file_name),
            mime_type=_optional(message.document.mime_type),
            size=message.document.file_size,
        )
        return Incoming(kind="document", text=text, document=document, **common)
    if message.text is None:
        if any(getattr(message, name, None) for name in MEDIA_FIELDS):
            return Incoming(kind="media", text=text, **common)
        return None
    command = split_command(text)
    if command is not None and not addressed_elsewhere(text, bot_username):
        name, args = command
        return Incoming(kind="command", text=text, command=name, args=args, **common)
    return Incoming(kind="text", text=text, **common)


def _payment(payment: _Payment) -> dict[str, Any]:
    """A payment's fields as Telegram states them; the payload is our own, echoed back."""
    return {
        "currency": storable(payment.currency),
        "total_amount": payment.total_amount,
        "invoice_payload": _optional(payment.invoice_payload),
        "charge_id": storable(payment.telegram_payment_charge_id),
    }


def callback_incoming(
    update_id: int, query: _CallbackQuery, bot_username: str | None = None
) -> Incoming:
    """A tapped inline button."""
    message = query.message
    return Incoming(
        kind="callback",
        update_id=update_id,
        chat_id=message.chat.id if message is not None else query.from_user.id,
        chat_type=message.chat.type if message is not None else "private",
        callback_id=query.id,
        callback_data=storable(query.data or ""),
        callback_message_id=message.message_id if message is not None else None,
        **_sender(query.from_user, bot_username),
    )


def status_incoming(
    update_id: int, change: _ChatMemberUpdated, bot_username: str | None = None
) -> Incoming:
    """The bot's own status changed in a chat: blocked or unblocked in a private chat,
    added to or removed from a group."""
    status = change.new_chat_member.status
    return Incoming(
        kind="member_status",
        update_id=update_id,
        chat_id=change.chat.id,
        chat_type=change.chat.type,
        # aiogram's statuses are a str Enum, whose str() is "ChatMemberStatus.KICKED".
        member_status=status.value if isinstance(status, Enum) else status,
        **_sender(change.from_user, bot_username),
    )


def pre_checkout_incoming(
    update_id: int, query: _PreCheckoutQuery, bot_username: str | None = None
) -> Incoming:
    """Telegram asks whether to take a payment; it has no chat, so the payer's is used."""
    return Incoming(
        kind="pre_checkout",
        update_id=update_id,
        chat_id=query.from_user.id,
        pre_checkout_id=query.id,
        currency=storable(query.currency),
        total_amount=query.total_amount,
        invoice_payload=storable(query.invoice_payload),
        **_sender(query.from_user, bot_username),
    )

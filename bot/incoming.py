"""Telegram updates to the neutral `Incoming`, for both frameworks at once.

aiogram and python-telegram-bot model the same Bot API objects with the same field
names, so one reading of an update, typed by the protocols below, serves both adapters.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from bot.conversation import Document, Incoming, split_command
from core.text import storable


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


def _optional(text: str | None) -> str | None:
    return None if text is None else storable(text)


def message_incoming(update_id: int, message: _Message) -> Incoming | None:
    """A text, command or document message; None when it has no sender (channel posts)."""
    user = message.from_user
    if user is None:
        return None
    common: dict[str, Any] = {
        "update_id": update_id,
        "user_id": user.id,
        "chat_id": message.chat.id,
        "chat_type": message.chat.type,
        "message_id": message.message_id,
        "reply_to_message_id": (
            message.reply_to_message.message_id if message.reply_to_message else None
        ),
        "language_code": _optional(user.language_code),
        "username": _optional(user.username),
        "full_name": storable(user.full_name),
    }
    text = storable(message.text or message.caption or "")
    if message.document is not None:
        document = Document(
            file_id=message.document.file_id,
            filename=_optional(message.document.file_name),
            mime_type=_optional(message.document.mime_type),
            size=message.document.file_size,
        )
        return Incoming(kind="document", text=text, document=document, **common)
    if (command := split_command(text)) is not None:
        name, args = command
        return Incoming(kind="command", text=text, command=name, args=args, **common)
    return Incoming(kind="text", text=text, **common)


def callback_incoming(update_id: int, query: _CallbackQuery) -> Incoming:
    """A tapped inline button."""
    message, user = query.message, query.from_user
    return Incoming(
        kind="callback",
        update_id=update_id,
        user_id=user.id,
        chat_id=message.chat.id if message is not None else user.id,
        chat_type=message.chat.type if message is not None else "private",
        callback_id=query.id,
        callback_data=storable(query.data or ""),
        callback_message_id=message.message_id if message is not None else None,
        language_code=_optional(user.language_code),
        username=_optional(user.username),
        full_name=storable(user.full_name),
    )

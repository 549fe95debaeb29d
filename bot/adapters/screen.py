"""What the terminal chat shows: the bot's messages as text, its buttons numbered.

Messages are shown without their HTML tags; what the bot sends to another chat (an
admin's reply, a notice, the staff chat) is headed with whose chat it is for; photos and
files are saved to disk. `bot.adapters.terminal` reads what is typed.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from bot.conversation import Button, Keyboard, RefundRefusedError
from bot.framework import Runtime
from bot.i18n import Translator
from bot.incoming import Document

TAG = re.compile(r"<[^>]+>")

#: Names a chat (in the terminal's language) for the header over messages sent to it.
ChatNamer = Callable[[int, Translator], Awaitable[str]]


def plain(text: str) -> str:
    """Telegram HTML as a terminal shows it."""
    return html.unescape(TAG.sub("", text))


def photo_suffix(data: bytes) -> str:
    """The file suffix for a photo's bytes (charts are PNG; Telegram photos JPEG)."""
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    return ".img"


class TerminalTransport:
    """Prints what the bot sends; remembers the keyboard of this chat's last menu for taps.

    `t` is the terminal's own language (hints, headers); the chat session keeps it in step
    with the member's.
    """

    def __init__(
        self, out: TextIO, downloads: Path, *, chat_id: int, t: Translator, name_chat: ChatNamer
    ) -> None:
        self._out = out
        self._downloads = downloads
        self._chat_id = chat_id
        self._name_chat = name_chat
        self._ids = itertools.count(1)
        self._last_chat_id = chat_id
        self.t = t
        self.last_buttons: list[Button] = []
        self.last_message_id: int | None = None

    def note(self, text: str) -> None:
        """A line from the terminal itself, not from the bot."""
        print(text, file=self._out)
        self._out.flush()

    async def _head(self, chat_id: int) -> None:
        """A blank line, then whose chat this is for: another's, or back to one's own."""
        print(file=self._out)
        if chat_id != self._chat_id:
            chat = await self._name_chat(chat_id, self.t)
            print(self.t._("──── to {chat} ────").format(chat=chat), file=self._out)
        elif self._last_chat_id != chat_id:
            print(self.t._("──── your chat ────"), file=self._out)
        self._last_chat_id = chat_id

    async def _show(
        self, chat_id: int, text: str, keyboard: Keyboard | None, message_id: int
    ) -> None:
        await self._head(chat_id)
        print(plain(text), file=self._out)
        if keyboard:
            if chat_id == self._chat_id:
                self.last_buttons = [button for row in keyboard for button in row]
                self.last_message_id = message_id
            number = itertools.count(1)
            for row in keyboard:
                cells = []
                for button in row:
                    label = f"[/{next(number)}] {button.text}"
                    cells.append(f"{label} <{button.url}>" if button.url else label)
                print("  " + "   ".join(cells), file=self._out)
        self._out.flush()

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        message_id = next(self._ids)
        await self._show(chat_id, text, keyboard, message_id)
        return message_id

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        await self._show(chat_id, text, keyboard, message_id)

    async def copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        await self._head(to_chat_id)
        source = await self._name_chat(from_chat_id, self.t)
        self.note(
            self.t._("(a copy of message {message} from {chat})").format(
                message=message_id, chat=source
            )
        )
        return next(self._ids)

    async def answer_callback(
        self, callback_id: str, text: str | None = None, alert: bool = False
    ) -> None:
        if text:
            self.note(f"\n{'⚠ ' if alert else '» '}{plain(text)}")

    async def _save(self, chat_id: int, name: str, data: bytes, caption: str | None) -> Path:
        self._downloads.mkdir(parents=True, exist_ok=True)
        path = self._downloads / name
        await asyncio.to_thread(path.write_bytes, data)
        await self._head(chat_id)
        if caption:
            print(plain(caption), file=self._out)
        return path

    async def send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None = None
    ) -> int:
        path = await self._save(chat_id, Path(filename).name, data, caption)
        self.note(self.t._("(file saved: {path})").format(path=path))
        return next(self._ids)

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> int:
        message_id = next(self._ids)
        suffix = photo_suffix(data)
        names = (f"photo-{n}{suffix}" for n in itertools.count(1))
        name = next(n for n in names if not (self._downloads / n).exists())
        path = await self._save(chat_id, name, data, caption)
        self.note(self.t._("(photo saved: {path})").format(path=path))
        return message_id

    async def download(self, document: Document) -> bytes:
        return await asyncio.to_thread(Path(document.file_id).read_bytes)

    # Telegram Stars live in Telegram: the terminal shows an invoice but cannot pay it,
    # and nothing it does asks a pre-checkout question or refunds.

    async def send_invoice(
        self, chat_id: int, title: str, description: str, payload: str, stars: int
    ) -> int:
        message_id = next(self._ids)
        await self._head(chat_id)
        print(plain(f"{title}\n{description}"), file=self._out)
        self.note(
            self.t.ngettext(
                "(an invoice for {stars} Telegram Star: Stars are paid in Telegram,"
                " not in this terminal)",
                "(an invoice for {stars} Telegram Stars: Stars are paid in Telegram,"
                " not in this terminal)",
                stars,
            ).format(stars=stars)
        )
        return message_id

    async def answer_pre_checkout(self, query_id: str, ok: bool, error: str | None = None) -> None:
        self.note(self.t._("(Stars payments need Telegram: nothing to answer here)"))

    async def refund_star_payment(self, user_id: int, charge_id: str) -> None:
        raise RefundRefusedError(
            "Stars are refunded through Telegram: run the bot with TELEGRAM_BOT_TOKEN"
        )


def chat_namer(runtime: Runtime) -> ChatNamer:
    """A member by name, the staff chat, or else the chat's id."""
    shop = runtime.shop

    async def name(chat_id: int, t: Translator) -> str:
        if chat_id == shop.settings.staff_chat_id:
            return t._("the staff chat ({id})").format(id=chat_id)
        member = await shop.members.by_telegram(chat_id)
        if member is None:
            return t._("chat {id}").format(id=chat_id)
        return who(member.display_name, member.username, chat_id)

    return name


def who(name: str, username: str | None, telegram_id: int) -> str:
    """`演示会员 (@demo_member, 10001)`."""
    handle = f"@{username}, " if username else ""
    return f"{name or telegram_id} ({handle}{telegram_id})"

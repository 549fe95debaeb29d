"""`cardshop chat`: the same conversations in this terminal, no token needed.

Lines starting with `/` are commands, a number taps that button of the last keyboard,
`:file PATH` sends a file, anything else is text. Messages are shown without their
HTML tags; buttons are listed as numbered choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import re
import sys
from functools import partial
from pathlib import Path
from typing import TextIO

from bot.conversation import Button, Document, Incoming, Keyboard, split_command
from bot.framework import Runtime
from core.config import Settings

TAG = re.compile(r"<[^>]+>")
FILE_PREFIX = ":file "


def plain(text: str) -> str:
    """Telegram HTML as a terminal shows it."""
    return html.unescape(TAG.sub("", text))


class TerminalTransport:
    """Prints what the bot sends and remembers the last keyboard for numbered taps."""

    def __init__(self, out: TextIO, downloads: Path) -> None:
        self._out = out
        self._downloads = downloads
        self._ids = itertools.count(1)
        self.last_buttons: list[Button] = []
        self.last_message_id: int | None = None

    def _show(self, text: str, keyboard: Keyboard | None, message_id: int) -> None:
        print(f"\n{plain(text)}", file=self._out)
        if keyboard:
            self.last_buttons = [button for row in keyboard for button in row]
            self.last_message_id = message_id
            number = itertools.count(1)
            for row in keyboard:
                cells = []
                for button in row:
                    label = f"[{next(number)}] {button.text}"
                    cells.append(f"{label} <{button.url}>" if button.url else label)
                print("  " + "   ".join(cells), file=self._out)
        self._out.flush()

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        message_id = next(self._ids)
        self._show(text, keyboard, message_id)
        return message_id

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        self._show(text, keyboard, message_id)

    async def copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        print(f"\n(message {message_id} relayed to chat {to_chat_id})", file=self._out)
        return next(self._ids)

    async def answer_callback(
        self, callback_id: str, text: str | None = None, alert: bool = False
    ) -> None:
        if text:
            print(f"\n{'⚠ ' if alert else '» '}{plain(text)}", file=self._out)

    async def send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None = None
    ) -> int:
        self._downloads.mkdir(parents=True, exist_ok=True)
        path = self._downloads / Path(filename).name
        await asyncio.to_thread(path.write_bytes, data)
        print(f"\n[file saved: {path}]{' ' + plain(caption) if caption else ''}", file=self._out)
        return next(self._ids)

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> int:
        print(
            f"\n[photo, {len(data)} bytes]{' ' + plain(caption) if caption else ''}", file=self._out
        )
        return next(self._ids)

    async def download(self, document: Document) -> bytes:
        return await asyncio.to_thread(Path(document.file_id).read_bytes)


class TerminalChat:
    """Turns typed lines into `Incoming`s for one member in a private chat."""

    def __init__(self, transport: TerminalTransport, user_id: int, lang: str | None) -> None:
        self._transport = transport
        self._user_id = user_id
        self._lang = lang
        self._callbacks = itertools.count(1)

    def incoming(self, line: str) -> Incoming | None:
        make = partial(
            Incoming,
            user_id=self._user_id,
            chat_id=self._user_id,
            language_code=self._lang,
            full_name="Terminal",
        )
        if line.isdigit():
            buttons = self._transport.last_buttons
            index = int(line) - 1
            if not 0 <= index < len(buttons) or buttons[index].data is None:
                print("(no such button)", file=sys.stderr)
                return None
            return make(
                kind="callback",
                callback_id=str(next(self._callbacks)),
                callback_data=buttons[index].data,
                callback_message_id=self._transport.last_message_id,
            )
        if line.startswith(FILE_PREFIX):
            path = Path(line.removeprefix(FILE_PREFIX).strip()).expanduser()
            if not path.is_file():
                print(f"(no such file: {path})", file=sys.stderr)
                return None
            document = Document(str(path), path.name, None, path.stat().st_size)
            return make(kind="document", document=document)
        if (command := split_command(line)) is not None:
            name, args = command
            return make(kind="command", text=line, command=name, args=args)
        return make(kind="text", text=line)


async def chat(
    runtime: Runtime,
    *,
    user_id: int,
    lang: str | None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    with_background: bool = False,
) -> None:
    """Read lines until end of input, each one handled exactly as a Telegram update.

    `with_background` also runs the scheduled jobs and broadcasts, printed here too.
    """
    from bot.notifier import background

    transport = TerminalTransport(stdout, runtime.shop.settings.data_dir / "chat-files")
    chat = TerminalChat(transport, user_id, lang)
    print(
        "cardshop chat: /start to begin, a number taps a button, :file PATH sends a file,"
        " Ctrl-D quits.",
        file=stdout,
    )
    async with background(runtime.shop, transport) if with_background else contextlib.nullcontext():
        while line := await asyncio.to_thread(stdin.readline):
            incoming = chat.incoming(line.strip()) if line.strip() else None
            if incoming is not None:
                await runtime.handle(incoming, transport)


def main_chat(settings: Settings, *, user_id: int, lang: str | None, admin: bool = False) -> int:
    """`cardshop chat`; `admin` lets this user act as an admin (adds it to ADMIN_IDS)."""
    from bot.app import running

    if admin and user_id not in settings.admin_ids:
        settings = settings.model_copy(update={"admin_ids": [*settings.admin_ids, user_id]})

    async def run() -> None:
        async with running(settings) as runtime:
            await chat(runtime, user_id=user_id, lang=lang, with_background=True)

    asyncio.run(run())
    return 0

"""`cardshop chat`: the same conversations in this terminal, no token needed.

What is typed goes to the bot as a member would send it in Telegram: `/start` is a
command, `:file PATH` sends a file, and anything else, numbers included, is a text
message (a quantity, a price, a member to look up). Buttons are listed as `[/1]`,
`[/2]`…, and typing `/1` taps one: no command is a number, so the two never meet.
Messages are shown without their HTML tags; what the bot sends to another chat (an
admin's reply, a notice, the staff chat) is headed with whose chat it is for; photos and
files are saved under `DATA_DIR/chat-files`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import re
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TextIO

from bot.conversation import Button, Keyboard
from bot.framework import Runtime
from bot.i18n import Translator
from bot.incoming import Document, Incoming, split_command
from core.members import locale_for

TAG = re.compile(r"<[^>]+>")
FILE_PREFIX = ":file "
#: `/3` taps the third button of the last keyboard.
TAP = re.compile(r"/(\d+)")
#: Where photos and files the bot sends are saved, under DATA_DIR.
DOWNLOADS = "chat-files"
#: The name a member new to the shop gets when they first chat from the terminal.
NEW_MEMBER_NAME = "Terminal"

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


class TerminalChat:
    """One member's private chat: typed lines become `Incoming`s, handled as updates.

    The member keeps the name and username the shop has for them (the terminal has no
    Telegram profile to update them from). `lang` given explicitly is the language of
    this session even when the member chose another one before, until they choose a
    language in the chat.
    """

    def __init__(
        self,
        runtime: Runtime,
        transport: TerminalTransport,
        *,
        user_id: int,
        lang: str | None,
        username: str | None,
        full_name: str,
    ) -> None:
        self._runtime = runtime
        self.transport = transport
        self._callbacks = itertools.count(1)
        self._override = locale_for(lang) if lang else None
        self._make = partial(
            Incoming,
            user_id=user_id,
            chat_id=user_id,
            language_code=lang,
            username=username,
            full_name=full_name,
        )

    def incoming(self, line: str) -> Incoming | None:
        """What `line` is, or None (after saying why) when it is nothing to send."""
        if (tap := TAP.fullmatch(line)) is not None:
            return self._tap(int(tap.group(1)))
        if line.startswith(FILE_PREFIX):
            path = Path(line.removeprefix(FILE_PREFIX).strip()).expanduser()
            if not path.is_file():
                self.transport.note(self.transport.t._("(no such file: {path})").format(path=path))
                return None
            document = Document(str(path), path.name, None, path.stat().st_size)
            return self._make(kind="document", document=document)
        if (command := split_command(line)) is not None:
            name, args = command
            return self._make(kind="command", text=line, command=name, args=args)
        return self._make(kind="text", text=line)

    def _tap(self, number: int) -> Incoming | None:
        transport, t = self.transport, self.transport.t
        buttons = transport.last_buttons
        if not buttons:
            transport.note(t._("(there are no buttons to tap yet: send /start)"))
            return None
        if not 1 <= number <= len(buttons):
            transport.note(
                t._("(no button /{number}: the buttons are /1 to /{last})").format(
                    number=number, last=len(buttons)
                )
            )
            return None
        button = buttons[number - 1]
        if button.data is None:
            transport.note(
                t._("(button /{number} opens a link: {url})").format(number=number, url=button.url)
            )
            return None
        return self._make(
            kind="callback",
            callback_id=str(next(self._callbacks)),
            callback_data=button.data,
            callback_message_id=transport.last_message_id,
        )

    async def send(self, line: str) -> None:
        """Handle one typed line as `Runtime.handle` does, in the session's language."""
        incoming = self.incoming(line)
        if incoming is None:
            return
        runtime = self._runtime
        async with runtime.locks.hold(incoming.chat_id):
            ctx = await runtime.begin(incoming, self.transport)
            if ctx is None:
                return
            if self._override is not None:
                ctx.use_locale(self._override)
            awaited_input = ctx.state.name is not None
            await runtime.dispatch(ctx)
        if ctx.locale != self._override:
            self._override = None
        self.transport.t = runtime.translator(ctx.locale)
        if line.isdigit() and not awaited_input:
            self.transport.note(
                self.transport.t._(
                    "(a number you type is sent as a message; to tap a button, type its /N,"
                    " e.g. /1)"
                )
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


async def open_session(
    runtime: Runtime, *, user_id: int, lang: str | None, out: TextIO
) -> TerminalChat:
    """The chat of `user_id` printing to `out`, after a greeting that says how to use it.

    Looking the member up first also tells at once when the database is not there.
    """
    settings = runtime.shop.settings
    member = await runtime.shop.members.by_telegram(user_id)
    locale = (locale_for(lang) if lang else None) or (member and member.locale)
    t = runtime.translator(locale or settings.default_locale)
    downloads = settings.data_dir / DOWNLOADS
    transport = TerminalTransport(
        out, downloads, chat_id=user_id, t=t, name_chat=chat_namer(runtime)
    )
    username = member.username if member else None
    full_name = member.display_name if member else NEW_MEMBER_NAME
    me = who(full_name, username, user_id)
    if user_id in settings.admin_ids:
        transport.note(
            t._("cardshop chat as {who}, an admin: /admin opens the admin menu.").format(who=me)
        )
    else:
        transport.note(t._("cardshop chat as {who}.").format(who=me))
    transport.note(
        t._(
            "Send /start to begin. Buttons are listed as [/1], [/2]…: type /1 to tap the first."
            " Anything else you type, numbers too, is sent as a message; :file PATH sends a"
            " file; Ctrl-D quits."
        )
    )
    return TerminalChat(
        runtime, transport, user_id=user_id, lang=lang, username=username, full_name=full_name
    )


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

    session = await open_session(runtime, user_id=user_id, lang=lang, out=stdout)
    jobs = background(runtime.shop, session.transport) if with_background else None
    async with jobs or contextlib.nullcontext():
        async for line in typed_lines(stdin):
            if line.strip():
                await session.send(line.strip())


async def typed_lines(stdin: TextIO) -> AsyncIterator[str]:
    """Lines of `stdin` until its end, read by a daemon thread.

    A worker thread of the event loop would still be waiting in `readline` after Ctrl-C,
    and the interpreter would wait for it on the way out: the chat would not quit.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def put(line: str) -> None:
        with contextlib.suppress(RuntimeError):  # the chat has ended and its loop closed
            loop.call_soon_threadsafe(queue.put_nowait, line)

    def read() -> None:
        for line in iter(stdin.readline, ""):
            put(line)
        put("")

    threading.Thread(target=read, name="terminal-input", daemon=True).start()
    while line := await queue.get():
        yield line

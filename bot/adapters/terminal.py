"""`cardshop chat`: the same conversations in this terminal, no token needed.

What is typed goes to the bot as a member would send it in Telegram: `/start` is a
command, `:file PATH` sends a file, and anything else, numbers included, is a text
message (a quantity, a price, a member to look up). Buttons are listed as `[/1]`,
`[/2]`…, and typing `/1` taps one: no command is a number, so the two never meet. What
the bot sends is shown by `bot.adapters.screen`; photos and files are saved under
`DATA_DIR/chat-files`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import TextIO

from bot.adapters.screen import TerminalTransport, chat_namer, who
from bot.conversation import Transport
from bot.framework import Runtime
from bot.incoming import Document, Incoming, split_command
from core.members import locale_for

FILE_PREFIX = ":file "
#: `/3` taps the third button of the last keyboard.
TAP = re.compile(r"/(\d+)")
#: Where photos and files the bot sends are saved, under DATA_DIR.
DOWNLOADS = "chat-files"
#: The name a member new to the shop gets when they first chat from the terminal.
NEW_MEMBER_NAME = "Terminal"

#: What runs next to a chat while it lasts, given the chat's transport.
Alongside = Callable[[Transport], AbstractAsyncContextManager[object]]


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
    alongside: Alongside | None = None,
) -> None:
    """Read lines until end of input, each one handled exactly as a Telegram update.

    `alongside` runs next to the chat, given its transport (so what it sends is printed
    here too): the scheduled jobs and broadcasts, the HTTP server.
    """
    session = await open_session(runtime, user_id=user_id, lang=lang, out=stdout)
    async with alongside(session.transport) if alongside else contextlib.nullcontext():
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

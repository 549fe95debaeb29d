"""What both Telegram adapters share: the transport's refusals, menus, webhook, updates asked.

aiogram and python-telegram-bot speak the same Bot API, so everything here is written
once: which updates to ask for (`ALLOWED_UPDATES`, what `bot.incoming` reads), how a
refusal reads (403: the member blocked the bot; 400 on an edit: the message cannot be
edited, unless it was only "not modified"), a keyboard in the Bot API's shape, the
command menus, and the webhook server (the secret header, a body that is no update).
Each adapter adds only its framework's client and the calls themselves.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from bot.conversation import CannotEditError, Document, Keyboard, UnreachableError
from bot.framework import STOP_GRACE_SECONDS, Runtime
from bot.incoming import UPDATE_TYPES, BadUpdateError, update_json
from core.config import Settings, SettingsError

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Every update type the bot reads and no other, for getUpdates and setWebhook.
ALLOWED_UPDATES = list(UPDATE_TYPES)

U = TypeVar("U")


def keyboard_json(keyboard: Keyboard | None) -> dict[str, Any] | None:
    """An `InlineKeyboardMarkup` as the Bot API spells it, for either framework to read."""
    if keyboard is None:
        return None
    rows = [
        [
            {"text": b.text, "url": b.url} if b.url else {"text": b.text, "callback_data": b.data}
            for b in row
        ]
        for row in keyboard
    ]
    return {"inline_keyboard": rows}


class BotApiTransport(ABC):
    """The neutral `Transport` over a framework's client, its refusals mapped here once.

    A subclass names its framework's two exceptions and makes the calls; 403 becomes
    `UnreachableError`, a 400 on an edit `CannotEditError` unless it says "not modified"
    (the message already shows this: success).
    """

    forbidden: ClassVar[type[Exception]]
    bad_request: ClassVar[type[Exception]]

    @contextmanager
    def _reaching(self, chat_id: int) -> Iterator[None]:
        try:
            yield
        except self.forbidden:
            raise UnreachableError(chat_id) from None

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        with self._reaching(chat_id):
            return await self._send(chat_id, text, keyboard)

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        try:
            with self._reaching(chat_id):
                await self._edit(chat_id, message_id, text, keyboard)
        except self.bad_request as exc:
            reason = str(getattr(exc, "message", exc))
            if "not modified" not in reason:
                raise CannotEditError(reason) from None

    async def copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        with self._reaching(to_chat_id):
            return await self._copy(from_chat_id, message_id, to_chat_id)

    async def send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None = None
    ) -> int:
        with self._reaching(chat_id):
            return await self._send_document(chat_id, filename, data, caption)

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> int:
        with self._reaching(chat_id):
            return await self._send_photo(chat_id, data, caption)

    @abstractmethod
    async def _send(self, chat_id: int, text: str, keyboard: Keyboard | None) -> int: ...

    @abstractmethod
    async def _edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None
    ) -> None: ...

    @abstractmethod
    async def _copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int: ...

    @abstractmethod
    async def _send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None
    ) -> int: ...

    @abstractmethod
    async def _send_photo(self, chat_id: int, data: bytes, caption: str | None) -> int: ...

    @abstractmethod
    async def answer_callback(
        self, callback_id: str, text: str | None = None, alert: bool = False
    ) -> None: ...

    @abstractmethod
    async def download(self, document: Document) -> bytes: ...

    @abstractmethod
    async def set_commands(self, commands: list[tuple[str, str]], language: str | None) -> None: ...


#: Telegram command menus: the default one, then per client language.
MENU_LANGUAGES: tuple[tuple[str | None, str | None], ...] = (
    (None, None),
    ("zh", "zh_CN"),
    ("en", "en"),
)


async def publish_commands(runtime: Runtime, transport: BotApiTransport) -> None:
    """setMyCommands for the default menu (the shop's default locale) and for zh and en."""
    for language_code, locale in MENU_LANGUAGES:
        t = runtime.translator(locale or runtime.shop.settings.default_locale)
        await transport.set_commands(runtime.registry.command_menu(t), language_code)


def webhook_address(settings: Settings) -> tuple[str, str, int]:
    """(secret, host, port) for the webhook server; a webhook without a secret is refused."""
    if settings.webhook_secret is None:
        raise SettingsError("WEBHOOK_SECRET: required when WEBHOOK_URL is set")
    host, _, port = settings.webhook_listen.rpartition(":")
    if not host or not port.isdigit():
        raise SettingsError("WEBHOOK_LISTEN: use host:port, e.g. 127.0.0.1:8080")
    return settings.webhook_secret.get_secret_value(), host, int(port)


def webhook_app(
    secret: str,
    path: str,
    parse: Callable[[dict[str, Any]], U],
    accept: Callable[[U], Awaitable[object]],
    in_flight: set[asyncio.Task[None]],
) -> web.Application:
    """The webhook: 403 without the secret, 400 for a body that is no update, else 200.

    `parse` is the framework's reading of an update (any exception: not an update);
    `accept` handles it in a task of its own, kept in `in_flight`, after the answer. A
    refused body is logged in one line, never with a traceback: it is not the bot's fault.
    """

    async def handle(update: U) -> None:
        try:
            await accept(update)
        except Exception:
            log.exception("webhook: an update failed")

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, secret.encode()):
            return web.Response(status=403, text="Forbidden")
        try:
            update = parse(update_json(await request.read()))
        except BadUpdateError as exc:
            reason = str(exc)
        except Exception as exc:  # the framework raises whatever a wrong shape trips over
            reason = f"not an update: {type(exc).__name__}"
        else:
            task = asyncio.create_task(handle(update))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            return web.Response(text="ok")
        log.warning("webhook: refused a body (%s)", reason)
        return web.Response(status=400, text="Bad Request")

    app = web.Application()
    app.router.add_post(path, receive)
    return app


async def serve_webhook(
    settings: Settings,
    parse: Callable[[dict[str, Any]], U],
    accept: Callable[[U], Awaitable[object]],
    set_webhook: Callable[[str, str], Awaitable[object]],
) -> None:
    """Listen on WEBHOOK_LISTEN, then `set_webhook(url, secret)`, until cancelled.

    Stopping, updates already accepted get `STOP_GRACE_SECONDS` to finish and answer
    before the listener (and then the adapter's client) closes.
    """
    assert settings.webhook_url is not None
    secret, host, port = webhook_address(settings)
    path = urlsplit(settings.webhook_url).path or "/"
    in_flight: set[asyncio.Task[None]] = set()
    runner = web.AppRunner(webhook_app(secret, path, parse, accept, in_flight))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("webhook listening on %s:%s%s", host, port, path)
        await set_webhook(settings.webhook_url, secret)
        await asyncio.Event().wait()
    finally:
        if in_flight:
            await asyncio.wait(in_flight, timeout=STOP_GRACE_SECONDS)
        await runner.cleanup()

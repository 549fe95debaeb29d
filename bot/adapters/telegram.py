"""What both Telegram adapters share: the transport's refusals, menus, how updates come.

aiogram and python-telegram-bot speak the same Bot API, so everything here is written
once: which updates to ask for (`ALLOWED_UPDATES`, what `bot.incoming` reads), how a
refusal reads (403: the member blocked the bot; 400 on an edit: the message cannot be
edited, unless it was only "not modified"; a refused refund says why), a keyboard in
the Bot API's shape, the command menus, and taking updates by long polling or by
webhook on the shop's HTTP server (`bot.http`). Each adapter adds only its framework's
client and the calls themselves.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

from bot.conversation import (
    CannotEditError,
    Document,
    Keyboard,
    RefundRefusedError,
    UnreachableError,
)
from bot.framework import Runtime
from bot.http import HttpServer
from bot.incoming import UPDATE_TYPES
from core.config import Settings

#: Every update type the bot reads and no other, for getUpdates and setWebhook.
ALLOWED_UPDATES = list(UPDATE_TYPES)
#: Telegram Stars: the currency of digital goods sold in Telegram, paid with no provider,
#: so an invoice in Stars has one price and no `provider_token`. Left out rather than
#: sent empty, which Telegram takes alike: PTB with `Defaults` sends an empty string
#: parameter as `[]` (it reads "" as an empty list of poll options), which Telegram refuses.
STARS = "XTR"

U = TypeVar("U")


#: What TELEGRAM_API_BASE names a bot's token by, when it is a template (see `api_roots`).
TOKEN = "{token}"


def api_roots(base: str) -> tuple[str, str]:
    """TELEGRAM_API_BASE as the (requests, files) roots of one bot, each naming `{token}`.

    A plain root (a self-hosted Bot API server, the tests' stand-in) gets Telegram's paths,
    `root/bot{token}` and `root/file/bot{token}`. A root that names `{token}` is taken as
    it is, with its files under `/file/` alike: Telegram's test environment, where Stars
    cost nothing, is `https://api.telegram.org/bot{token}/test`.
    """
    root = base.rstrip("/")
    if TOKEN not in root:
        return f"{root}/bot{TOKEN}", f"{root}/file/bot{TOKEN}"
    scheme, _, rest = root.partition("://")
    host, _, path = rest.partition("/")
    return root, f"{scheme}://{host}/file/{path}"


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

    async def send_invoice(
        self, chat_id: int, title: str, description: str, payload: str, stars: int
    ) -> int:
        with self._reaching(chat_id):
            return await self._send_invoice(chat_id, title, description, payload, stars)

    async def refund_star_payment(self, user_id: int, charge_id: str) -> None:
        """A refusal (400: unknown charge, refunded already…) says why, in Telegram's words."""
        try:
            await self._refund_star_payment(user_id, charge_id)
        except (self.bad_request, self.forbidden) as exc:
            raise RefundRefusedError(str(getattr(exc, "message", exc))) from None

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
    async def _send_invoice(
        self, chat_id: int, title: str, description: str, payload: str, stars: int
    ) -> int: ...

    @abstractmethod
    async def _refund_star_payment(self, user_id: int, charge_id: str) -> None: ...

    @abstractmethod
    async def answer_pre_checkout(
        self, query_id: str, ok: bool, error: str | None = None
    ) -> None: ...

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


async def take_updates(
    settings: Settings,
    http: HttpServer,
    *,
    parse: Callable[[dict[str, Any]], U],
    accept: Callable[[U], Awaitable[object]],
    handle: Callable[[U], Awaitable[object]],
    set_webhook: Callable[[str, str], Awaitable[object]],
    delete_webhook: Callable[[], Awaitable[object]],
    poll: Callable[[], Awaitable[None]],
) -> None:
    """Take updates until cancelled, the shop's HTTP server running alongside.

    With UPDATES_FROM=redis this is one of several workers: updates come from the
    streams the ingress fills (`bot.workers`), each read with `parse` and handed to
    `handle`, which returns once it is handled, and Telegram's webhook is left to the
    ingress. With WEBHOOK_URL, Telegram posts them to that path on the HTTP server
    (`parse` is the framework's reading of one, `accept` hands it on), and
    `set_webhook(url, secret)` is called once it listens; else the webhook is deleted
    and `poll` long-polls, the server listening only for the routes others gave it (易支付).
    """
    if settings.updates_from == "redis":
        from bot.workers import consume

        async with http.serving():
            await consume(settings, parse, handle)
    elif settings.webhook_url is not None:
        secret = http.add_webhook(parse, accept)
        async with http.serving():
            await set_webhook(settings.webhook_url, secret)
            await asyncio.Event().wait()
    else:
        async with http.serving():
            await delete_webhook()
            await poll()

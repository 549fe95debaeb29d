"""The python-telegram-bot 22 adapter: Telegram updates in as `Incoming`, replies out.

One `TypeHandler(Update, ...)` reads every update and hands it to `Runtime.handle`,
which does the rest. PTB would handle updates one at a time, so a pre-checkout query
(Telegram cancels the payment unless it is answered within 10 seconds) would wait
behind any slow update of anyone's; here updates run concurrently, as aiogram runs
them, and the runtime's chat locks keep each member's steps in order. The webhook is
the shop's aiohttp server (`bot.http`; PTB's own needs tornado), feeding PTB's update
queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from telegram import BotCommand, InlineKeyboardMarkup, InputFile, LabeledPrice, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden
from telegram.ext import (
    Application,
    BaseRateLimiter,
    CallbackContext,
    Defaults,
    ExtBot,
    TypeHandler,
)

from bot.adapters.telegram import (
    ALLOWED_UPDATES,
    STARS,
    BotApiTransport,
    api_roots,
    keyboard_json,
    publish_commands,
    take_updates,
)
from bot.conversation import Document, Keyboard
from bot.flood import FloodControl
from bot.framework import STOP_GRACE_SECONDS, Runtime
from bot.http import HttpServer
from bot.incoming import incoming_from
from core.config import Settings

log = logging.getLogger(__name__)

# Opt in to PTB's coming `timedelta` durations (RetryAfter.retry_after and the like): the
# int form is deprecated and warns on every 429, which is exactly when logs matter most.
os.environ.setdefault("PTB_TIMEDELTA", "1")

JSONDict = dict[str, Any]
Bot = ExtBot[None]
PtbApplication = Application[Any, Any, Any, Any, Any, Any]

#: Updates PTB handles at once. Each started update waits only for its own chat's lock
#: (taken in arrival order, so a member's steps stay in order) or a database connection;
#: the bound is there for memory, set far above what a shop's chats keep busy, so a
#: pre-checkout query always finds a free place instead of queueing behind a burst.
CONCURRENT_UPDATES = 4096


def build_application(runtime: Runtime, settings: Settings) -> PtbApplication:
    """An Application handing every update the bot reads to the runtime."""
    assert settings.telegram_bot_token is not None
    builder = (
        Application.builder()
        .token(settings.telegram_bot_token.get_secret_value())
        .defaults(Defaults(parse_mode=ParseMode.HTML))
        .rate_limiter(Paced(runtime.flood))
        .concurrent_updates(CONCURRENT_UPDATES)
    )
    if settings.telegram_api_base:
        requests, files = api_roots(settings.telegram_api_base)
        builder = builder.base_url(requests).base_file_url(files)
    if settings.webhook_url is not None:
        builder = builder.updater(None)
    application = builder.build()
    transport = PtbTransport(application.bot)

    async def on_update(update: Update, _: CallbackContext[Any, Any, Any, Any]) -> None:
        incoming = incoming_from(update, application.bot.username)
        if incoming is not None:
            await runtime.handle(incoming, transport)

    async def log_error(update: object, context: CallbackContext[Any, Any, Any, Any]) -> None:
        log.error("update %r failed", update, exc_info=context.error)

    application.add_handler(TypeHandler(Update, on_update))
    application.add_error_handler(log_error)
    return application


def markup(keyboard: Keyboard | None) -> InlineKeyboardMarkup | None:
    shaped = keyboard_json(keyboard)
    return None if shaped is None else InlineKeyboardMarkup.de_json(shaped, None)


class PtbTransport(BotApiTransport):
    """The neutral `Transport` over a PTB `Bot`."""

    forbidden = Forbidden
    bad_request = BadRequest

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def _send(self, chat_id: int, text: str, keyboard: Keyboard | None) -> int:
        sent = await self.bot.send_message(chat_id, text, reply_markup=markup(keyboard))
        return sent.message_id

    async def _edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None
    ) -> None:
        await self.bot.edit_message_text(
            text, chat_id=chat_id, message_id=message_id, reply_markup=markup(keyboard)
        )

    async def _copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        return (await self.bot.copy_message(to_chat_id, from_chat_id, message_id)).message_id

    async def _send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None
    ) -> int:
        document = InputFile(data, filename=filename)
        return (await self.bot.send_document(chat_id, document, caption=caption)).message_id

    async def _send_photo(self, chat_id: int, data: bytes, caption: str | None) -> int:
        return (await self.bot.send_photo(chat_id, data, caption=caption)).message_id

    async def _send_invoice(
        self, chat_id: int, title: str, description: str, payload: str, stars: int
    ) -> int:
        sent = await self.bot.send_invoice(
            chat_id,
            title,
            description,
            payload,
            STARS,
            [LabeledPrice(title, stars)],
        )
        return sent.message_id

    async def _refund_star_payment(self, user_id: int, charge_id: str) -> None:
        await self.bot.refund_star_payment(user_id, charge_id)

    async def answer_pre_checkout(self, query_id: str, ok: bool, error: str | None = None) -> None:
        await self.bot.answer_pre_checkout_query(query_id, ok, error_message=error)

    async def answer_callback(
        self, callback_id: str, text: str | None = None, alert: bool = False
    ) -> None:
        await self.bot.answer_callback_query(callback_id, text=text, show_alert=alert)

    async def download(self, document: Document) -> bytes:
        file = await self.bot.get_file(document.file_id)
        return bytes(await file.download_as_bytearray())

    async def set_commands(self, commands: list[tuple[str, str]], language: str | None) -> None:
        await self.bot.set_my_commands(
            [BotCommand(name, text) for name, text in commands], language_code=language
        )


class Paced(BaseRateLimiter[None]):
    """Every request through the shop's `FloodControl`: paced, and a 429 waited out.

    PTB's own AIORateLimiter needs an extra dependency, retries 429s by itself and paces
    apart from everything else the shop sends; this shares the one pace.
    """

    def __init__(self, flood: FloodControl) -> None:
        self._flood = flood

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | JSONDict | list[JSONDict]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> bool | JSONDict | list[JSONDict]:
        chat_id = data.get("chat_id")
        return await self._flood.send(
            chat_id if isinstance(chat_id, int) else None, lambda: callback(*args, **kwargs)
        )


@asynccontextmanager
async def own_transport(runtime: Runtime, settings: Settings) -> AsyncIterator[PtbTransport]:
    """A client for what the bot sends unprompted (jobs, broadcasts)."""
    bot = build_application(runtime, settings).bot
    async with bot:
        yield PtbTransport(bot)


async def serve(runtime: Runtime, settings: Settings, http: HttpServer) -> None:
    """Run the bot until cancelled: long polling, or a webhook on `http` when WEBHOOK_URL
    is set."""
    application = build_application(runtime, settings)

    async def poll() -> None:
        assert application.updater is not None
        await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        try:
            await asyncio.Event().wait()
        finally:
            await application.updater.stop()

    async with application:
        await publish_commands(runtime, PtbTransport(application.bot))
        await application.start()
        try:
            await take_updates(
                settings,
                http,
                parse=lambda body: Update.de_json(body, application.bot),
                accept=application.update_queue.put,
                handle=application.process_update,
                set_webhook=lambda url, secret: application.bot.set_webhook(
                    url, secret_token=secret, allowed_updates=ALLOWED_UPDATES
                ),
                delete_webhook=application.bot.delete_webhook,
                poll=poll,
            )
        finally:
            await _stop(application)


async def _stop(application: PtbApplication) -> None:
    """Stop taking updates and let those already taken finish, for a bounded time.

    PTB's `stop` handles every update already fetched before it returns, however long
    that takes; a stop that must end (SIGTERM, then SIGKILL from the supervisor) gives
    them `STOP_GRACE_SECONDS` and leaves the rest.
    """
    try:
        await asyncio.wait_for(application.stop(), STOP_GRACE_SECONDS)
    except TimeoutError:
        log.warning("updates still being handled after %ss: stopping anyway", STOP_GRACE_SECONDS)

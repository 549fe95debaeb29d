"""The python-telegram-bot 22 adapter: translation only, no business logic.

A `TypeHandler(Update, ...)` in group -1 does the shared per-update work
(`Runtime.begin`) and keeps the `Context` on our own `CallbackContext` subclass; group 0
routes with `CommandHandler`, `CallbackQueryHandler(pattern=^prefix:)` and one
`MessageHandler` for typed input. PTB handles updates one at a time by default, which
keeps each member's steps in order. The webhook is a small aiohttp app (PTB's own needs
tornado) that answers 403 without the secret header and feeds PTB's update queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    BaseRateLimiter,
    CallbackContext,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    ExtBot,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.conversation import (
    CallbackSpec,
    CannotEditError,
    CommandSpec,
    Context,
    Document,
    Incoming,
    Keyboard,
    UnreachableError,
)
from bot.flood import FloodControl
from bot.framework import STOP_GRACE_SECONDS, Runtime, publish_commands, webhook_address
from bot.incoming import BadUpdateError, callback_incoming, message_incoming, update_json
from core.config import Settings

log = logging.getLogger(__name__)

# Opt in to PTB's coming `timedelta` durations (RetryAfter.retry_after and the like): the
# int form is deprecated and warns on every 429, which is exactly when logs matter most.
os.environ.setdefault("PTB_TIMEDELTA", "1")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]

JSONDict = dict[str, Any]
Bot = ExtBot[None]


class ShopCallbackContext(CallbackContext[Bot, JSONDict, JSONDict, JSONDict]):
    """PTB's per-update context carrying ours, set by the group -1 prework."""

    def __init__(
        self,
        application: Application[Any, Any, Any, Any, Any, Any],
        chat_id: int | None = None,
        user_id: int | None = None,
    ) -> None:
        super().__init__(application, chat_id, user_id)
        self.shop_context: Context | None = None

    @property
    def ctx(self) -> Context:
        assert self.shop_context is not None, "prework did not run"
        return self.shop_context


PtbHandler = Callable[[Update, ShopCallbackContext], Coroutine[Any, Any, None]]


# --- updates in -------------------------------------------------------------------------


def incoming_from(update: Update) -> Incoming | None:
    """The neutral view of an update; None for kinds the shop does not handle."""
    if update.message is not None:
        return message_incoming(update.update_id, update.message)
    if update.callback_query is not None:
        return callback_incoming(update.update_id, update.callback_query)
    return None


def build_application(
    runtime: Runtime, settings: Settings
) -> Application[Bot, ShopCallbackContext, JSONDict, JSONDict, JSONDict, Any]:
    assert settings.telegram_bot_token is not None
    builder = (
        Application.builder()
        .token(settings.telegram_bot_token.get_secret_value())
        .context_types(ContextTypes(context=ShopCallbackContext))
        .defaults(Defaults(parse_mode=ParseMode.HTML))
        .rate_limiter(Paced(runtime.flood))
    )
    if settings.telegram_api_base:
        base = settings.telegram_api_base.rstrip("/")
        builder = builder.base_url(f"{base}/bot").base_file_url(f"{base}/file/bot")
    if settings.webhook_url is not None:
        builder = builder.updater(None)
    application = builder.build()
    transport = PtbTransport(application.bot)
    registry = runtime.registry

    async def prework(update: Update, context: ShopCallbackContext) -> None:
        incoming = incoming_from(update)
        if incoming is None:
            raise ApplicationHandlerStop
        ctx = await runtime.begin(incoming, transport)
        if ctx is None:
            raise ApplicationHandlerStop
        context.shop_context = ctx

    application.add_handler(TypeHandler(Update, prework), group=-1)

    if runtime.staff_chat_id is not None:

        async def staff_reply(_: Update, context: ShopCallbackContext) -> None:
            await runtime.staff_reply(context.ctx)

        application.add_handler(
            MessageHandler(filters.Chat(runtime.staff_chat_id) & filters.REPLY, staff_reply)
        )

    private = filters.ChatType.PRIVATE
    for conversation in registry.conversations:
        for spec in conversation.commands:
            application.add_handler(
                CommandHandler(spec.names, _on_command(runtime, spec), filters=private)
            )
        for callback in conversation.callbacks:
            pattern = rf"^{re.escape(callback.data_type.prefix)}(:|$)"
            application.add_handler(
                CallbackQueryHandler(_on_callback(runtime, callback), pattern=pattern)
            )

    async def typed(_: Update, context: ShopCallbackContext) -> None:
        ctx = context.ctx
        handler = runtime.state_handler(ctx)
        if handler is None:
            await runtime.fallback(ctx)
        else:
            await runtime.state_input(ctx, handler)

    async def unclaimed_callback(_: Update, context: ShopCallbackContext) -> None:
        await runtime.callback(context.ctx, None)

    application.add_handler(MessageHandler(private, typed))
    application.add_handler(CallbackQueryHandler(unclaimed_callback))
    application.add_error_handler(_log_error)
    return application


def _on_command(runtime: Runtime, spec: CommandSpec) -> PtbHandler:
    async def handle(_: Update, context: ShopCallbackContext) -> None:
        await runtime.command(context.ctx, spec)

    return handle


def _on_callback(runtime: Runtime, spec: CallbackSpec) -> PtbHandler:
    async def handle(_: Update, context: ShopCallbackContext) -> None:
        await runtime.callback(context.ctx, spec)

    return handle


async def _log_error(update: object, context: ShopCallbackContext) -> None:
    log.error("update %r failed", update, exc_info=context.error)


# --- replies out ------------------------------------------------------------------------


def markup(keyboard: Keyboard | None) -> InlineKeyboardMarkup | None:
    if keyboard is None:
        return None
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(b.text, callback_data=b.data, url=b.url) for b in row]
            for row in keyboard
        ]
    )


class PtbTransport:
    """The neutral `Transport` over a PTB `Bot`."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        try:
            message = await self.bot.send_message(chat_id, text, reply_markup=markup(keyboard))
        except Forbidden:
            raise UnreachableError(chat_id) from None
        return message.message_id

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        try:
            await self.bot.edit_message_text(
                text, chat_id=chat_id, message_id=message_id, reply_markup=markup(keyboard)
            )
        except Forbidden:
            raise UnreachableError(chat_id) from None
        except BadRequest as exc:
            if "not modified" in exc.message:
                return
            raise CannotEditError(exc.message) from None

    async def copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        try:
            copied = await self.bot.copy_message(to_chat_id, from_chat_id, message_id)
        except Forbidden:
            raise UnreachableError(to_chat_id) from None
        return copied.message_id

    async def answer_callback(
        self, callback_id: str, text: str | None = None, alert: bool = False
    ) -> None:
        await self.bot.answer_callback_query(callback_id, text=text, show_alert=alert)

    async def send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None = None
    ) -> int:
        try:
            message = await self.bot.send_document(
                chat_id, InputFile(data, filename=filename), caption=caption
            )
        except Forbidden:
            raise UnreachableError(chat_id) from None
        return message.message_id

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> int:
        try:
            message = await self.bot.send_photo(chat_id, data, caption=caption)
        except Forbidden:
            raise UnreachableError(chat_id) from None
        return message.message_id

    async def download(self, document: Document) -> bytes:
        file = await self.bot.get_file(document.file_id)
        return bytes(await file.download_as_bytearray())

    async def set_commands(self, commands: list[tuple[str, str]], language: str | None) -> None:
        await self.bot.set_my_commands(
            [BotCommand(name, text) for name, text in commands], language_code=language
        )


class Paced(BaseRateLimiter[None]):
    """Every request through the shop's `FloodControl`: paced, and a 429 waited out.

    PTB's own AIORateLimiter needs an extra dependency and paces apart from the
    aiogram adapter; this shares one pace with everything else the shop sends.
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


# --- running ----------------------------------------------------------------------------


def webhook_app(
    application: Application[Any, Any, Any, Any, Any, Any], secret: str, path: str
) -> web.Application:
    """aiohttp app for the webhook: 403 without the secret, 400 for a bad body, else PTB's.

    A body that is no update is logged in one line, never a traceback.
    """

    def _bad_body(reason: str) -> web.Response:
        log.warning("webhook: refused a body (%s)", reason)
        return web.Response(status=400, text="Bad Request")

    async def receive(request: web.Request) -> web.Response:
        if request.headers.get(SECRET_HEADER) != secret:
            return web.Response(status=403, text="Forbidden")
        try:
            update = Update.de_json(update_json(await request.read()), application.bot)
        except BadUpdateError as exc:
            return _bad_body(str(exc))
        except Exception as exc:  # de_json raises whatever a wrong shape trips over
            return _bad_body(f"not an update: {type(exc).__name__}")
        await application.update_queue.put(update)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(path, receive)
    return app


async def serve(runtime: Runtime, settings: Settings) -> None:
    """Run the bot until cancelled: long polling, or a webhook when WEBHOOK_URL is set."""
    application = build_application(runtime, settings)
    transport = PtbTransport(application.bot)
    async with application:
        await publish_commands(runtime, transport.set_commands)
        await application.start()
        try:
            if settings.webhook_url is None:
                assert application.updater is not None
                await application.bot.delete_webhook()
                await application.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
                try:
                    await asyncio.Event().wait()
                finally:
                    await application.updater.stop()
            else:
                await _serve_webhook(application, settings)
        finally:
            await _stop(application)


async def _stop(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Stop taking updates and let those already taken finish, for a bounded time.

    PTB's `stop` handles every update already fetched before it returns, however long
    that takes; a stop that must end (SIGTERM, then SIGKILL from the supervisor) gives
    them `STOP_GRACE_SECONDS` and leaves the rest.
    """
    try:
        await asyncio.wait_for(application.stop(), STOP_GRACE_SECONDS)
    except TimeoutError:
        log.warning("updates still being handled after %ss: stopping anyway", STOP_GRACE_SECONDS)


async def _serve_webhook(
    application: Application[Any, Any, Any, Any, Any, Any], settings: Settings
) -> None:
    assert settings.webhook_url is not None
    secret, host, port = webhook_address(settings)
    path = urlsplit(settings.webhook_url).path or "/"
    app = webhook_app(application, secret, path)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("webhook listening on %s:%s%s", host, port, path)
        await application.bot.set_webhook(
            settings.webhook_url, secret_token=secret, allowed_updates=ALLOWED_UPDATES
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()

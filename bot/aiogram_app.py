"""The aiogram 3 adapter: translation only, no business logic.

One `Router` per conversation (commands via `Command`, buttons via a prefix filter,
typed input via a state filter), member routers limited to private chats, a staff
router for replies in STAFF_CHAT_ID, and a last router for whatever nobody claimed.
An outer middleware does the shared per-update work (`Runtime.begin`) under the chat's
lock and hands the `Context` to the routers as `ctx`.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

from aiogram import BaseMiddleware, Bot, Dispatcher, F, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.filters import Command, Filter
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import (
    BotCommand,
    BotCommandScopeDefault,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    TelegramObject,
    Update,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from pydantic import ValidationError

from bot.callbacks import Callback
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

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


# --- updates in -------------------------------------------------------------------------


def incoming_from(update: Update) -> Incoming | None:
    """The neutral view of an update; None for kinds the shop does not handle."""
    if update.message is not None:
        return message_incoming(update.update_id, update.message)
    if update.callback_query is not None:
        return callback_incoming(update.update_id, update.callback_query)
    return None


class PrepareMiddleware(BaseMiddleware):
    """De-duplicate, register, localise and build the `Context`, under the chat's lock."""

    def __init__(self, runtime: Runtime, transport: AiogramTransport) -> None:
        self._runtime = runtime
        self._transport = transport

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        assert isinstance(event, Update)
        incoming = incoming_from(event)
        if incoming is None:
            return None
        async with self._runtime.locks.hold(incoming.chat_id):
            ctx = await self._runtime.begin(incoming, self._transport)
            if ctx is None:
                return None
            data["ctx"] = ctx
            return await handler(event, data)


class CallbackPrefix(Filter):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def __call__(self, query: CallbackQuery) -> bool:
        return query.data is not None and Callback.prefix_of(query.data) == self.prefix


class InState(Filter):
    """Text or a document while the chat is in one of `states`."""

    def __init__(self, states: set[str]) -> None:
        self.states = states

    async def __call__(self, message: Message, ctx: Context) -> bool:
        return ctx.incoming.kind in ("text", "document") and ctx.state.name in self.states


def build_dispatcher(runtime: Runtime, transport: AiogramTransport) -> Dispatcher:
    dispatcher = Dispatcher(name="cardshop")
    dispatcher.update.outer_middleware(PrepareMiddleware(runtime, transport))
    registry = runtime.registry

    if runtime.staff_chat_id is not None:
        staff = Router(name="staff")
        staff.message.filter(F.chat.id == runtime.staff_chat_id, F.reply_to_message)

        async def staff_reply(_: Message, ctx: Context) -> None:
            await runtime.staff_reply(ctx)

        staff.message.register(staff_reply)
        dispatcher.include_router(staff)

    for conversation in registry.conversations:
        router = Router(name=conversation.name)
        router.message.filter(F.chat.type == "private")
        for spec in conversation.commands:
            router.message.register(
                _on_command(runtime, spec), Command(*spec.names, ignore_case=True)
            )
        for callback in conversation.callbacks:
            router.callback_query.register(
                _on_callback(runtime, callback), CallbackPrefix(callback.data_type.prefix)
            )
        if conversation.states:

            async def state_input(_: Message, ctx: Context) -> None:
                assert ctx.state.name is not None
                await runtime.state_input(ctx, registry.states[ctx.state.name])

            router.message.register(state_input, InState(set(conversation.states)))
        dispatcher.include_router(router)

    last = Router(name="unclaimed")

    async def unclaimed_message(_: Message, ctx: Context) -> None:
        await runtime.fallback(ctx)

    async def unclaimed_callback(_: CallbackQuery, ctx: Context) -> None:
        await runtime.callback(ctx, None)

    last.message.register(unclaimed_message, F.chat.type == "private")
    last.callback_query.register(unclaimed_callback)
    dispatcher.include_router(last)
    return dispatcher


def _on_command(
    runtime: Runtime, spec: CommandSpec
) -> Callable[[Message, Context], Awaitable[None]]:
    async def handle(_: Message, ctx: Context) -> None:
        await runtime.command(ctx, spec)

    return handle


def _on_callback(
    runtime: Runtime, spec: CallbackSpec
) -> Callable[[CallbackQuery, Context], Awaitable[None]]:
    async def handle(_: CallbackQuery, ctx: Context) -> None:
        await runtime.callback(ctx, spec)

    return handle


# --- replies out ------------------------------------------------------------------------


def markup(keyboard: Keyboard | None) -> InlineKeyboardMarkup | None:
    if keyboard is None:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=b.text, callback_data=b.data, url=b.url) for b in row]
            for row in keyboard
        ]
    )


class AiogramTransport:
    """The neutral `Transport` over an aiogram `Bot`."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        try:
            message = await self.bot.send_message(chat_id, text, reply_markup=markup(keyboard))
        except TelegramForbiddenError:
            raise UnreachableError(chat_id) from None
        return message.message_id

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        try:
            await self.bot.edit_message_text(
                text=text, chat_id=chat_id, message_id=message_id, reply_markup=markup(keyboard)
            )
        except TelegramForbiddenError:
            raise UnreachableError(chat_id) from None
        except TelegramBadRequest as exc:
            if "not modified" in exc.message:
                return
            raise CannotEditError(exc.message) from None

    async def copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        try:
            copied = await self.bot.copy_message(
                chat_id=to_chat_id, from_chat_id=from_chat_id, message_id=message_id
            )
        except TelegramForbiddenError:
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
                chat_id, BufferedInputFile(data, filename), caption=caption
            )
        except TelegramForbiddenError:
            raise UnreachableError(chat_id) from None
        return message.message_id

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> int:
        try:
            message = await self.bot.send_photo(
                chat_id, BufferedInputFile(data, "photo.png"), caption=caption
            )
        except TelegramForbiddenError:
            raise UnreachableError(chat_id) from None
        return message.message_id

    async def download(self, document: Document) -> bytes:
        file = await self.bot.get_file(document.file_id)
        assert file.file_path is not None
        buffer = io.BytesIO()
        await self.bot.download_file(file.file_path, destination=buffer)
        return buffer.getvalue()

    async def set_commands(self, commands: list[tuple[str, str]], language: str | None) -> None:
        await self.bot.set_my_commands(
            [BotCommand(command=name, description=text) for name, text in commands],
            scope=BotCommandScopeDefault(),
            language_code=language,
        )


class Paced(BaseRequestMiddleware):
    """Every request through the shop's `FloodControl`: paced, and a 429 waited out."""

    def __init__(self, flood: FloodControl) -> None:
        self._flood = flood

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat_id = getattr(method, "chat_id", None)
        return await self._flood.send(
            chat_id if isinstance(chat_id, int) else None, lambda: make_request(bot, method)
        )


def make_bot(settings: Settings, flood: FloodControl) -> Bot:
    assert settings.telegram_bot_token is not None
    if settings.telegram_api_base:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_base))
    else:
        session = AiohttpSession()
    session.middleware(Paced(flood))
    return Bot(
        settings.telegram_bot_token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


# --- running ----------------------------------------------------------------------------


class SecretWebhookHandler(SimpleRequestHandler):
    """aiogram's webhook handler answering 403 to a wrong secret and 400 to a bad body.

    aiogram itself answers 401 (Telegram's convention here is 403), and a 500 with a
    traceback in the log to a body that is no update (broken JSON, nested too deep).
    """

    async def handle(self, request: web.Request) -> web.Response:
        if not self.verify_secret(request.headers.get(SECRET_HEADER, ""), self.bot):
            return web.Response(body="Forbidden", status=403)
        try:
            Update.model_validate(update_json(await request.read()), context={"bot": self.bot})
        except BadUpdateError as exc:
            return _bad_webhook_body(str(exc))
        except ValidationError as exc:
            return _bad_webhook_body(f"not an update: {exc.error_count()} invalid fields")
        return await super().handle(request)


def _bad_webhook_body(reason: str) -> web.Response:
    log.warning("webhook: refused a body (%s)", reason)
    return web.Response(body="Bad Request", status=400)


async def serve(runtime: Runtime, settings: Settings) -> None:
    """Run the bot until cancelled: long polling, or a webhook when WEBHOOK_URL is set."""
    bot = make_bot(settings, runtime.flood)
    transport = AiogramTransport(bot)
    dispatcher = build_dispatcher(runtime, transport)
    try:
        await publish_commands(runtime, transport.set_commands)
        if settings.webhook_url is None:
            await bot.delete_webhook()
            await _poll(dispatcher, bot)
            return
        secret, host, port = webhook_address(settings)
        app = web.Application()
        SecretWebhookHandler(dispatcher=dispatcher, bot=bot, secret_token=secret).register(
            app, path=urlsplit(settings.webhook_url).path or "/"
        )
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            await bot.set_webhook(
                settings.webhook_url,
                secret_token=secret,
                allowed_updates=dispatcher.resolve_used_update_types(),
            )
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
    finally:
        await _finish_handlers(dispatcher)
        await bot.session.close()


async def _poll(dispatcher: Dispatcher, bot: Bot) -> None:
    """Long polling that stops the way aiogram expects when the bot is cancelled.

    Cancelling `start_polling` from outside leaves its inner polling task running, which
    then reopens the closed HTTP session; asking the dispatcher to stop lets it cancel its
    own tasks first.
    """
    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
    )
    try:
        await asyncio.shield(polling)
    except asyncio.CancelledError:
        try:
            await dispatcher.stop_polling()
        except RuntimeError:  # polling had not started yet
            polling.cancel()
        with suppress(asyncio.CancelledError):
            await polling
        raise


async def _finish_handlers(dispatcher: Dispatcher) -> None:
    """Let updates already being handled finish before the HTTP session closes.

    aiogram runs each update as a task that outlives the polling loop; one still sending
    after the session is closed would quietly open a new session that nobody closes.
    """
    in_flight = set(getattr(dispatcher, "_handle_update_tasks", ()))
    if in_flight:
        await asyncio.wait(in_flight, timeout=STOP_GRACE_SECONDS)

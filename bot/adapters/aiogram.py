"""The aiogram 3 adapter: Telegram updates in as `Incoming`, replies out through `Bot`.

One router with one handler on each observer the bot reads (`ALLOWED_UPDATES`): it
reads the update and hands it to `Runtime.handle`, which does the rest. aiogram runs
each update as a task of its own; the runtime's chat locks keep a member's steps in order.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import (
    BotCommand,
    BotCommandScopeDefault,
    BufferedInputFile,
    InlineKeyboardMarkup,
    LabeledPrice,
    TelegramObject,
    Update,
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


def build_dispatcher(runtime: Runtime, transport: AiogramTransport) -> Dispatcher:
    """A dispatcher handing every update the bot reads to the runtime."""

    async def on_update(_: TelegramObject, event_update: Update) -> None:
        me = await transport.bot.me()
        incoming = incoming_from(event_update, me.username)
        if incoming is not None:
            await runtime.handle(incoming, transport)

    router = Router(name="cardshop")
    for update_type in ALLOWED_UPDATES:
        router.observers[update_type].register(on_update)
    dispatcher = Dispatcher(name="cardshop")
    dispatcher.include_router(router)
    return dispatcher


def markup(keyboard: Keyboard | None) -> InlineKeyboardMarkup | None:
    shaped = keyboard_json(keyboard)
    return None if shaped is None else InlineKeyboardMarkup.model_validate(shaped)


class AiogramTransport(BotApiTransport):
    """The neutral `Transport` over an aiogram `Bot`."""

    forbidden = TelegramForbiddenError
    bad_request = TelegramBadRequest

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def _send(self, chat_id: int, text: str, keyboard: Keyboard | None) -> int:
        sent = await self.bot.send_message(chat_id, text, reply_markup=markup(keyboard))
        return sent.message_id

    async def _edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None
    ) -> None:
        await self.bot.edit_message_text(
            text=text, chat_id=chat_id, message_id=message_id, reply_markup=markup(keyboard)
        )

    async def _copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        copied = await self.bot.copy_message(to_chat_id, from_chat_id, message_id)
        return copied.message_id

    async def _send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None
    ) -> int:
        document = BufferedInputFile(data, filename)
        return (await self.bot.send_document(chat_id, document, caption=caption)).message_id

    async def _send_photo(self, chat_id: int, data: bytes, caption: str | None) -> int:
        photo = BufferedInputFile(data, "photo.png")
        return (await self.bot.send_photo(chat_id, photo, caption=caption)).message_id

    async def _send_invoice(
        self, chat_id: int, title: str, description: str, payload: str, stars: int
    ) -> int:
        sent = await self.bot.send_invoice(
            chat_id,
            title=title,
            description=description,
            payload=payload,
            currency=STARS,
            prices=[LabeledPrice(label=title, amount=stars)],
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
    base = settings.telegram_api_base
    server = PRODUCTION
    if base:
        requests, files = api_roots(base)
        server = TelegramAPIServer(base=requests + "/{method}", file=files + "/{path}")
    session = AiohttpSession(api=server)
    session.middleware(Paced(flood))
    return Bot(
        settings.telegram_bot_token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


@asynccontextmanager
async def own_transport(runtime: Runtime, settings: Settings) -> AsyncIterator[AiogramTransport]:
    """A client for what the bot sends unprompted (jobs, broadcasts)."""
    bot = make_bot(settings, runtime.flood)
    try:
        yield AiogramTransport(bot)
    finally:
        await bot.session.close()


async def serve(runtime: Runtime, settings: Settings, http: HttpServer) -> None:
    """Run the bot until cancelled: long polling, or a webhook on `http` when WEBHOOK_URL
    is set."""
    bot = make_bot(settings, runtime.flood)
    transport = AiogramTransport(bot)
    dispatcher = build_dispatcher(runtime, transport)
    try:
        await publish_commands(runtime, transport)
        await take_updates(
            settings,
            http,
            parse=lambda body: Update.model_validate(body, context={"bot": bot}),
            accept=lambda update: dispatcher.feed_update(bot, update),
            handle=lambda update: dispatcher.feed_update(bot, update),
            set_webhook=lambda url, secret: bot.set_webhook(
                url, secret_token=secret, allowed_updates=ALLOWED_UPDATES
            ),
            delete_webhook=bot.delete_webhook,
            poll=lambda: _poll(dispatcher, bot),
        )
    finally:
        # Polled updates run as aiogram's tasks: let them answer before the session
        # closes, or one still sending would open a new session that nobody closes.
        in_flight = set(getattr(dispatcher, "_handle_update_tasks", ()))
        if in_flight:
            await asyncio.wait(in_flight, timeout=STOP_GRACE_SECONDS)
        await bot.session.close()


async def _poll(dispatcher: Dispatcher, bot: Bot) -> None:
    """Long polling that stops the way aiogram expects when the bot is cancelled.

    Cancelling `start_polling` from outside leaves its inner polling task running, which
    then reopens the closed HTTP session; asking the dispatcher to stop lets it cancel its
    own tasks first.
    """
    polling = asyncio.create_task(
        dispatcher.start_polling(
            bot, handle_signals=False, close_bot_session=False, allowed_updates=ALLOWED_UPDATES
        )
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

"""A local stand-in for the Telegram Bot API, for running the real bot end to end.

The bot is pointed at `BotApiStub.base_url` (`TELEGRAM_API_BASE`) and talks HTTP to it
exactly as it talks to api.telegram.org: `{base}/bot{token}/{method}` with JSON, urlencoded
or multipart bodies, files from `{base}/file/bot{token}/{path}`. Answers have Telegram's shape
and wording, and the limits that bite in production (text length, HTML, callback data bytes,
"message is not modified", flood control, blocked users) are enforced, so a scenario that
passes here fails for the same reasons Telegram would refuse it.

Tests drive the user side in-process: `inject_message`, `inject_callback`, ... queue updates
that the bot receives by long polling or by webhook, and `next_sent`, `sent_to`, `calls`,
`answered_callbacks` read back what the bot did.

Payments in Telegram Stars run as in the app: `sendInvoice` is checked as Telegram checks
it, `pay_invoice` plays the user paying (a `pre_checkout_query` the bot must answer within
`pre_checkout_window` seconds, then `successful_payment`), `refundStarPayment` and
`support_refund` end in a `refunded_payment` message.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
from aiohttp import web

from tests.botapi.html import FormattedText, HtmlParseError, parse_html, trim, utf16_length
from tests.botapi.limits import RateLimiter, RateLimits
from tests.botapi.records import (
    ApiCall,
    CallbackAnswer,
    PaymentOutcome,
    PaymentStatus,
    PreCheckoutAnswer,
    SentInvoice,
    StarCharge,
    StoredFile,
    StoredMessage,
    TgUser,
    Upload,
    WebhookAttempt,
)

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64
CALLBACK_ANSWER_LIMIT = 200
INVOICE_TITLE_LIMIT = 32
INVOICE_DESCRIPTION_LIMIT = 255
INVOICE_PAYLOAD_LIMIT = 128
#: Telegram cancels a payment whose pre-checkout query the bot leaves unanswered this long.
PRE_CHECKOUT_WINDOW = 10.0

ALL_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
#: What Telegram sends when `allowed_updates` was never set or set to an empty list.
DEFAULT_UPDATE_TYPES = ALL_UPDATE_TYPES - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}

#: Parameters whose form value is the string itself; every other form value is JSON.
_STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "url",
        "secret_token",
        "language_code",
        "action",
        "file_id",
        "ip_address",
        "inline_message_id",
        "business_connection_id",
        "message_effect_id",
        "description",
        "short_description",
        "name",
        "document",
        "photo",
        "thumbnail",
        "title",
        "payload",
        "currency",
        "provider_token",
        "provider_data",
        "start_parameter",
        "photo_url",
        "pre_checkout_query_id",
        "error_message",
        "telegram_payment_charge_id",
    }
)
_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_CONTENT_KEYS = ("text", "entities", "document", "photo", "caption", "caption_entities")
_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
_QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"

_T = TypeVar("_T")


class ApiError(Exception):
    """A refusal, answered as `{"ok": false, "error_code": ..., "description": ...}`."""

    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters is not None:
            body["parameters"] = self.parameters
        return body


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


class Params:
    """The decoded parameters of one call, with Telegram's complaints for missing ones."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def chat_id(self, name: str = "chat_id") -> int:
        value = self.values.get(name)
        if value is None or value == "":
            raise bad_request(f"{name} is empty")
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request("chat not found")
        return value

    def integer(self, name: str, default: int | None = None) -> int:
        value = self.values.get(name, default)
        if value is None:
            raise bad_request(f"{name} is empty")
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"invalid {name} specified")
        return value

    def string(self, name: str) -> str | None:
        value = self.values.get(name)
        return None if value is None else str(value)

    def flag(self, name: str) -> bool:
        return self.values.get(name) in (True, "true", "True", 1)


@dataclass(frozen=True)
class _Webhook:
    url: str
    secret_token: str | None
    max_connections: int


@dataclass
class _Pending:
    update: dict[str, Any]
    delivered: bool = False


_Handler = Callable[["BotApiStub", Params], Awaitable[Any]]
_METHODS: dict[str, tuple[str, _Handler]] = {}


def _api(*names: str) -> Callable[[_Handler], _Handler]:
    """Registers a Bot API method; Telegram matches method names case-insensitively."""

    def register(handler: _Handler) -> _Handler:
        for name in names:
            _METHODS[name.lower()] = (name, handler)
        return handler

    return register


def _decode(values: dict[str, Any]) -> dict[str, Any]:
    """Form fields arrive as strings; nested objects, numbers and booleans are JSON in them."""
    decoded: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str) and key not in _STRING_PARAMS:
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        decoded[key] = value
    return decoded


def _required(params: Params, name: str) -> str:
    """A string parameter the Bot API server insists on (an empty one counts as missing)."""
    value = params.string(name)
    if not value:
        raise bad_request(f'parameter "{name}" is required')
    return value


def _positive_integer(value: Any) -> int | None:
    """An id given as a number or a numeric string, as the Bot API server parses it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def _labeled_prices(params: Params) -> list[tuple[str, int]]:
    """`prices` as (label, amount) pairs, refused with the Bot API server's wording."""
    value = params.get("prices")
    if value is None or value == "":
        raise bad_request('parameter "prices" is required')
    if isinstance(value, str):
        raise bad_request("can't parse prices JSON object")
    if not isinstance(value, list):
        raise bad_request("expected an Array of labeled prices")
    if not value:
        raise bad_request("there must be at least one price")
    return [_labeled_price(price) for price in value]


def _labeled_price(price: Any) -> tuple[str, int]:
    """One LabeledPrice, or the Bot API server's reason for refusing it."""
    if not isinstance(price, dict):
        problem = "LabeledPrice must be an Object"
    else:
        label, amount = price.get("label"), price.get("amount")
        if isinstance(amount, str) and amount.lstrip("-").isdigit():
            amount = int(amount)
        if not isinstance(label, str):
            problem = 'Field "label" must be of type String'
        elif not label:
            problem = "LabeledPrice label must be non-empty"
        elif isinstance(amount, bool) or not isinstance(amount, int):
            problem = 'Field "amount" must be of type Number'
        else:
            return label, amount
    raise bad_request(f"can't parse labeled price: {problem}")


class BotApiStub:
    """The Bot API server plus the user side of every chat, for one bot token.

    Use as `async with BotApiStub() as api:` (or `await start()` / `await stop()`); it listens
    on 127.0.0.1 on a free port. Thresholds live in `limits`, forced failures go through
    `fail_next`, blocked chats in `blocked`.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        username: str = "cardshop_test_bot",
        first_name: str = "Card Shop",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        pre_checkout_window: float = PRE_CHECKOUT_WINDOW,
    ) -> None:
        self.token = token or f"{secrets.randbelow(9 * 10**9) + 10**9}:{secrets.token_urlsafe(26)}"
        self.bot = TgUser(
            id=int(self.token.split(":", 1)[0]),
            first_name=first_name,
            username=username,
            language_code=None,
            is_bot=True,
        )
        self.limits = RateLimits()
        self.webhook_retry_delay = 0.05
        self.webhook_timeout = 10.0
        self.calls: list[ApiCall] = []
        self.answered_callbacks: dict[str, CallbackAnswer] = {}
        self.blocked: set[int] = set()
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.files: dict[str, StoredFile] = {}
        self.downloads: list[str] = []
        self.dropped_updates: list[dict[str, Any]] = []
        self.webhook_attempts: list[WebhookAttempt] = []
        #: Real seconds `pay_invoice` waits for `answerPreCheckoutQuery`, as Telegram's own
        #: timer does; a test of the timeout sets it short.
        self.pre_checkout_window = pre_checkout_window
        self.invoices: list[SentInvoice] = []
        self.charges: dict[str, StarCharge] = {}
        self.pre_checkout_answers: dict[str, PreCheckoutAnswer] = {}
        self._limiter = RateLimiter(self.limits, clock)
        #: Unix time for the dates Telegram stamps (messages, edits, calls): a test hands
        #: in its shop's clock so no update carries the day the suite happens to run.
        self._wall_clock = wall_clock
        self._chats: dict[int, dict[str, Any]] = {}
        self._messages: dict[tuple[int, int], StoredMessage] = {}
        self._chat_log: dict[int, list[StoredMessage]] = {}
        self._last_message_id: dict[int, int] = {}
        self._read_cursor: dict[int, int] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._file_numbers = itertools.count(1)
        self._query_numbers = itertools.count(1)
        self._last_update_id = 0
        self._pending: list[_Pending] = []
        self._allowed_updates = DEFAULT_UPDATE_TYPES
        self._explicit_allowed: list[str] | None = None
        self._open_queries: set[str] = set()
        self._invoices: dict[tuple[int, int], SentInvoice] = {}
        self._checkouts: dict[str, asyncio.Future[PreCheckoutAnswer]] = {}
        self._settled_invoices: set[tuple[int, int]] = set()
        self._charge_numbers = itertools.count(1)
        self._forced: dict[str, deque[ApiError]] = {}
        self._webhook: _Webhook | None = None
        self._webhook_error: tuple[int, str] | None = None
        self._poll_owner: object | None = None
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """What `TELEGRAM_API_BASE` is set to: `http://127.0.0.1:<port>`."""
        if self._port is None:
            raise RuntimeError("BotApiStub is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()
        self._webhook_task = asyncio.create_task(self._deliver_to_webhook())

    async def stop(self) -> None:
        """Ends waiting long polls with an empty answer, then closes the server."""
        self._closing = True
        self._touch()
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------ the user side

    def user(
        self,
        id: int,
        first_name: str = "Tester",
        *,
        username: str | None = None,
        last_name: str | None = None,
        language_code: str | None = "zh-hans",
    ) -> TgUser:
        """A Telegram user; their private chat with the bot has the same id."""
        user = TgUser(id, first_name, username, last_name, language_code)
        self._chats[user.id] = user.private_chat()
        return user

    def group(self, chat_id: int, title: str = "Staff") -> dict[str, Any]:
        """Registers a group (a supergroup when the id starts with -100) and returns its Chat."""
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        self._chats[chat_id] = {"id": chat_id, "type": kind, "title": title}
        return dict(self._chats[chat_id])

    def inject_message(
        self, user: TgUser, text: str, *, chat_id: int | None = None
    ) -> dict[str, Any]:
        """The user sends `text` (in their private chat unless `chat_id`); returns the update.

        A leading `/command` gets a `bot_command` entity, as Telegram clients add it.
        """
        content: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            content["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_length(command)}
            ]
        stored = self._store(self._user_chat(user, chat_id), content, sender=user)
        return self._push_update({"message": copy.deepcopy(stored.message)})

    def inject_reply(
        self, user: TgUser, chat_id: int, text: str, reply_to_message_id: int
    ) -> dict[str, Any]:
        """`user` answers message `reply_to_message_id` in `chat_id` (staff in a group)."""
        target = self._live(chat_id, reply_to_message_id)
        if target is None:
            raise LookupError(f"no message {reply_to_message_id} in chat {chat_id} to reply to")
        if chat_id not in self._chats:
            self.group(chat_id)
        stored = self._store(chat_id, {"text": text}, sender=user, reply_to=target)
        return self._push_update({"message": copy.deepcopy(stored.message)})

    def inject_callback(
        self,
        user: TgUser,
        message_id: int,
        data: str,
        *,
        chat_id: int | None = None,
        require_button: bool = True,
    ) -> dict[str, Any]:
        """`user` presses the button with `data` under the bot's message `message_id`.

        The update carries the message as it is now. Unless `require_button` is False, `data`
        must belong to one of its buttons, as a real client can only press what is shown.
        """
        chat = self._user_chat(user, chat_id)
        stored = self._live(chat, message_id)
        if stored is None or not stored.from_bot:
            raise LookupError(f"the bot has no message {message_id} in chat {chat}")
        if require_button and data not in stored.callback_data:
            raise LookupError(
                f"message {message_id} has no button with callback_data {data!r}; "
                f"it has {stored.callback_data}"
            )
        query_id = str(4_200_000_000_000_000 + next(self._query_numbers))
        self._open_queries.add(query_id)
        query = {
            "id": query_id,
            "from": user.as_dict(),
            "message": copy.deepcopy(stored.message),
            "chat_instance": str(abs(chat) * 7 + self.bot.id),
            "data": data,
        }
        return self._push_update({"callback_query": query})

    def inject_document(
        self,
        user: TgUser,
        filename: str,
        content: bytes,
        caption: str | None = None,
        *,
        mime_type: str = "application/octet-stream",
        chat_id: int | None = None,
    ) -> dict[str, Any]:
        """`user` sends a file; the bot can fetch it with getFile and the file URL."""
        file = self._save_file("document", filename, content, mime_type)
        body: dict[str, Any] = {"document": self._file_object(file)}
        if caption is not None:
            body["caption"] = caption
        stored = self._store(self._user_chat(user, chat_id), body, sender=user, file=file)
        return self._push_update({"message": copy.deepcopy(stored.message)})

    def inject_edit(self, user: TgUser, message_id: int, text: str) -> dict[str, Any]:
        """`user` edits their message `message_id` in their private chat to read `text`."""
        stored = self._live(user.id, message_id)
        if stored is None or stored.from_bot:
            raise LookupError(f"{user.id} sent no message {message_id}")
        stored.message["text"] = text
        stored.message["edit_date"] = int(self._wall_clock())
        return self._push_update({"edited_message": copy.deepcopy(stored.message)})

    def inject_sticker(self, user: TgUser, *, chat_id: int | None = None) -> dict[str, Any]:
        """`user` sends a sticker (no text, no caption)."""
        sticker = {
            "file_id": f"sticker-{next(self._file_numbers)}",
            "file_unique_id": "sticker",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "👍",
        }
        stored = self._store(self._user_chat(user, chat_id), {"sticker": sticker}, sender=user)
        return self._push_update({"message": copy.deepcopy(stored.message)})

    def inject_member_status(self, user: TgUser, status: str) -> dict[str, Any]:
        """`user` blocks ("kicked") or unblocks ("member") the bot: Telegram's my_chat_member.

        Sends to a blocked chat get 403 from then on, as after `block`.
        """
        old = "member" if status == "kicked" else "kicked"
        if status == "kicked":
            self.blocked.add(user.id)
        else:
            self.blocked.discard(user.id)

        def member(state: str) -> dict[str, Any]:
            entry: dict[str, Any] = {"user": self.bot.as_dict(), "status": state}
            return {**entry, "until_date": 0} if state == "kicked" else entry

        change = {
            "chat": self._chat(self._user_chat(user, None)),
            "from": user.as_dict(),
            "date": int(self._wall_clock()),
            "old_chat_member": member(old),
            "new_chat_member": member(status),
        }
        return self._push_update({"my_chat_member": change})

    def inject_update_raw(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queues any update as given; an `update_id` is assigned when it has none."""
        return self._push_update(update)

    def redeliver(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queues an update again with the same `update_id`, as after a lost confirmation."""
        self._pending.append(_Pending(copy.deepcopy(update)))
        self._touch()
        return update

    # ---------------------------------------------------------- payments

    def invoice(self, chat_id: int, message_id: int) -> SentInvoice:
        """The invoice the bot sent as `message_id` in `chat_id`, payload and prices included."""
        return self._invoices[(chat_id, message_id)]

    async def pay_invoice(self, user: TgUser, message: StoredMessage | int) -> PaymentOutcome:
        """`user` taps Pay under the bot's invoice `message` (or its id in their private chat).

        As in the Telegram app: the bot gets a `pre_checkout_query` and has
        `pre_checkout_window` seconds to answer it. Unanswered, or answered ok=false, the
        payment is cancelled and the bot hears nothing more. Answered ok=true, the money
        moves: the charge is kept for `refundStarPayment` and the bot gets a message from the
        user with `successful_payment`. An invoice message is paid at most once (its button
        becomes the receipt), so a second attempt raises LookupError, as does a message that
        is no invoice.
        """
        if isinstance(message, StoredMessage):
            chat_id, message_id = message.chat_id, message.message_id
        else:
            chat_id, message_id = user.id, message
        key = (chat_id, message_id)
        invoice = self._invoices.get(key)
        if invoice is None or self._live(chat_id, message_id) is None:
            raise LookupError(f"the bot has no invoice {message_id} in chat {chat_id}")
        if key in self._settled_invoices:
            raise LookupError(f"invoice {message_id} in chat {chat_id} is already paid")
        self._settled_invoices.add(key)
        query_id = str(5_000_000_000_000_000_000 + next(self._query_numbers))
        query = {
            "id": query_id,
            "from": user.as_dict(),
            "currency": invoice.currency,
            "total_amount": invoice.total_amount,
            "invoice_payload": invoice.payload,
        }
        answer: asyncio.Future[PreCheckoutAnswer] = asyncio.get_running_loop().create_future()
        self._checkouts[query_id] = answer
        try:
            self._push_update({"pre_checkout_query": query})
            done, _ = await asyncio.wait({answer}, timeout=self.pre_checkout_window)
        finally:
            # Telegram's timer has run out: an answer from now on is "query is too old".
            self._checkouts.pop(query_id, None)
        if not done or not answer.result().ok:
            self._settled_invoices.discard(key)
            if not done:
                return PaymentOutcome(PaymentStatus.TIMED_OUT, query)
            return PaymentOutcome(PaymentStatus.DECLINED, query, answer.result().error_message)
        number = next(self._charge_numbers)
        charge = StarCharge(
            # Real Stars charge ids run past 128 characters; so do these.
            telegram_payment_charge_id=f"stx{number}_{secrets.token_urlsafe(102)}",
            provider_payment_charge_id=f"{user.id}_{number}",
            payer=user,
            chat_id=chat_id,
            invoice_message_id=message_id,
            currency=invoice.currency,
            total_amount=invoice.total_amount,
            invoice_payload=invoice.payload,
        )
        self.charges[charge.telegram_payment_charge_id] = charge
        paid = self._store(chat_id, {"successful_payment": charge.payment_object()}, sender=user)
        update = self._push_update({"message": copy.deepcopy(paid.message)})
        return PaymentOutcome(PaymentStatus.PAID, query, charge=charge, update=update)

    def support_refund(self, telegram_payment_charge_id: str) -> dict[str, Any]:
        """Telegram refunds a charge on its own (support, a dispute): the bot only hears of it.

        Sends the payer's `refunded_payment` message, as after `refundStarPayment`; returns
        the update. A charge that is unknown or already refunded raises LookupError.
        """
        charge = self.charges.get(telegram_payment_charge_id)
        if charge is None or charge.refunded:
            raise LookupError(f"no refundable charge {telegram_payment_charge_id!r}")
        return self._refund(charge, "support")

    def _refund(self, charge: StarCharge, by: str) -> dict[str, Any]:
        """Marks `charge` refunded and tells the bot with a `refunded_payment` message."""
        charge.refunded_by = by
        refunded = self._store(
            charge.user_id, {"refunded_payment": charge.payment_object()}, sender=charge.payer
        )
        return self._push_update({"message": copy.deepcopy(refunded.message)})

    # -------------------------------------------------------- reading back

    async def wait_for(
        self,
        predicate: Callable[[], _T | None],
        timeout: float = 5.0,  # noqa: ASYNC109 - a plain deadline reads best in scenarios
        *,
        what: str = "the condition",
    ) -> _T:
        """Re-checks `predicate` after every call and update until it returns something truthy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = "; ".join(
                    f"{c.method} -> {c.status} {c.description or ''}".strip()
                    for c in self.calls[-5:]
                )
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; last calls: {recent or 'none'}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def next_sent(
        self,
        chat_id: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - a plain deadline reads best in scenarios
    ) -> StoredMessage:
        """The oldest message the bot sent to `chat_id` that no earlier `next_sent` returned."""

        def unread() -> StoredMessage | None:
            sent = [m for m in self._chat_log.get(chat_id, []) if m.from_bot]
            cursor = self._read_cursor.get(chat_id, 0)
            if cursor >= len(sent):
                return None
            self._read_cursor[chat_id] = cursor + 1
            return sent[cursor]

        return await self.wait_for(
            unread, timeout, what=f"a new message from the bot in chat {chat_id}"
        )

    def sent_to(self, chat_id: int) -> list[StoredMessage]:
        """The bot's messages in `chat_id` that still exist, with edits applied, oldest first."""
        return [m for m in self._chat_log.get(chat_id, []) if m.from_bot and not m.deleted]

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        return self._messages[(chat_id, message_id)]

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by getUpdates nor accepted by the webhook."""
        return [p.update for p in self._pending]

    # ---------------------------------------------------------- test controls

    def fail_next(
        self,
        method: str,
        times: int = 1,
        *,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int = 1,
    ) -> None:
        """The next `times` calls of `method` fail; by default with 429 and `retry_after`."""
        if error_code == 429 and description is None:
            error = too_many_requests(retry_after)
        elif description is None:
            raise ValueError("give the description for errors other than 429")
        else:
            error = ApiError(error_code, description)
        self._forced.setdefault(method.lower(), deque()).extend([error] * times)

    def block(self, chat_id: int) -> None:
        """The user blocks the bot (or the group removes it): sends to the chat get 403."""
        self.blocked.add(chat_id)

    def unblock(self, chat_id: int) -> None:
        self.blocked.discard(chat_id)

    def reset_rate_limits(self) -> None:
        """Forgets recent sends, as if the bot had been quiet for a while."""
        self._limiter.reset()

    # ------------------------------------------------------------------ HTTP

    async def _handle_api(self, request: web.Request) -> web.Response:
        try:
            values = await self._read_request(request)
        except ValueError as exc:
            error = bad_request(f"can't parse request body: {exc}")
            return web.json_response(error.body(), status=error.code)
        status, body = await self._call(
            request.match_info["token"], request.match_info["method"], values
        )
        return web.json_response(body, status=status)

    @staticmethod
    async def _read_request(request: web.Request) -> dict[str, Any]:
        values: dict[str, Any] = dict(request.query)
        if not request.can_read_body:
            return values
        if request.content_type == "application/json":
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the JSON body must be an object")
            values.update(body)
            return values
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                values[key] = Upload(value.filename, value.file.read(), value.content_type)
            elif isinstance(value, str):
                values[key] = value
            else:
                values[key] = bytes(value).decode()
        return values

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            error = ApiError(401, "Unauthorized")
            return web.json_response(error.body(), status=error.code)
        stored = self._files_by_path.get(request.match_info["path"])
        if stored is None:
            error = ApiError(404, "Not Found")
            return web.json_response(error.body(), status=error.code)
        self.downloads.append(stored.file_path)
        self._touch()
        return web.Response(body=stored.content, content_type=stored.mime_type)

    async def _call(
        self, token: str, method: str, values: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        params = Params(_decode(values))
        name, handler = _METHODS.get(method.lower(), (method, None))
        try:
            if token != self.token:
                raise ApiError(401, "Unauthorized")
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            forced = self._forced.get(method.lower())
            if forced:
                raise forced.popleft()
            status, body = 200, {"ok": True, "result": await handler(self, params)}
        except ApiError as exc:
            status, body = exc.code, exc.body()
        body = copy.deepcopy(body)
        self.calls.append(ApiCall(name, params.values, self._wall_clock(), status, body))
        self._touch()
        return status, body

    # ------------------------------------------------------ bot identity, misc

    @_api("getMe")
    async def _get_me(self, params: Params) -> Any:
        return {
            **self.bot.as_dict(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    @_api(
        "close",
        "logOut",
        "setMyDescription",
        "setMyShortDescription",
        "setMyName",
        "setChatMenuButton",
    )
    async def _accept(self, params: Params) -> Any:
        """Calls that change nothing a scenario can observe beyond being recorded."""
        return True

    @_api("setMyCommands")
    async def _set_my_commands(self, params: Params) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad_request("commands must be an array of at most 100 BotCommand")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_NAME.fullmatch(
                str(command.get("command", ""))
            ):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(params)] = [dict(c) for c in commands]
        return True

    @_api("getMyCommands")
    async def _get_my_commands(self, params: Params) -> Any:
        return self.commands.get(self._commands_key(params), [])

    @_api("deleteMyCommands")
    async def _delete_my_commands(self, params: Params) -> Any:
        self.commands.pop(self._commands_key(params), None)
        return True

    @staticmethod
    def _commands_key(params: Params) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), params.string("language_code") or ""

    @_api("sendChatAction")
    async def _send_chat_action(self, params: Params) -> Any:
        chat_id = params.chat_id()
        if params.get("action") not in _CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._refuse_if_blocked(chat_id)
        return True

    # ------------------------------------------------------------- updates

    @_api("getUpdates")
    async def _get_updates(self, params: Params) -> Any:
        if self._webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        owner = object()
        self._poll_owner = owner
        self._touch()  # a poll still waiting is now superseded and answers 409
        offset = params.integer("offset", 0)
        limit = min(max(params.integer("limit", 100), 1), 100)
        timeout = max(params.integer("timeout", 0), 0)
        allowed = params.get("allowed_updates")
        if allowed is not None:
            self._set_allowed_updates(allowed)
        self._confirm(offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed
            if self._webhook is not None:
                raise ApiError(409, "Conflict: terminated by setWebhook request")
            if self._poll_owner is not owner:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            batch = self._pending[:limit]
            remaining = deadline - loop.time()
            if batch or remaining <= 0 or self._closing:
                for entry in batch:
                    entry.delivered = True
                return [entry.update for entry in batch]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _confirm(self, offset: int) -> None:
        """Forgets updates confirmed by `offset`; a negative one keeps only the last -offset."""
        if offset < 0:
            del self._pending[: max(len(self._pending) + offset, 0)]
        elif offset > 0:
            self._pending = [
                p for p in self._pending if not (p.delivered and p.update["update_id"] < offset)
            ]

    def _set_allowed_updates(self, allowed: Any) -> None:
        if not isinstance(allowed, list):
            raise bad_request("can't parse allowed_updates JSON array")
        self._explicit_allowed = [str(kind) for kind in allowed]
        chosen = frozenset(self._explicit_allowed) & ALL_UPDATE_TYPES
        self._allowed_updates = chosen or DEFAULT_UPDATE_TYPES

    @_api("setWebhook")
    async def _set_webhook(self, params: Params) -> Any:
        url = params.string("url") or ""
        if params.flag("drop_pending_updates"):
            self._pending.clear()
        if params.get("allowed_updates") is not None:
            self._set_allowed_updates(params.get("allowed_updates"))
        if not url:
            self._webhook = None
            return True
        if not url.startswith(("https://", "http://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.string("secret_token")
        if secret is not None and not _SECRET_TOKEN.fullmatch(secret):
            raise bad_request("secret token contains unallowed characters")
        self._webhook = _Webhook(url, secret, params.integer("max_connections", 40))
        self._webhook_error = None
        self._touch()
        return True

    @_api("deleteWebhook")
    async def _delete_webhook(self, params: Params) -> Any:
        if params.flag("drop_pending_updates"):
            self._pending.clear()
        self._webhook = None
        return True

    @_api("getWebhookInfo")
    async def _get_webhook_info(self, params: Params) -> Any:
        info: dict[str, Any] = {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if self._webhook is not None:
            info["url"] = self._webhook.url
            info["max_connections"] = self._webhook.max_connections
            if self._webhook_error is not None:
                info["last_error_date"], info["last_error_message"] = self._webhook_error
        if self._explicit_allowed is not None:
            info["allowed_updates"] = self._explicit_allowed
        return info

    # ------------------------------------------------------------- messages

    @_api("sendMessage")
    async def _send_message(self, params: Params) -> Any:
        chat_id = params.chat_id()
        formatted = self._format(params, "text", "entities", TEXT_LIMIT)
        markup = self._markup(params.get("reply_markup"))
        reply_to = self._reply_target(params, chat_id)
        self._admit_send(chat_id)
        content: dict[str, Any] = {"text": formatted.text}
        if formatted.entities:
            content["entities"] = formatted.entities
        return self._store(chat_id, content, markup=markup, reply_to=reply_to).message

    @_api("editMessageText")
    async def _edit_message_text(self, params: Params) -> Any:
        stored = self._editable(params)
        if "text" not in stored.message:
            raise bad_request("there is no text in the message to edit")
        formatted = self._format(params, "text", "entities", TEXT_LIMIT)
        markup = self._markup(params.get("reply_markup"))
        changes = {"text": formatted.text, "entities": formatted.entities or None}
        return self._edit(stored, changes, markup)

    @_api("editMessageCaption")
    async def _edit_message_caption(self, params: Params) -> Any:
        stored = self._editable(params)
        if "text" in stored.message:
            raise bad_request("there is no caption in the message to edit")
        formatted = self._format(params, "caption", "caption_entities", CAPTION_LIMIT)
        markup = self._markup(params.get("reply_markup"))
        changes = {
            "caption": formatted.text or None,
            "caption_entities": formatted.entities or None,
        }
        return self._edit(stored, changes, markup)

    @_api("editMessageReplyMarkup")
    async def _edit_message_reply_markup(self, params: Params) -> Any:
        stored = self._editable(params)
        return self._edit(stored, {}, self._markup(params.get("reply_markup")))

    @_api("deleteMessage")
    async def _delete_message(self, params: Params) -> Any:
        stored = self._live(params.chat_id(), params.integer("message_id"))
        if stored is None:
            raise bad_request("message to delete not found")
        stored.deleted = True
        return True

    @_api("copyMessage")
    async def _copy_message(self, params: Params) -> Any:
        chat_id = params.chat_id()
        source = self._live(params.chat_id("from_chat_id"), params.integer("message_id"))
        if source is None:
            raise bad_request("message to copy not found")
        content = {
            k: copy.deepcopy(source.message[k]) for k in _CONTENT_KEYS if k in source.message
        }
        if "text" not in content and params.get("caption") is not None:
            formatted = self._format(params, "caption", "caption_entities", CAPTION_LIMIT)
            content.pop("caption_entities", None)
            content["caption"] = formatted.text
            if formatted.entities:
                content["caption_entities"] = formatted.entities
        markup = self._markup(params.get("reply_markup"))
        reply_to = self._reply_target(params, chat_id)
        self._admit_send(chat_id)
        stored = self._store(chat_id, content, markup=markup, reply_to=reply_to, file=source.file)
        return {"message_id": stored.message_id}

    @_api("forwardMessage")
    async def _forward_message(self, params: Params) -> Any:
        chat_id = params.chat_id()
        source = self._live(params.chat_id("from_chat_id"), params.integer("message_id"))
        if source is None:
            raise bad_request("message to forward not found")
        self._admit_send(chat_id)
        content = {
            k: copy.deepcopy(source.message[k]) for k in _CONTENT_KEYS if k in source.message
        }
        content["forward_origin"] = {
            "type": "user",
            "date": source.message["date"],
            "sender_user": source.message["from"],
        }
        return self._store(chat_id, content, file=source.file).message

    @_api("answerCallbackQuery")
    async def _answer_callback_query(self, params: Params) -> Any:
        query_id = params.string("callback_query_id") or ""
        if query_id not in self._open_queries:
            raise bad_request(_QUERY_INVALID)
        text = params.string("text")
        if text is not None and len(text) > CALLBACK_ANSWER_LIMIT:
            raise bad_request("MESSAGE_TOO_LONG")
        self._open_queries.discard(query_id)
        self.answered_callbacks[query_id] = CallbackAnswer(
            callback_query_id=query_id,
            text=text,
            show_alert=params.flag("show_alert"),
            url=params.string("url"),
            cache_time=params.integer("cache_time", 0),
            time=self._wall_clock(),
        )
        return True

    # ------------------------------------------------------------- payments

    @_api("sendInvoice")
    async def _send_invoice(self, params: Params) -> Any:
        """An invoice message, checked as the Bot API server and then Telegram check it.

        Telegram documents the title (1-32 characters) and description (1-255) limits but not
        the wording of its refusal; the stand-in refuses with TITLE_INVALID and
        DESCRIPTION_INVALID so a shop never counts on text being cut to fit.
        """
        chat_id = params.chat_id()
        title = _required(params, "title")
        description = _required(params, "description")
        payload = _required(params, "payload")
        currency = _required(params, "currency")
        prices = _labeled_prices(params)
        provider_token = params.string("provider_token") or ""
        total = sum(amount for _, amount in prices)
        if total <= 0:
            raise bad_request("total price must be positive")
        if any(amount <= 0 for _, amount in prices):
            raise bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
        if len(title) > INVOICE_TITLE_LIMIT:
            raise bad_request("TITLE_INVALID")
        if len(description) > INVOICE_DESCRIPTION_LIMIT:
            raise bad_request("DESCRIPTION_INVALID")
        if len(payload.encode("utf-8")) > INVOICE_PAYLOAD_LIMIT:
            raise bad_request("INVOICE_PAYLOAD_INVALID")
        if currency == "XTR":
            # Stars: no payment provider, and exactly one price.
            if provider_token or len(prices) != 1:
                raise bad_request("STARS_INVOICE_INVALID")
        elif not provider_token:
            raise bad_request("PAYMENT_PROVIDER_INVALID")
        markup = self._markup(params.get("reply_markup"))
        rows = (markup or {}).get("inline_keyboard") or []
        if rows and not (rows[0] and rows[0][0].get("pay") is True):
            raise bad_request("REPLY_MARKUP_BUY_EMPTY")  # the first button must be the Pay one
        reply_to = self._reply_target(params, chat_id)
        self._admit_send(chat_id)
        start_parameter = params.string("start_parameter") or ""
        content = {
            "invoice": {
                "title": title,
                "description": description,
                "start_parameter": start_parameter,
                "currency": currency,
                "total_amount": total,
            }
        }
        stored = self._store(chat_id, content, markup=markup, reply_to=reply_to)
        invoice = SentInvoice(
            chat_id=chat_id,
            message_id=stored.message_id,
            title=title,
            description=description,
            payload=payload,
            currency=currency,
            prices=tuple(prices),
            start_parameter=start_parameter,
            provider_token=provider_token,
        )
        self.invoices.append(invoice)
        self._invoices[(chat_id, stored.message_id)] = invoice
        return stored.message

    @_api("answerPreCheckoutQuery")
    async def _answer_pre_checkout_query(self, params: Params) -> Any:
        ok = params.flag("ok")
        error_message = params.string("error_message") or ""
        if not ok and not error_message:
            raise bad_request('parameter "error_message" is required')
        query_id = params.string("pre_checkout_query_id") or ""
        waiting = self._checkouts.get(query_id)
        if waiting is None or waiting.done():
            raise bad_request(_QUERY_INVALID)
        answer = PreCheckoutAnswer(query_id, ok, None if ok else error_message, self._wall_clock())
        self.pre_checkout_answers[query_id] = answer
        waiting.set_result(answer)
        return True

    @_api("refundStarPayment")
    async def _refund_star_payment(self, params: Params) -> Any:
        user_id = _positive_integer(params.get("user_id"))
        if user_id is None:
            raise bad_request("invalid user_id specified")
        charge_id = params.string("telegram_payment_charge_id") or ""
        if not charge_id:
            raise bad_request('parameter "telegram_payment_charge_id" is required')
        charge = self.charges.get(charge_id)
        if charge is None:
            raise bad_request("CHARGE_NOT_FOUND")
        if charge.user_id != user_id:
            raise bad_request("USER_ID_INVALID")
        if charge.refunded:
            raise bad_request("CHARGE_ALREADY_REFUNDED")
        self._refund(charge, "bot")
        return True

    # ---------------------------------------------------------------- files

    @_api("sendDocument")
    async def _send_document(self, params: Params) -> Any:
        return self._send_file(params, "document")

    @_api("sendPhoto")
    async def _send_photo(self, params: Params) -> Any:
        return self._send_file(params, "photo")

    def _send_file(self, params: Params, kind: str) -> Any:
        chat_id = params.chat_id()
        file = self._input_file(params, kind)
        formatted = self._format(params, "caption", "caption_entities", CAPTION_LIMIT)
        markup = self._markup(params.get("reply_markup"))
        reply_to = self._reply_target(params, chat_id)
        self._admit_send(chat_id)
        media = self._file_object(file)
        content: dict[str, Any] = {kind: [media] if kind == "photo" else media}
        if formatted.text:
            content["caption"] = formatted.text
        if formatted.entities:
            content["caption_entities"] = formatted.entities
        return self._store(chat_id, content, markup=markup, reply_to=reply_to, file=file).message

    @_api("getFile")
    async def _get_file(self, params: Params) -> Any:
        stored = self.files.get(params.string("file_id") or "")
        if stored is None:
            raise bad_request("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "file_path": stored.file_path,
        }

    def _input_file(self, params: Params, kind: str) -> StoredFile:
        """The uploaded part, `attach://` part or earlier file_id given for `kind`."""
        value = params.get(kind)
        if isinstance(value, str) and value.startswith("attach://"):
            value = params.get(value.removeprefix("attach://"))
        if isinstance(value, Upload):
            if not value.content:
                raise bad_request("file must be non-empty")
            return self._save_file(kind, value.filename or kind, value.content, value.content_type)
        if not isinstance(value, str) or not value:
            raise bad_request(f"there is no {kind} in the request")
        if value.startswith(("http://", "https://")):
            raise bad_request("failed to get HTTP URL content")
        stored = self.files.get(value)
        if stored is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        if stored.kind != kind:
            raise bad_request(f"can't use file of type {stored.kind.title()} as {kind.title()}")
        return stored

    def _save_file(self, kind: str, filename: str, content: bytes, mime_type: str) -> StoredFile:
        number = next(self._file_numbers)
        prefix = "AgACAgIAAxkBAAI" if kind == "photo" else "BQACAgIAAxkBAAI"
        suffix = PurePosixPath(filename).suffix or (".jpg" if kind == "photo" else "")
        stored = StoredFile(
            file_id=f"{prefix}{number:05d}{secrets.token_urlsafe(18)}",
            file_unique_id="AgAD" + hashlib.sha256(content).hexdigest()[:12],
            file_path=f"{'photos' if kind == 'photo' else 'documents'}/file_{number}{suffix}",
            kind=kind,
            filename=filename,
            mime_type=mime_type,
            content=content,
        )
        self.files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    @staticmethod
    def _file_object(file: StoredFile) -> dict[str, Any]:
        """The Document, or the PhotoSize (dimensions are not decoded, so reported as 0)."""
        media: dict[str, Any] = {
            "file_id": file.file_id,
            "file_unique_id": file.file_unique_id,
            "file_size": len(file.content),
        }
        if file.kind == "photo":
            return {**media, "width": 0, "height": 0}
        return {**media, "file_name": file.filename, "mime_type": file.mime_type}

    # ------------------------------------------------------------- checks

    def _format(
        self, params: Params, text_key: str, entities_key: str, limit: int
    ) -> FormattedText:
        """The text after `parse_mode` and trimming, within Telegram's length limits."""
        raw = params.string(text_key) or ""
        mode = (params.string("parse_mode") or "").lower()
        if mode == "html":
            try:
                formatted = parse_html(raw)
            except HtmlParseError as exc:
                raise bad_request(f"can't parse entities: {exc}") from exc
        elif mode in ("markdown", "markdownv2"):
            raise bad_request("the local Bot API stand-in implements parse_mode HTML only")
        elif mode:
            raise bad_request("unsupported parse_mode")
        else:
            entities = params.get(entities_key)
            formatted = FormattedText(raw, list(entities) if isinstance(entities, list) else [])
        formatted = trim(formatted)
        is_text = text_key == "text"
        if is_text and not formatted.text:
            raise bad_request("message text is empty")
        if len(formatted.text) > limit:
            raise bad_request("message is too long" if is_text else "message caption is too long")
        return formatted

    @staticmethod
    def _markup(markup: Any) -> dict[str, Any] | None:
        """Checks an inline keyboard the way Telegram does; other keyboards pass as given."""
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return markup
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request(
                'Field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
            )
        for button in (b for row in rows for b in row):
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise bad_request("can't parse inline keyboard button: Text must be a String")
            if not any(action in button for action in _BUTTON_ACTIONS):
                raise bad_request(
                    "can't parse inline keyboard button: "
                    "Text buttons are unallowed in the inline keyboard"
                )
            data = button.get("callback_data")
            if data is not None and (
                not isinstance(data, str)
                or not 1 <= len(data.encode("utf-8")) <= CALLBACK_DATA_LIMIT
            ):
                raise bad_request("BUTTON_DATA_INVALID")
            url = button.get("url")
            if url is not None and not re.match(r"(https?|tg)://\S+$", str(url)):
                raise bad_request("BUTTON_URL_INVALID")
        return markup

    def _reply_target(self, params: Params, chat_id: int) -> StoredMessage | None:
        parameters = params.get("reply_parameters")
        if isinstance(parameters, dict):
            message_id = parameters.get("message_id")
            target_chat = parameters.get("chat_id", chat_id)
            allow_missing = bool(parameters.get("allow_sending_without_reply"))
        elif params.get("reply_to_message_id") is not None:
            message_id = params.get("reply_to_message_id")
            target_chat = chat_id
            allow_missing = params.flag("allow_sending_without_reply")
        else:
            return None
        target = None
        if isinstance(target_chat, int) and isinstance(message_id, int):
            target = self._live(target_chat, message_id)
        if target is None and not allow_missing:
            raise bad_request("message to be replied not found")
        return target

    def _refuse_if_blocked(self, chat_id: int) -> None:
        if chat_id not in self.blocked:
            return
        if chat_id > 0:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        kind = self._chat(chat_id)["type"]
        raise ApiError(403, f"Forbidden: bot was kicked from the {kind} chat")

    def _admit_send(self, chat_id: int) -> None:
        """A new message to `chat_id`: refused when blocked or over the flood limits."""
        self._refuse_if_blocked(chat_id)
        retry_after = self._limiter.acquire(chat_id)
        if retry_after is not None:
            raise too_many_requests(retry_after)

    def _editable(self, params: Params) -> StoredMessage:
        if params.get("inline_message_id") is not None:
            raise bad_request("MESSAGE_ID_INVALID")
        stored = self._live(params.chat_id(), params.integer("message_id"))
        if stored is None:
            raise bad_request("message to edit not found")
        if not stored.from_bot:
            raise bad_request("message can't be edited")
        return stored

    def _edit(
        self, stored: StoredMessage, changes: dict[str, Any], markup: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Applies an edit; without `reply_markup` Telegram removes the inline keyboard."""
        edited = copy.deepcopy(stored.message)
        for key, value in changes.items():
            if value is None:
                edited.pop(key, None)
            else:
                edited[key] = value
        edited.pop("reply_markup", None)
        if markup is not None and markup.get("inline_keyboard"):
            edited["reply_markup"] = markup
        if {k: v for k, v in edited.items() if k != "edit_date"} == {
            k: v for k, v in stored.message.items() if k != "edit_date"
        }:
            raise bad_request(_NOT_MODIFIED)
        edited["edit_date"] = int(self._wall_clock())
        stored.versions.append(stored.message)
        stored.message = edited
        stored.reply_markup = markup
        return edited

    # ------------------------------------------------------------- storage

    def _chat(self, chat_id: int) -> dict[str, Any]:
        if chat_id not in self._chats:
            if chat_id > 0:
                self._chats[chat_id] = {"id": chat_id, "type": "private", "first_name": "User"}
            else:
                self.group(chat_id, f"Group {chat_id}")
        return dict(self._chats[chat_id])

    def _user_chat(self, user: TgUser, chat_id: int | None) -> int:
        self._chats.setdefault(user.id, user.private_chat())
        return user.id if chat_id is None else chat_id

    def _live(self, chat_id: int, message_id: int) -> StoredMessage | None:
        stored = self._messages.get((chat_id, message_id))
        return None if stored is None or stored.deleted else stored

    def _store(
        self,
        chat_id: int,
        content: dict[str, Any],
        *,
        sender: TgUser | None = None,
        markup: dict[str, Any] | None = None,
        reply_to: StoredMessage | None = None,
        file: StoredFile | None = None,
    ) -> StoredMessage:
        """Adds a message to a chat; message ids count up per chat, as in private chats."""
        message_id = self._last_message_id.get(chat_id, 0) + 1
        self._last_message_id[chat_id] = message_id
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": (sender or self.bot).as_dict(),
            "chat": self._chat(chat_id),
            "date": int(self._wall_clock()),
            **content,
        }
        if reply_to is not None:
            quoted = copy.deepcopy(reply_to.message)
            quoted.pop("reply_to_message", None)
            message["reply_to_message"] = quoted
        if markup is not None and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        stored = StoredMessage(chat_id, message_id, sender is None, message, markup, file)
        self._messages[(chat_id, message_id)] = stored
        self._chat_log.setdefault(chat_id, []).append(stored)
        return stored

    def _push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queues an update unless `allowed_updates` excludes its type (then Telegram drops it)."""
        if "update_id" not in update:
            self._last_update_id += 1
            update = {"update_id": self._last_update_id, **update}
        self._last_update_id = max(self._last_update_id, int(update["update_id"]))
        kinds = [key for key in update if key != "update_id"]
        if kinds and kinds[0] not in self._allowed_updates:
            self.dropped_updates.append(update)
        else:
            self._pending.append(_Pending(update))
        self._touch()
        return update

    def _touch(self) -> None:
        """Wakes everything waiting for a change: long polls, `wait_for`, webhook delivery."""
        self._changed.set()
        self._changed = asyncio.Event()

    # -------------------------------------------------------------- webhook

    async def _deliver_to_webhook(self) -> None:
        """Posts queued updates in order, retrying one until the bot answers 2xx."""
        while not self._closing:
            changed = self._changed
            hook = self._webhook
            if hook is None or not self._pending:
                await changed.wait()
                continue
            entry = self._pending[0]
            if await self._post_update(hook, entry.update):
                with contextlib.suppress(ValueError):
                    self._pending.remove(entry)
                self._touch()
            else:
                await asyncio.sleep(self.webhook_retry_delay)

    async def _post_update(self, hook: _Webhook, update: dict[str, Any]) -> bool:
        assert self._session is not None
        headers = {}
        if hook.secret_token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook.secret_token
        reply: dict[str, Any] | None = None
        status: int | None = None
        error = ""
        try:
            async with self._session.post(
                hook.url,
                json=update,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.webhook_timeout),
            ) as response:
                status = response.status
                if 200 <= status < 300:
                    reply = await self._webhook_reply(response)
                else:
                    error = f"Wrong response from the webhook: {status} {response.reason}"
        except TimeoutError:
            error = "Read timeout expired"
        except aiohttp.ClientError as exc:
            error = f"Connection failed: {exc}"
        delivered = status is not None and 200 <= status < 300
        self.webhook_attempts.append(
            WebhookAttempt(int(update["update_id"]), status, None if delivered else error)
        )
        if not delivered:
            self._webhook_error = (int(self._wall_clock()), error)
            self._touch()
            return False
        if reply is not None:
            await self._call(self.token, str(reply.pop("method")), reply)
        return True

    @staticmethod
    async def _webhook_reply(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
        """A Bot API call the bot put in its webhook answer, which Telegram then executes."""
        values: dict[str, Any] = {}
        if response.content_type == "application/json":
            body = await response.json()
            values = body if isinstance(body, dict) else {}
        elif response.content_type == "multipart/form-data":
            reader = aiohttp.MultipartReader(response.headers, response.content)
            while (part := await reader.next()) is not None:
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                data = await part.read(decode=True)
                if part.filename:
                    kind = part.headers.get("Content-Type", "application/octet-stream")
                    values[part.name] = Upload(part.filename, bytes(data), kind)
                else:
                    values[part.name] = bytes(data).decode()
        return values if "method" in values else None

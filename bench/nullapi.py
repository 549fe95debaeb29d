"""The Bot API answered in-process, for both adapters: no network, plausible results.

`NullApi` answers each method the way Telegram would in shape (a `Message` for
sendMessage / editMessageText, `True` for answerCallbackQuery...) and records what the
bot drew: the callback data of the last keyboard in each chat (the buy sequence reads
the confirmation's nonce from it), the last message id in each chat, and the alerts.
`NullSession` (aiogram) and `NullRequest` (python-telegram-bot) plug it in where the
framework would speak HTTP, so everything above the socket runs as in production:
the framework's request serialisation, the shop's flood control, response parsing.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from telegram.request import BaseRequest, RequestData

#: A well-formed token; nothing ever checks it against Telegram.
TOKEN = "123456789:AAbench-null-session-token-0123456789"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}
#: Telegram dates are Unix seconds; any fixed one will do.
DATE = 1_795_000_000
#: Methods answered with the message they wrote.
MESSAGE_METHODS = frozenset({"sendMessage", "editMessageText", "sendDocument", "sendPhoto"})


def _int(value: Any) -> int | None:
    """A chat or message id as the framework serialised it (an int, or its digits)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


class NullApi:
    """What the bot asked of Telegram, and Telegram's answers without Telegram."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.alerts: list[str] = []
        self.keyboards: dict[int, list[str]] = {}
        self.last_message: dict[int, int] = {}
        self._message_ids = itertools.count(1_000)

    def answer(self, method: str, params: Mapping[str, Any]) -> Any:
        self.calls[method] += 1
        chat_id = _int(params.get("chat_id"))
        if method == "getMe":
            return BOT_USER
        if method == "answerCallbackQuery":
            if params.get("show_alert") in (True, "true"):
                self.alerts.append(str(params.get("text")))
            return True
        if method == "copyMessage":
            return {"message_id": next(self._message_ids)}
        if method not in MESSAGE_METHODS or chat_id is None:
            return True
        message_id = _int(params.get("message_id")) or next(self._message_ids)
        self.last_message[chat_id] = message_id
        self._remember_keyboard(chat_id, params.get("reply_markup"))
        return {
            "message_id": message_id,
            "date": DATE,
            "chat": {"id": chat_id, "type": "private", "first_name": "member"},
            "from": BOT_USER,
            "text": str(params.get("text") or params.get("caption") or ""),
        }

    def _remember_keyboard(self, chat_id: int, markup: Any) -> None:
        if isinstance(markup, str):
            markup = json.loads(markup)
        rows = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
        self.keyboards[chat_id] = [
            button["callback_data"] for row in rows for button in row if "callback_data" in button
        ]


class NullSession(BaseSession):
    """aiogram's session with the HTTP round trip replaced by `NullApi`.

    The method is serialised with aiogram's own `prepare_value` and the answer parsed
    with its own `check_response`, as `AiohttpSession` does around the network.
    """

    def __init__(self, api: NullApi) -> None:
        super().__init__()
        self.null_api = api  # `api` is the session's TelegramAPIServer

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 (aiogram's signature)
    ) -> TelegramType:
        files: dict[str, Any] = {}
        params = {
            key: self.prepare_value(value, bot=bot, files=files)
            for key, value in method.model_dump(warnings=False).items()
        }
        result = self.null_api.answer(method.__api_method__, params)
        body = json.dumps({"ok": True, "result": result})
        response = self.check_response(bot, method, 200, body)
        return response.result  # type: ignore[return-value]

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 (aiogram's signature)
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        yield b""

    async def close(self) -> None:
        """Nothing to close."""


class NullRequest(BaseRequest):
    """python-telegram-bot's request with the HTTP round trip replaced by `NullApi`."""

    def __init__(self, api: NullApi) -> None:
        self.null_api = api

    @property
    def read_timeout(self) -> float | None:
        return None

    async def initialize(self) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close."""

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        params = request_data.json_parameters if request_data is not None else {}
        result = self.null_api.answer(url.rsplit("/", 1)[-1], params)
        return 200, json.dumps({"ok": True, "result": result}).encode()

"""Scenario helpers: one member's chat with the real bot through the Bot API stand-in.

`say` and `tap` act like a person in the Telegram app and return what the bot sent or
edited because of it, once the bot has gone quiet (no API call but polling for a
moment), so a scenario reads as a conversation and still asserts on real HTTP traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from bot.app import run
from core.clock import Clock
from core.config import Settings
from tests.botapi import BotApiStub, StoredMessage, TgUser

#: How long the bot must make no call (other than polling) to count as done.
QUIET_SECONDS = 0.15
IDLE_METHODS = {"getupdates", "getme"}


async def settle(api: BotApiStub, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Wait until the bot has made no call except polling for QUIET_SECONDS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = len(api.calls)
    quiet_since = loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.02)
        busy = [c for c in api.calls[seen:] if c.method.lower() not in IDLE_METHODS]
        seen = len(api.calls)
        if busy:
            quiet_since = loop.time()
        elif loop.time() - quiet_since >= QUIET_SECONDS:
            return
    raise AssertionError("the bot never went quiet")


@dataclass
class Chat:
    """A member's private chat with the bot."""

    api: BotApiStub
    user: TgUser
    queries: list[str] = field(default_factory=list)

    @property
    def chat_id(self) -> int:
        return self.user.id

    def _snapshot(self) -> dict[int, int]:
        return {m.message_id: len(m.versions) for m in self.api.sent_to(self.chat_id)}

    def _changed_since(self, before: dict[int, int]) -> list[StoredMessage]:
        return [
            m for m in self.api.sent_to(self.chat_id) if before.get(m.message_id) != len(m.versions)
        ]

    async def say(self, text: str, *, expect_reply: bool = True) -> list[StoredMessage]:
        """Send `text`; the bot's new or edited messages once it is done."""
        return await self.act(lambda: self.api.inject_message(self.user, text), expect_reply)

    async def act(
        self, inject: Callable[[], object], expect_reply: bool = True
    ) -> list[StoredMessage]:
        """Do anything the stand-in can inject; the bot's new or edited messages after it."""
        before = self._snapshot()
        inject()
        return await self._outcome(before, expect_reply)

    async def send_update(
        self, update: dict[str, Any], *, expect_reply: bool = True
    ) -> list[StoredMessage]:
        before = self._snapshot()
        self.api.redeliver(update)
        return await self._outcome(before, expect_reply)

    async def _outcome(self, before: dict[int, int], expect_reply: bool) -> list[StoredMessage]:
        if expect_reply:
            await self.api.wait_for(
                lambda: self._changed_since(before), what=f"a reply in chat {self.chat_id}"
            )
        await settle(self.api)
        return self._changed_since(before)

    def last_keyboard(self) -> StoredMessage:
        for message in reversed(self.api.sent_to(self.chat_id)):
            if message.callback_data:
                return message
        raise AssertionError(f"no message with buttons in chat {self.chat_id}")

    def button_data(self, text: str) -> tuple[int, str]:
        message = self.last_keyboard()
        for button in message.buttons:
            if button.get("text") == text and "callback_data" in button:
                return message.message_id, button["callback_data"]
        labels = [b.get("text") for b in message.buttons]
        raise AssertionError(f"no button {text!r} in the last keyboard: {labels}")

    async def tap(self, text: str) -> list[StoredMessage]:
        """Press the button labelled `text` in the latest keyboard."""
        message_id, data = self.button_data(text)
        return await self.press(message_id, data)

    async def press(
        self, message_id: int, data: str, *, chat_id: int | None = None
    ) -> list[StoredMessage]:
        """Send any callback data for a message, as a forged client could."""
        before = self._snapshot()
        update = self.api.inject_callback(
            self.user, message_id, data, chat_id=chat_id, require_button=False
        )
        query_id = update["callback_query"]["id"]
        self.queries.append(query_id)
        await self.api.wait_for(
            lambda: query_id in self.api.answered_callbacks, what=f"an answer to {data!r}"
        )
        await settle(self.api)
        return self._changed_since(before)

    def answer(self) -> str | None:
        """The toast or alert text of the latest answered button."""
        return self.api.answered_callbacks[self.queries[-1]].text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: The secret Telegram sends with each webhook call in the scenarios.
WEBHOOK_SECRET = "s3cret-token"


def webhook_settings(settings: Settings) -> Settings:
    """`settings` for webhook mode on a free local port, with `WEBHOOK_SECRET`."""
    port = free_port()
    return settings.model_copy(
        update={
            "webhook_url": f"http://127.0.0.1:{port}/telegram/webhook",
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "http_listen": f"127.0.0.1:{port}",
        }
    )


@contextlib.asynccontextmanager
async def running_bot(
    api: BotApiStub, settings: Settings, clock: Clock
) -> AsyncIterator[asyncio.Task[None]]:
    """`bot.app.run(settings)` on the test's clock as a task until the block ends.

    The bot reads time from the same clock the test moves, so no scenario depends on the
    day it runs. Its crash fails the test.
    """
    task = asyncio.create_task(run(settings, clock=clock))
    # The last call before updates flow; a long poll is only recorded when it returns.
    ready = "setWebhook" if settings.webhook_url else "deleteWebhook"
    try:
        await api.wait_for(
            lambda: task.done() or api.calls_to(ready), timeout=30, what=f"the bot to call {ready}"
        )
        if task.done():
            task.result()
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

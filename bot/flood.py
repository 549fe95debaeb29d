"""Telegram's flood control, met in one place for both adapters and every sender.

Telegram allows about 30 messages a second across a bot and about one a second in a
chat (short bursts pass), and answers anything above with 429 and `retry_after`.
Retrying blindly a fixed number of times loses replies under load: two hundred handlers
hit the limit together, all sleep the same `retry_after`, all retry together and fail
again. So every request to a chat takes a turn from one shop-wide pace below the
global limit, and a 429 is waited out for exactly `retry_after` and sent again, with
every other request to that chat held back as long. Replies, job notices and
broadcasts share the pace, because they share the bot's limit.

Both adapters route every API request through `FloodControl.send` (aiogram as a
session middleware, python-telegram-bot as its rate limiter); nothing above them
retries a 429. Neither framework retries a request by itself: aiogram raises
`TelegramRetryAfter`, and PTB's own retrying (`AIORateLimiter`) is not installed; their
polling loops back off after a failed getUpdates, which only sees a 429 too long to
wait out here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Requests to chats per second across the bot: under Telegram's ~30, for headroom.
GLOBAL_PER_SECOND = 28.0
#: The longest `retry_after` waited out; a longer one (a flood ban) fails the request.
LONGEST_WAIT = 300.0


def flood_wait(error: BaseException) -> float | None:
    """Seconds a 429 asks to wait; None for any other error.

    aiogram's `TelegramRetryAfter` and PTB's `RetryAfter` both carry `retry_after`
    (seconds, or a timedelta in PTB's newer form), so this needs neither framework.
    """
    wait = getattr(error, "retry_after", None)
    if isinstance(wait, timedelta):
        return wait.total_seconds()
    if isinstance(wait, int | float) and not isinstance(wait, bool):
        return float(wait)
    return None


class FloodControl:
    """The shop's one pace for requests to chats, and the one place a 429 is waited out.

    Turns are reserved in arrival order, so waiting requests leave in the order they
    came and none is starved; one instance serves every client of the process.
    """

    def __init__(self, per_second: float = GLOBAL_PER_SECOND) -> None:
        self._rate = per_second
        self._burst = max(per_second, 1.0)
        self._tokens = self._burst
        self._stamp: float | None = None
        #: Chats answered 429 lately: until when requests to each are held back.
        self._held: dict[int, float] = {}

    async def send(self, chat_id: int | None, request: Callable[[], Awaitable[T]]) -> T:
        """`request()` once its turn comes; a 429 is waited out and the request sent again.

        `chat_id` is the chat the request writes to, or None for requests that write to
        no chat (answering a button, reading updates), which take no turn.
        """
        while True:
            await self._turn(chat_id)
            try:
                return await request()
            except Exception as error:
                wait = flood_wait(error)
                if wait is None or wait > LONGEST_WAIT:
                    raise
                log.warning("429 for chat %s: sending again in %ss", chat_id, wait)
                await self._hold(chat_id, wait)

    async def _turn(self, chat_id: int | None) -> None:
        if chat_id is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        until = self._held.get(chat_id)
        if until is not None:
            if until > now:
                await asyncio.sleep(until - now)
                now = loop.time()
            if self._held.get(chat_id) == until:
                del self._held[chat_id]
        wait = self._reserve(now)
        if wait > 0:
            await asyncio.sleep(wait)

    def _reserve(self, now: float) -> float:
        """Take a token from the shop-wide bucket; seconds until it is really there."""
        if self._stamp is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    async def _hold(self, chat_id: int | None, wait: float) -> None:
        """Wait out a 429: requests to the chat hold back until then (see `_turn`)."""
        if chat_id is None:
            await asyncio.sleep(wait)
            return
        until = asyncio.get_running_loop().time() + wait
        self._held[chat_id] = max(self._held.get(chat_id, until), until)

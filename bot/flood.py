"""Telegram's flood control, met in one place for both adapters and every sender.

Telegram allows about 30 messages a second across a bot and about one a second in a
chat (short bursts pass), and answers anything above with 429 and `retry_after`.
Retrying blindly a fixed number of times loses replies under load: two hundred handlers
hit the limit together, all sleep the same `retry_after`, all retry together and fail
again. So every request to a chat takes a turn from one shop-wide pace below the
global limit, and a 429 is waited out for exactly `retry_after` and sent again, with
every other request to that chat held back as long. Replies, job notices and
broadcasts share the pace, because they share the bot's limit.

With several workers (`bot.workers`) the pace is the bot's, not each process's: given
a `SharedPace`, every worker reserves its turns from one schedule kept in Redis, and
broadcasts (`core.broadcast`, BROADCAST_RATE) use another such pace. Should Redis fail,
a worker falls back to its own pace rather than stop sending.

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

from redis.asyncio import Redis
from redis.exceptions import RedisError

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


#: Reserve the next turn of a pace kept in Redis (GCRA, "generic cell rate"): KEYS[1]
#: holds the theoretical arrival time of the next request in ms of Redis's clock, so
#: every worker reads one time; ARGV: ms per request, ms of burst tolerance. Returns
#: the ms to wait and the turn's time.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local go = tat - tonumber(ARGV[2])
if go < now then go = now end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX',
           math.ceil(next_tat - now) + 1000)
return {string.format('%.3f', go - now), string.format('%.3f', go)}
"""


class SharedPace:
    """`per_second` turns a second (bursts of `burst`) across every process sharing `key`.

    One Lua call per turn reserves a place on a schedule in Redis and says how long to
    sleep for it, so turns leave in the order they were reserved, whichever worker took
    them, and no one-second window holds more than `per_second` plus the burst.
    """

    def __init__(self, redis: Redis, key: str, per_second: float, burst: float = 1.0) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("per_second must be positive and burst at least 1")
        self._reserve = redis.register_script(_RESERVE)
        self._key = key
        self._interval_ms = 1000.0 / per_second
        self._tolerance_ms = (burst - 1) * self._interval_ms
        self.per_second = per_second

    async def reserve(self) -> tuple[float, float]:
        """Take the next turn: (seconds to wait for it, its time in Redis ms)."""
        wait, at = await self._reserve(
            keys=[self._key], args=[self._interval_ms, self._tolerance_ms]
        )
        return max(float(wait), 0.0) / 1000.0, float(at)

    async def acquire(self) -> None:
        """Wait for the next turn (the `core.broadcast.Pace` a broadcast takes).

        Redis away: one interval, this worker pacing itself, rather than a failed send.
        """
        try:
            wait, _ = await self.reserve()
        except RedisError:
            log.warning("shared pace unavailable: pacing this worker alone", exc_info=True)
            wait = self._interval_ms / 1000.0
        if wait > 0:
            await asyncio.sleep(wait)


class FloodControl:
    """The shop's one pace for requests to chats, and the one place a 429 is waited out.

    Turns are reserved in arrival order, so waiting requests leave in the order they
    came and none is starved; one instance serves every client of the process, and
    with `shared` every worker of the bot (see the module docstring).
    """

    def __init__(
        self, per_second: float = GLOBAL_PER_SECOND, *, shared: SharedPace | None = None
    ) -> None:
        self._shared = shared
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
        wait = await self._reserve_turn(now)
        if wait > 0:
            await asyncio.sleep(wait)

    async def _reserve_turn(self, now: float) -> float:
        """Seconds until this request's turn: the shared pace's, else this process's."""
        if self._shared is not None:
            try:
                wait, _ = await self._shared.reserve()
            except RedisError:
                log.warning("shared pace unavailable: pacing this worker alone", exc_info=True)
            else:
                return wait
        return self._reserve(now)

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

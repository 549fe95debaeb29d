"""Telegram's flood limits for sending, as token buckets.

Telegram documents "about one message per second" in a chat (short bursts pass) and "about
30 messages per second" across the bot, and answers anything above with 429 and a whole
number of seconds in `retry_after`. The thresholds are plain attributes of `RateLimits` so a
test can tighten them to provoke a 429 quickly or loosen them for a bulk scenario.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class RateLimits:
    """Thresholds read on every send, so changing them mid-test takes effect at once."""

    per_chat_per_second: float = 1.0
    per_chat_burst: int = 5
    global_per_second: float = 30.0
    global_burst: int = 30
    enabled: bool = True


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """One bucket per chat plus one for the whole bot; a send needs a token from both."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._chats: dict[int, _Bucket] = {}
        self._bot: _Bucket | None = None

    def acquire(self, chat_id: int) -> int | None:
        """Takes a token for a send to `chat_id`, or returns the `retry_after` to answer."""
        if not self.limits.enabled:
            return None
        now = self._clock()
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Bucket(self.limits.per_chat_burst, now)
        if self._bot is None:
            self._bot = _Bucket(self.limits.global_burst, now)
        waits = [
            self._wait(chat, now, self.limits.per_chat_per_second, self.limits.per_chat_burst),
            self._wait(self._bot, now, self.limits.global_per_second, self.limits.global_burst),
        ]
        longest = max(waits)
        if longest > 0:
            return max(1, math.ceil(longest))
        chat.tokens -= 1
        self._bot.tokens -= 1
        return None

    def reset(self) -> None:
        """Forgets past sends, as if the bot had been quiet for a long while."""
        self._chats.clear()
        self._bot = None

    @staticmethod
    def _wait(bucket: _Bucket, now: float, rate: float, burst: int) -> float:
        """Refills `bucket` up to `now` and returns the seconds until it holds one token."""
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) / rate

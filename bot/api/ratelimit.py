"""Requests per key per minute, from the key's tier (`api_requests_per_minute`).

A sliding log rather than a fixed window: a key may make at most N requests in any
60 seconds, so a burst straddling a minute boundary cannot double the rate. Time is
the shop's clock (so the tests decide it); each admitted request is one entry.

With Redis (REDIS_URL) the log is one sorted set per key and one Lua script trims it,
counts and admits atomically, so every worker of the shop shares the limit. Without it
the log lives in this process, which is the whole shop then (SQLite, one worker).
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from typing import Protocol

from redis.asyncio import Redis

#: The window `api_requests_per_minute` counts over.
WINDOW_SECONDS = 60


class RateLimiter(Protocol):
    async def admit(self, key_id: str, limit: int, now: float) -> int | None:
        """Count one request of `key_id` at `now` (unix seconds) if fewer than `limit`
        were admitted in the window before it; else the whole seconds until one is."""


class MemoryRateLimiter:
    """The sliding log in this process (no Redis)."""

    def __init__(self) -> None:
        self._logs: dict[str, deque[float]] = {}

    async def admit(self, key_id: str, limit: int, now: float) -> int | None:
        # No await between reading and appending: one event loop admits atomically.
        log = self._logs.setdefault(key_id, deque())
        while log and log[0] <= now - WINDOW_SECONDS:
            log.popleft()
        if len(log) >= limit:
            return max(1, math.ceil(log[0] + WINDOW_SECONDS - now))
        log.append(now)
        return None


#: KEYS[1] the key's log; ARGV now (ms), window (ms), limit, a unique member.
#: Returns 0 when admitted, else the milliseconds until the oldest entry leaves.
_ADMIT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


class RedisRateLimiter:
    """The sliding log in Redis, shared by every worker."""

    def __init__(self, redis: Redis, namespace: str = "cardshop") -> None:
        self._script = redis.register_script(_ADMIT)
        self._prefix = f"{namespace}:api:rate:"

    async def admit(self, key_id: str, limit: int, now: float) -> int | None:
        now_ms = int(now * 1000)
        # The member only has to be unique; the score carries the time.
        member = f"{now_ms}:{secrets.token_hex(6)}"
        waited = await self._script(
            keys=[self._prefix + key_id], args=[now_ms, WINDOW_SECONDS * 1000, limit, member]
        )
        return None if int(waited) == 0 else max(1, math.ceil(int(waited) / 1000))

"""Update de-duplication: a redelivered `update_id` has no second effect.

Telegram redelivers an update when a webhook answer is lost or a poller restarts
before confirming; handling it twice could, say, send a code twice. The first handler
to claim an id wins, atomically, in the database or in Redis.
"""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

from core.chat_state import ChatStates

#: Telegram keeps an unconfirmed update for at most 24 hours; remember ids twice as long.
REDIS_TTL_SECONDS = 2 * 24 * 3600


class Deduper(Protocol):
    async def first_time(self, update_id: int) -> bool: ...


class DbDeduper:
    """Claims ids in the `processed_updates` table (insert-ignore on the primary key)."""

    def __init__(self, states: ChatStates, source: str) -> None:
        self._states = states
        self._source = source

    async def first_time(self, update_id: int) -> bool:
        return await self._states.first_time(self._source, update_id)


class RedisDeduper:
    """Claims ids with `SET NX` and a TTL (REDIS_URL set)."""

    def __init__(self, redis: Redis, source: str, namespace: str = "cardshop") -> None:
        self._redis = redis
        self._prefix = f"{namespace}:update:{source}:"

    async def first_time(self, update_id: int) -> bool:
        claimed = await self._redis.set(
            f"{self._prefix}{update_id}", b"1", nx=True, ex=REDIS_TTL_SECONDS
        )
        return bool(claimed)

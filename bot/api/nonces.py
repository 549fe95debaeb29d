"""Where the API remembers each key's nonces until their timestamps leave the window.

In the database by default (`ApiKeys.remember_nonce`: a unique row, the write that also
records the key's use), in Redis when REDIS_URL is set (`SET NX` with the expiry, no
database write per request; the key's `last_used_at` is then written at most once a
minute per key by this process). Either way a nonce is accepted once per key across
every worker, and only after its request's signature checked out.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Protocol

from redis.asyncio import Redis

from core.api_keys import LAST_USED_STEP, NONCE_MAX, ApiKeys
from core.clock import Clock


class NonceStore(Protocol):
    async def remember(self, key_id: str, nonce: str, expires_at: datetime) -> bool:
        """True the first time `key_id` uses `nonce` (kept until `expires_at`), False after."""


class DbNonces:
    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def remember(self, key_id: str, nonce: str, expires_at: datetime) -> bool:
        return await self._keys.remember_nonce(key_id, nonce, expires_at)


class RedisNonces:
    def __init__(self, redis: Redis, keys: ApiKeys, clock: Clock, namespace: str = "cardshop"):
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._prefix = f"{namespace}:api:nonce:"
        #: When this process last recorded each key's use.
        self._touched: dict[str, datetime] = {}

    async def remember(self, key_id: str, nonce: str, expires_at: datetime) -> bool:
        if not nonce or len(nonce) > NONCE_MAX:
            return False
        now = self._clock.now()
        # A time to live, not an instant: Redis counts it on its own clock, the shop on
        # the shop's.
        ttl = max(1, math.ceil((expires_at - now).total_seconds()))
        stored = await self._redis.set(f"{self._prefix}{key_id}:{nonce}", 1, nx=True, ex=ttl)
        if not stored:
            return False
        last = self._touched.get(key_id)
        if last is None or now - last >= LAST_USED_STEP:
            self._touched[key_id] = now
            await self._keys.touch(key_id)
        return True

"""Where each chat's conversation state is kept: the database, or Redis when configured.

Never only in process memory: a restart, a second worker or a switch of adapter must
find the member exactly where they were (in the middle of typing a quantity, say).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from redis.asyncio import Redis

from core.chat_state import ChatStates, ChatStateView


def state_key(chat_id: int, user_id: int) -> str:
    """One state per member per chat, so a group never shares one member's input."""
    return f"{chat_id}:{user_id}"


class StateStore(Protocol):
    async def get(self, key: str) -> ChatStateView: ...

    async def set(self, key: str, state: str | None, data: dict[str, Any]) -> None: ...

    async def clear(self, key: str) -> None: ...


class DbStateStore:
    """State in the `conversation_states` table (the default)."""

    def __init__(self, states: ChatStates) -> None:
        self._states = states

    async def get(self, key: str) -> ChatStateView:
        return await self._states.get(key)

    async def set(self, key: str, state: str | None, data: dict[str, Any]) -> None:
        await self._states.set(key, state, data)

    async def clear(self, key: str) -> None:
        await self._states.clear(key)


class RedisStateStore:
    """State as one JSON value per chat in Redis (REDIS_URL set)."""

    def __init__(self, redis: Redis, namespace: str = "cardshop") -> None:
        self._redis = redis
        self._namespace = namespace

    def _key(self, key: str) -> str:
        return f"{self._namespace}:state:{key}"

    async def get(self, key: str) -> ChatStateView:
        raw = await self._redis.get(self._key(key))
        if raw is None:
            return ChatStateView()
        stored = json.loads(raw)
        return ChatStateView(stored["state"], stored["data"])

    async def set(self, key: str, state: str | None, data: dict[str, Any]) -> None:
        await self._redis.set(self._key(key), json.dumps({"state": state, "data": data}))

    async def clear(self, key: str) -> None:
        await self._redis.delete(self._key(key))

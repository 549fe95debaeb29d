"""Chat plumbing kept in the database: conversation state and processed update ids.

Both must survive a restart and be shared by every worker, so neither lives only in
process memory. The bot uses these when no Redis is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete

from core.clock import Clock
from core.models import ConversationState, ProcessedUpdate
from core.sql import insert_ignoring_conflict
from core.uow import Database


@dataclass(frozen=True, slots=True)
class ChatStateView:
    """Where a chat is in a conversation; `state` None means nowhere in particular."""

    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class ChatStates:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def get(self, key: str) -> ChatStateView:
        async with self._db.read() as session:
            row = await session.get(ConversationState, key)
            if row is None:
                return ChatStateView()
            return ChatStateView(row.state, dict(row.data or {}))

    async def set(self, key: str, state: str | None, data: dict[str, Any]) -> None:
        """Replace the chat's state and data (an upsert that is safe under retries)."""
        now = self._clock.now()
        async with self._db.transaction() as session:
            await session.execute(
                insert_ignoring_conflict(session, ConversationState),
                {"key": key, "state": state, "data": data, "updated_at": now},
            )
            row = await session.get(ConversationState, key, with_for_update=True)
            assert row is not None
            row.state, row.data, row.updated_at = state, dict(data), now

    async def clear(self, key: str) -> None:
        async with self._db.transaction() as session:
            await session.execute(delete(ConversationState).where(ConversationState.key == key))

    async def first_time(self, source: str, update_id: int) -> bool:
        """Record `update_id` as handled; False when it already was (a redelivery)."""
        async with self._db.transaction() as session:
            inserted = await session.scalar(
                insert_ignoring_conflict(session, ProcessedUpdate),
                {"source": source, "update_id": update_id, "created_at": self._clock.now()},
            )
            return inserted is not None

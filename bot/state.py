"""Where chat state and handled update ids are kept: the database, or Redis when configured.

Never only in process memory: a restart, a second worker or a switch of adapter must
find the member exactly where they were (in the middle of typing a quantity, say), and
a redelivered update must be known as one wherever it lands.

Per update a store costs one read on arrival and at most one write when the update is
done (see `bot.framework.Runtime.begin` and `run`):

- `DbChatStore`: one statement reads the member, the state and whether the update id
  was handled (`ChatStates.arrive`). The id is claimed together with the update's own
  first write transaction, or at the end with the state; a claim found taken by then
  rolls that effect back. A crash between a handler's effect and the claim therefore
  cannot happen when the effect is a database write; a handler that only sends
  messages (a menu) may send them again if the process dies before its claim is
  written and Telegram redelivers.
- `RedisChatStore`: one pipelined round trip claims the id (`SET NX`, so two workers
  never both take it) and reads the state, then the member is read in the database. A
  crash after the claim loses the update, as a claim-first store does: no double
  effect, at the price of an update dropped in that rare case.

A chat's state is read on arrival and written when the update is done, with no lock in
the store: what keeps two updates of one chat from interleaving that read and write is
that one chat is handled by one process at a time, one update after the other. One
process takes updates from Telegram (`bot.framework.ChatLocks` orders a chat's updates
there); with several workers (`bot.workers`) a chat's stream partition is read by one
worker at a time under a lease, and its updates in order. Workers use `DbChatStore`,
whose claim commits with the update's effect, so a dead worker's updates can be handled
again by another without being lost (as `RedisChatStore`'s claim-first would).
"""

from __future__ import annotations

import json
from typing import Protocol

from redis.asyncio import Redis

from core.chat_state import Arrival, ChatStates, ChatStateView, UpdateWrites

#: Telegram keeps an unconfirmed update for at most 24 hours; remember ids twice as long.
REDIS_TTL_SECONDS = 2 * 24 * 3600


def state_key(chat_id: int, user_id: int) -> str:
    """One state per member per chat, so a group never shares one member's input."""
    return f"{chat_id}:{user_id}"


class ChatStore(Protocol):
    #: The database part (members, and claims and state unless Redis keeps them).
    records: ChatStates
    #: True when `arrive` already claimed the update; else the claim is part of the writes.
    claims_on_arrival: bool

    async def arrive(self, telegram_id: int, key: str, update_id: int | None) -> Arrival:
        """The member, the state under `key`, and whether the update was handled before."""

    async def settle(self, writes: UpdateWrites) -> None:
        """Write what the update has left to write (nothing when `writes` is empty)."""


class DbChatStore:
    """State in `conversation_states`, claims in `processed_updates` (the default)."""

    claims_on_arrival = False

    def __init__(self, records: ChatStates) -> None:
        self.records = records

    async def arrive(self, telegram_id: int, key: str, update_id: int | None) -> Arrival:
        return await self.records.arrive(telegram_id, key, update_id)

    async def settle(self, writes: UpdateWrites) -> None:
        await self.records.settle(writes)


class RedisChatStore:
    """State as one JSON value per chat and claims as `SET NX` keys in Redis (REDIS_URL)."""

    claims_on_arrival = True

    def __init__(
        self, records: ChatStates, redis: Redis, source: str, namespace: str = "cardshop"
    ) -> None:
        self.records = records
        self._redis = redis
        self._states = f"{namespace}:state:"
        self._updates = f"{namespace}:update:{source}:"

    async def arrive(self, telegram_id: int, key: str, update_id: int | None) -> Arrival:
        # One after the other: a redelivery then costs no database read, and measured on
        # a busy 2-core machine, the two at once (asyncio.gather) took longer, not less.
        first, state = await self._claim_and_read(key, update_id)
        if not first:
            return Arrival(member=None, state=state, seen=True)
        arrival = await self.records.arrive(telegram_id, None, None)
        return Arrival(member=arrival.member, state=state, seen=False)

    async def _claim_and_read(self, key: str, update_id: int | None) -> tuple[bool, ChatStateView]:
        """Claim `update_id` and read the state in one round trip; (claimed, state)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            if update_id is not None:
                pipe.set(f"{self._updates}{update_id}", b"1", nx=True, ex=REDIS_TTL_SECONDS)
            pipe.get(self._states + key)
            replies = await pipe.execute()
        raw = replies[-1]
        claimed = update_id is None or bool(replies[0])
        if raw is None:
            return claimed, ChatStateView()
        stored = json.loads(raw)
        return claimed, ChatStateView(stored["state"], stored["data"])

    async def settle(self, writes: UpdateWrites) -> None:
        if writes.state is not None:
            key, view = writes.state
            if view.state is None:
                await self._redis.delete(self._states + key)
            else:
                value = json.dumps({"state": view.state, "data": view.data})
                await self._redis.set(self._states + key, value)
        await self.records.settle(writes.without_state())

"""What every chat update reads and writes besides its own effect: one read, one write.

An update needs its member (fresh: a balance or tier changed by another process must
show), the chat's conversation state and whether its `update_id` was handled already.
`ChatStates.arrive` reads all three in one statement. What the update then has to
write (its id claimed as handled, a changed name, a reachable flag, the new state) is
an `UpdateWrites`, written in one transaction: by `ChatStates.rider` inside the
update's own first write transaction when it has one (so a crash cannot keep the
effect without the claim, and a second worker handling the same update at the same
moment rolls its effect back), else at the end by `ChatStates.settle`.

State and claims live here in the database unless Redis is configured (bot.state);
never only in process memory, so a restart or a second worker finds them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import (
    BigInteger,
    Insert,
    String,
    bindparam,
    delete,
    exists,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from core.clock import Clock
from core.db import table_of
from core.members import MEMBER_COLUMNS, MemberView
from core.models import ConversationState, Member, ProcessedUpdate
from core.sql import ignoring_conflict
from core.uow import Database

_MEMBERS = table_of(Member)
_STATES = table_of(ConversationState)
_UPDATES = table_of(ProcessedUpdate)


@dataclass(frozen=True, slots=True)
class ChatStateView:
    """Where a chat is in a conversation; `state` None means nowhere in particular."""

    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Arrival:
    """What an update found: its member (None: not registered yet), state, and whether
    its id was handled before."""

    member: MemberView | None
    state: ChatStateView
    seen: bool


class AlreadyHandledError(Exception):
    """Another worker recorded this update first; the transaction it rode on rolls back."""

    def __init__(self, update_id: int) -> None:
        super().__init__(f"update {update_id} was handled already")
        self.update_id = update_id


@dataclass(frozen=True, slots=True)
class UpdateWrites:
    """What an update writes besides its own effect; nothing is written when empty."""

    #: The update id to record as handled (None: nothing to claim, or claimed elsewhere).
    claim: int | None = None
    member_id: int | None = None
    #: Member columns to change (a new name, the reachable flag).
    profile: Mapping[str, Any] = field(default_factory=dict)
    #: The chat's state key and its new state (None: the state did not change).
    state: tuple[str, ChatStateView] | None = None

    def __bool__(self) -> bool:
        return self.claim is not None or bool(self.profile) or self.state is not None

    def without_state(self) -> UpdateWrites:
        return replace(self, state=None)


#: The one statement of `arrive`: a row whatever exists, the member and state joined in.
_ARRIVAL = select(
    *(_MEMBERS.c[name] for name in MEMBER_COLUMNS),
    _STATES.c.state.label("chat_state"),
    _STATES.c.data.label("chat_data"),
    exists()
    .where(
        _UPDATES.c.source == bindparam("source", type_=String()),
        _UPDATES.c.update_id == bindparam("update_id", type_=BigInteger()),
    )
    .label("seen"),
).select_from(
    select(literal(1).label("one"))
    .subquery("one_row")
    .outerjoin(_MEMBERS, _MEMBERS.c.telegram_id == bindparam("telegram_id", type_=BigInteger()))
    .outerjoin(_STATES, _STATES.c.key == bindparam("key", type_=String()))
)


@functools.cache
def _upsert_state(dialect_name: str) -> Insert:
    """INSERT … ON CONFLICT (key) DO UPDATE: one statement whether the row exists or not."""
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    insert = dialect.insert(_STATES)
    return insert.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[_STATES.c.key],
        set_={
            "state": insert.excluded.state,
            "data": insert.excluded.data,
            "updated_at": insert.excluded.updated_at,
        },
    )


class ChatStates:
    def __init__(self, db: Database, clock: Clock, source: str) -> None:
        self._db = db
        self._clock = clock
        #: Name under which update ids are claimed (one bot, whichever adapter runs it).
        self._source = source

    async def arrive(self, telegram_id: int, key: str | None, update_id: int | None) -> Arrival:
        """The member, the state under `key` and whether `update_id` was handled: one read.

        `key` and `update_id` None skip those parts (Redis keeps them).
        """
        params = {
            "telegram_id": telegram_id,
            "key": key,
            "source": self._source,
            "update_id": update_id,
        }

        def read(conn: Connection) -> Arrival:
            row = conn.execute(_ARRIVAL, params).one()._mapping
            member = None
            if row["id"] is not None:
                member = MemberView(**{name: row[name] for name in MEMBER_COLUMNS})
            return Arrival(
                member=member,
                state=ChatStateView(row["chat_state"], dict(row["chat_data"] or {})),
                seen=bool(row["seen"]),
            )

        return await self._db.run_read(read)

    def rider(self, writes: UpdateWrites) -> Callable[[Connection], None]:
        """`writes` as work for `Database.riding`; a claim someone else holds raises
        `AlreadyHandledError`, rolling the update's effect back with it."""
        return functools.partial(self._write, writes, strict=True)

    async def settle(self, writes: UpdateWrites) -> None:
        """Write what is left, in one transaction (none when there is nothing).

        A claim found taken is no error here: the effect is done by then.
        """
        if writes:
            await self._db.run(functools.partial(self._write, writes, strict=False))

    def _write(self, writes: UpdateWrites, conn: Connection, *, strict: bool) -> None:
        now = self._clock.now()
        if writes.claim is not None:
            claimed = ignoring_conflict(ProcessedUpdate).first(
                conn, {"source": self._source, "update_id": writes.claim, "created_at": now}
            )
            if claimed is None and strict:
                raise AlreadyHandledError(writes.claim)
        if writes.profile:
            conn.execute(
                update(_MEMBERS).where(_MEMBERS.c.id == writes.member_id).values(**writes.profile)
            )
        if writes.state is not None:
            key, view = writes.state
            if view.state is None:
                conn.execute(delete(_STATES).where(_STATES.c.key == key))
            else:
                conn.execute(
                    _upsert_state(conn.dialect.name),
                    {"key": key, "state": view.state, "data": view.data, "updated_at": now},
                )

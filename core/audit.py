"""The audit log: every admin action, from the chat or the shell, and every refused attempt.

`record` joins the caller's transaction, so the change and its audit row commit or roll
back together; `log` has a transaction of its own, for what changes nothing (a denial,
an export) or follows a service that commits by itself. What an attempt carried is
untrusted (a forged button, a typed reason), so every text is made storable and cut to
its column first: an audit row must never fail because of what it records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.models import AuditEntry, max_length
from core.text import clip, storable
from core.uow import Database

#: The action name of a refused admin command.
DENIED = "denied"

ACTOR_MAX = max_length(AuditEntry.actor)
ACTION_MAX = max_length(AuditEntry.action)
TARGET_MAX = max_length(AuditEntry.target)


def jsonable(value: Any) -> Any:
    """A DTO, mapping or scalar as plain JSON: datetimes as ISO text, enums as values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {storable(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        return storable(value)
    return value


def _state(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    plain = jsonable(value)
    return plain if isinstance(plain, dict) else {"value": plain}


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: AuditEntry) -> AuditView:
        return cls(
            id=row.id,
            actor=row.actor,
            action=row.action,
            target=row.target,
            before=row.before,
            after=row.after,
            created_at=row.created_at,
        )


class Audit:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def record(
        self,
        session: AsyncSession,
        actor: str,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
    ) -> None:
        """Add an audit row to the caller's transaction (never commits)."""
        await session.execute(
            insert(AuditEntry).values(
                actor=clip(storable(actor), ACTOR_MAX),
                action=clip(storable(action), ACTION_MAX),
                target=clip(storable(target), TARGET_MAX),
                before=_state(before),
                after=_state(after),
                created_at=self._clock.now(),
            )
        )

    async def log(
        self, actor: str, action: str, target: str = "", before: Any = None, after: Any = None
    ) -> None:
        """Write one audit row in a transaction of its own."""
        async with self._db.transaction() as session:
            await self.record(session, actor, action, target, before, after)

    async def denied(self, actor: str, command: str) -> None:
        """A non-admin tried an admin command: refuse it elsewhere, remember it here."""
        await self.log(actor, DENIED, command)

    async def recent(
        self, limit: int = 20, *, actor: str | None = None, action: str | None = None
    ) -> list[AuditView]:
        """The newest rows first, optionally one actor's or one action's."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if actor is not None:
            query = query.where(AuditEntry.actor == actor)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        async with self._db.read() as session:
            return [AuditView.of(row) for row in await session.scalars(query)]

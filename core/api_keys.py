"""Reseller API keys (API接口对接): issue, list, revoke, and resolve a request's key.

A key is a public id (`ak_` + 16 hex digits) and a secret (`sk_` + 32 random bytes,
URL-safe base64) shown once, when it is issued. The server needs the secret back in
clear to check each request's HMAC, so it cannot be stored as a hash: it is kept as a
Fernet token of the codes' vault (same keys, same rotation), never in clear.

Tiers: `issue` needs the member's tier to have `api` and caps the un-revoked keys at
the tier's `api_keys_max`, counted under the member row lock (PostgreSQL; the write
lock from `BEGIN IMMEDIATE` on SQLite), so racing issues never pass the cap. A member
who loses the tier keeps their keys; `authenticate` reads the tier as it is now and
answers `allowed=False` until it returns.

Nonces (when no Redis holds them) live in `api_nonces`, whose primary key refuses one
twice; the reservations job deletes the expired ones (`forget_nonces`).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Row, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection

from core.audit import Audit
from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder
from core.members import load_member
from core.models import ApiKey, ApiNonce, Member, max_length
from core.sql import ignoring_conflict
from core.text import clip, storable
from core.uow import Database
from core.vault import CodeVault

KEY_PREFIX = "ak_"
SECRET_PREFIX = "sk_"
#: What an issued key id looks like; anything else is refused before the database.
KEY_ID = re.compile(r"ak_[0-9a-f]{16}")
LABEL_MAX = max_length(ApiKey.label)
NONCE_MAX = max_length(ApiNonce.nonce)
#: `last_used_at` is written at most this often per key, so a busy key costs no extra
#: write on most requests.
LAST_USED_STEP = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    """A key as its owner and the admins see it; never holds the secret."""

    key_id: str
    member_id: int
    label: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyView:
        return cls(
            key_id=row.key_id,
            member_id=row.member_id,
            label=row.label,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key with its secret: the one time the secret exists in clear outside a request."""

    key: ApiKeyView
    secret: str


@dataclass(frozen=True, slots=True)
class ApiCaller:
    """What a request's key resolves to."""

    key_id: str
    member_id: int
    secret: str
    tier_key: str
    #: The member's tier has `api` now.
    allowed: bool
    #: From the member's current tier (0 when not allowed).
    requests_per_minute: int


#: A live key and its member's tier, in one statement.
_CALLER = (
    select(ApiKey.key_id, ApiKey.member_id, ApiKey.secret, Member.tier_key)
    .join(Member, Member.id == ApiKey.member_id)
    .where(ApiKey.key_id == bindparam("key"), ApiKey.revoked_at.is_(None))
)


def new_key_id() -> str:
    return KEY_PREFIX + secrets.token_hex(8)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class ApiKeys:
    def __init__(
        self, db: Database, ladder: Ladder, vault: CodeVault, clock: Clock, audit: Audit
    ) -> None:
        self._db = db
        self._ladder = ladder
        self._vault = vault
        self._clock = clock
        self._audit = audit

    async def issue(
        self, member_id: int, *, label: str | None = None, actor: str | None = None
    ) -> IssuedKey:
        """A new key for the member, its secret in clear this once.

        API_NOT_ALLOWED when the tier lacks `api`; API_KEY_LIMIT when the member already
        holds `api_keys_max` un-revoked keys. An admin's issue (`actor`) is audited in
        the same transaction (never the secret).
        """
        now = self._clock.now()
        label = clip(storable(label).strip(), LABEL_MAX) if label else None
        secret = new_secret()
        async with self._db.transaction() as session:
            member = await load_member(session, member_id, for_update=True)
            capabilities = self._ladder.tier(member.tier_key).capabilities
            if not capabilities.api:
                raise ShopError(ErrorCode.API_NOT_ALLOWED, tier=member.tier_key)
            held = await session.scalar(
                select(func.count(ApiKey.id)).where(
                    ApiKey.member_id == member_id, ApiKey.revoked_at.is_(None)
                )
            )
            if (held or 0) >= capabilities.api_keys_max:
                raise ShopError(ErrorCode.API_KEY_LIMIT, max=capabilities.api_keys_max)
            row = ApiKey(
                key_id=new_key_id(),
                member_id=member_id,
                secret=self._vault.encrypt(secret),
                label=label or None,
                created_at=now,
            )
            session.add(row)
            await session.flush()
            view = ApiKeyView.of(row)
            if actor is not None:
                await self._audit.record(
                    session, actor, "api_key.issue", f"member:{member_id}",
                    after={"key_id": view.key_id, "label": view.label},
                )  # fmt: skip
        return IssuedKey(key=view, secret=secret)

    async def list(self, member_id: int, *, include_revoked: bool = False) -> list[ApiKeyView]:
        """The member's keys, oldest first; revoked ones only when asked for."""
        query = select(ApiKey).where(ApiKey.member_id == member_id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        async with self._db.read() as session:
            rows = await session.scalars(query.order_by(ApiKey.id))
            return [ApiKeyView.of(row) for row in rows]

    async def revoke(self, member_id: int, key_id: str, *, actor: str | None = None) -> ApiKeyView:
        """End a key of the member's at once; revoking it again changes nothing.

        API_KEY_NOT_FOUND for an unknown key or someone else's. An admin's revoke
        (`actor`) is audited in the same transaction.
        """
        now = self._clock.now()
        async with self._db.transaction() as session:
            row = await session.scalar(
                select(ApiKey)
                .where(ApiKey.key_id == key_id, ApiKey.member_id == member_id)
                .with_for_update()
            )
            if row is None:
                raise ShopError(ErrorCode.API_KEY_NOT_FOUND, key=key_id)
            if row.revoked_at is None:
                row.revoked_at = now
                await session.flush()
                if actor is not None:
                    await self._audit.record(
                        session, actor, "api_key.revoke", f"member:{member_id}",
                        after={"key_id": key_id},
                    )  # fmt: skip
            return ApiKeyView.of(row)

    async def authenticate(self, key_id: str) -> ApiCaller | None:
        """The caller behind a request's key id, with the secret to check its signature.

        None for an unknown or revoked key (or text that is no key id at all, refused
        without a query). One read: the key joined to its member's tier; the tier's
        `api` and `api_requests_per_minute` are read from the ladder as it is now.
        """
        if not KEY_ID.fullmatch(key_id):
            return None
        row: Row[str, int, bytes, str] | None = await self._db.run_read(
            lambda conn: conn.execute(_CALLER, {"key": key_id}).first()
        )
        if row is None:
            return None
        tier = self._ladder.by_key.get(row.tier_key)
        allowed = tier is not None and tier.capabilities.api
        return ApiCaller(
            key_id=row.key_id,
            member_id=row.member_id,
            secret=self._vault.decrypt(row.secret),
            tier_key=row.tier_key,
            allowed=allowed,
            requests_per_minute=tier.capabilities.api_requests_per_minute
            if tier is not None and allowed
            else 0,
        )

    async def remember_nonce(self, key_id: str, nonce: str, expires_at: datetime) -> bool:
        """True the first time a key uses `nonce`, False after (the DB nonce store).

        Call it once a request's signature checked out: the same transaction records
        that the key was used (`touch`). A nonce that cannot be stored (empty, or longer
        than the column) is never accepted.
        """
        if not nonce or len(nonce) > NONCE_MAX or not KEY_ID.fullmatch(key_id):
            return False
        now = self._clock.now()

        def remember(conn: Connection) -> bool:
            inserted = ignoring_conflict(ApiNonce).scalar(
                conn,
                {"key_id": key_id, "nonce": nonce, "expires_at": expires_at},
            )
            if inserted is None:
                return False
            _touch_on(conn, key_id, now)
            return True

        return await self._db.run(remember)

    async def touch(self, key_id: str) -> None:
        """Record that a key signed a request (for the member's list), when its nonces
        are kept elsewhere (Redis); at most one write per key a minute."""
        now = self._clock.now()
        await self._db.run(lambda conn: _touch_on(conn, key_id, now))

    async def forget_nonces(self) -> int:
        """Delete the nonces whose replay window has passed; how many (the job)."""
        now = self._clock.now()

        def purge(conn: Connection) -> int:
            return conn.execute(delete(ApiNonce).where(ApiNonce.expires_at < now)).rowcount

        return await self._db.run(purge)


def _touch_on(conn: Connection, key_id: str, now: datetime) -> None:
    conn.execute(
        update(ApiKey)
        .where(
            ApiKey.key_id == key_id,
            (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - LAST_USED_STEP),
        )
        .values(last_used_at=now)
    )

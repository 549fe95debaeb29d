"""Members: who they are, their language and who referred them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.models import Member, max_length
from core.sql import insert_ignoring_conflict
from core.text import BIGINT_MAX, clip, storable, whole_number
from core.uow import Database

REFERRAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
SUPPORTED_LOCALES = ("zh_CN", "en")
USERNAME_MAX = max_length(Member.username)
DISPLAY_NAME_MAX = max_length(Member.display_name)


@dataclass(frozen=True, slots=True)
class MemberView:
    id: int
    telegram_id: int | None
    username: str | None
    display_name: str
    locale: str | None
    referral_code: str
    referrer_id: int | None
    balance: int
    total_spent: int
    growth_points: int
    tier_key: str
    tier_source: str
    trial_until: datetime | None
    protected_until: datetime | None
    unreachable: bool
    created_at: datetime

    @classmethod
    def of(cls, row: Member) -> MemberView:
        return cls(**{name: getattr(row, name) for name in MEMBER_COLUMNS})


#: The `members` columns a `MemberView` carries, by name.
MEMBER_COLUMNS = tuple(f.name for f in fields(MemberView))


def locale_for(language_code: str | None) -> str:
    """Telegram's `language_code` to a shop locale: any `zh*` is zh_CN, the rest en."""
    return "zh_CN" if (language_code or "").lower().startswith("zh") else "en"


def names_from_telegram(username: str | None, display_name: str) -> tuple[str | None, str]:
    """A Telegram account's names made storable and cut to their columns."""
    if username is not None:
        username = clip(storable(username), USERNAME_MAX)
    return username, clip(storable(display_name), DISPLAY_NAME_MAX)


def profile_changes(
    member: MemberView, *, username: str | None, display_name: str
) -> dict[str, Any]:
    """The name columns that differ from what Telegram says now; {} for most updates.

    An empty display name (Telegram always sends a first name; a stand-in may not)
    keeps the one on record.
    """
    username, display_name = names_from_telegram(username, display_name)
    changes: dict[str, Any] = {}
    if username != member.username:
        changes["username"] = username
    if display_name and display_name != member.display_name:
        changes["display_name"] = display_name
    return changes


def new_referral_code() -> str:
    return "".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(8))


async def load_member(session: AsyncSession, member_id: int, *, for_update: bool = False) -> Member:
    """The member row or MEMBER_NOT_FOUND; `for_update` locks it on PostgreSQL."""
    query = select(Member).where(Member.id == member_id)
    if for_update:
        query = query.with_for_update()
    member = await session.scalar(query)
    if member is None:
        raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
    return member


class Members:
    def __init__(self, db: Database, clock: Clock, default_tier: str) -> None:
        self._db = db
        self._clock = clock
        self._default_tier = default_tier

    async def register(
        self,
        telegram_id: int,
        *,
        username: str | None = None,
        display_name: str = "",
        language_code: str | None = None,
        referral_code: str | None = None,
    ) -> MemberView:
        """Find or create the member behind a Telegram account; safe to call concurrently.

        A referral code counts only when the account is new, and never for oneself. Names
        come from outside: they are made storable and cut to their columns.
        """
        username, display_name = names_from_telegram(username, display_name)
        async with self._db.transaction() as session:
            member = await session.scalar(select(Member).where(Member.telegram_id == telegram_id))
            if member is None:
                referrer_id = None
                if referral_code:
                    referrer_id = await session.scalar(
                        select(Member.id).where(Member.referral_code == referral_code.upper())
                    )
                await session.execute(
                    insert_ignoring_conflict(session, Member),
                    {
                        "telegram_id": telegram_id,
                        "username": username,
                        "display_name": display_name,
                        "locale": locale_for(language_code) if language_code else None,
                        "referral_code": new_referral_code(),
                        "referrer_id": referrer_id,
                        "tier_key": self._default_tier,
                        "created_at": self._clock.now(),
                    },
                )
                member = await session.scalar(
                    select(Member).where(Member.telegram_id == telegram_id)
                )
                assert member is not None
            elif (username, display_name) != (member.username, member.display_name):
                member.username, member.display_name = username, display_name or member.display_name
            return MemberView.of(member)

    async def get(self, member_id: int) -> MemberView:
        async with self._db.read() as session:
            return MemberView.of(await load_member(session, member_id))

    async def by_telegram(self, telegram_id: int) -> MemberView | None:
        async with self._db.read() as session:
            row = await session.scalar(select(Member).where(Member.telegram_id == telegram_id))
            return MemberView.of(row) if row else None

    async def find(self, query: str) -> MemberView:
        """Look a member up by Telegram id, `@username` or `#member-id`.

        The query is typed by a person: only ASCII digits count as a number (`²` is a
        digit to Python, not to `int`), and a number beyond its column's range, like
        any other query that names nobody, is MEMBER_NOT_FOUND.
        """
        text = storable(query.strip())
        if text.startswith("@") and 0 < len(text) - 1 <= USERNAME_MAX:
            condition = func.lower(Member.username) == text[1:].lower()
        elif text.startswith("#") and (member_id := whole_number(text[1:])) is not None:
            condition = Member.id == member_id
        elif (telegram_id := whole_number(text, BIGINT_MAX)) is not None:
            condition = Member.telegram_id == telegram_id
        else:
            raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=text)
        async with self._db.read() as session:
            row = await session.scalar(select(Member).where(condition))
            if row is None:
                raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=text)
            return MemberView.of(row)

    async def set_locale(self, member_id: int, locale: str) -> None:
        if locale not in SUPPORTED_LOCALES:
            raise ShopError(ErrorCode.INVALID_INPUT, locale=locale)
        async with self._db.transaction() as session:
            await session.execute(
                update(Member).where(Member.id == member_id).values(locale=locale)
            )

    async def set_reachable(self, member_id: int, reachable: bool) -> None:
        """Record that the bot can (or, after a 403, cannot) message this member."""
        async with self._db.transaction() as session:
            await session.execute(
                update(Member).where(Member.id == member_id).values(unreachable=not reachable)
            )

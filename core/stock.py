"""Stock of codes per product: claiming for an order (the hot path) and importing.

Codes are only ever written encrypted; duplicates are found by their keyed digests,
never by comparing plaintext, so nothing readable lands in the database or its WAL.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, func, select, union_all, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.db import table_of
from core.errors import ErrorCode, ShopError
from core.models import Code, Product
from core.prepared import Prepared
from core.sql import insert_ignoring_conflict
from core.uow import Database
from core.vault import CodeVault

#: Longer lines are a pasted paragraph or a binary file, not a code.
MAX_CODE_LENGTH = 256
#: Rows per INSERT/UPDATE statement and digests per lookup, well under every driver's
#: bound-parameter limit.
BATCH_SIZE = 500
#: The digest migration 0003 gave the later copies of a code that had been sold more than
#: once before codes were unique shop-wide (`sold-twice:<id>`): the first sale keeps the
#: real digest, the buyers of the others keep their order and its code.
SOLD_TWICE_MARK = "sold-twice:"
#: Unicode categories a pasted code must not contain: controls and invisible formatting
#: (zero-width spaces), which would make a code look right and fail at redemption.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf"})


def claim_codes_on(
    conn: Connection,
    product_id: int,
    quantity: int,
    order_id: int,
    at: datetime,
    member_id: int,
) -> list[bytes]:
    """Attach `quantity` available codes to `order_id` in one statement; their secrets.

    Available to `member_id` means unsold and either unreserved or reserved by that
    member; the member's own reserved codes go first (the first branch of a UNION ALL), so
    a reservation is spent before the open shelf and never another member's hold.

    On PostgreSQL the inner select skips rows another buyer holds (`FOR UPDATE SKIP
    LOCKED`), so concurrent buyers never wait on or share a code; on SQLite the whole
    transaction already holds the write lock (`BEGIN IMMEDIATE`). The caller must roll
    back when fewer than `quantity` come back.
    """
    claimed = _CLAIM.all(
        conn,
        {"product": product_id, "quantity": quantity, "order": order_id, "at": at,
         "member": member_id},
    )  # fmt: skip
    return [secret for (secret,) in claimed]


@functools.cache
def _claim_statement(dialect_name: str) -> Any:
    """The claim, built once per database so the hot path only binds its values."""
    codes = table_of(Code).c
    quantity = bindparam("quantity", type_=Integer)
    unsold = (codes.product_id == bindparam("product"), codes.order_id.is_(None))
    # Two index ranges, the member's holds (`ix_codes_reserved`) then the open shelf
    # (`ix_codes_available`), instead of one OR that no partial index serves.
    held = select(codes.id).where(*unsold, codes.reserved_by == bindparam("member"))
    shelf = select(codes.id).where(*unsold, codes.reserved_by.is_(None))
    branches = [branch.order_by(codes.id).limit(quantity) for branch in (held, shelf)]
    if dialect_name == "postgresql":
        branches = [branch.with_for_update(skip_locked=True) for branch in branches]
    both = union_all(*(select(branch.subquery().c.id) for branch in branches)).subquery()
    available = select(both.c.id).limit(quantity)
    return (
        update(table_of(Code))
        .where(codes.id.in_(available.scalar_subquery()))
        .values(order_id=bindparam("order"), sold_at=bindparam("at", type_=codes.sold_at.type))
        .returning(codes.secret)
    )


_CLAIM = Prepared(_claim_statement)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A line not added because its code already exists: named by line, never by code."""

    #: 1-based, counting every line given (blank ones too).
    line: int
    #: The SKU of the product whose stock holds the code (sold or not), or None when an
    #: earlier line of the same import has it.
    held_by: str | None


@dataclass(frozen=True, slots=True)
class ImportReport:
    added: int
    #: Already in the shop's stock (under any product), or repeated within the file.
    duplicate: int
    #: Lines that cannot be a code (too long, control characters, inner whitespace).
    rejected: int
    #: Codes available for the product once the import committed.
    stock_after: int
    #: Each duplicate line and who holds its code, in line order.
    duplicates: tuple[Duplicate, ...] = ()


def is_plausible_code(code: str) -> bool:
    """A stripped, non-empty line that could be a code."""
    return len(code) <= MAX_CODE_LENGTH and not any(
        char.isspace() or unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in code
    )


@dataclass(frozen=True, slots=True)
class _Parsed:
    #: Distinct plausible codes, each with the line it first appears on.
    codes: dict[str, int]
    #: Lines repeating a code an earlier line has.
    repeated: list[int]
    rejected: int


def _parse(lines: Iterable[str]) -> _Parsed:
    """Distinct plausible codes in file order, lines repeated in the file, lines rejected."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    codes: dict[str, int] = {}
    repeated: list[int] = []
    rejected = 0
    for number, line in enumerate(lines, start=1):
        code = line.strip().lstrip("\ufeff").strip()
        if not code:
            continue
        if not is_plausible_code(code):
            rejected += 1
        elif code in codes:
            repeated.append(number)
        else:
            codes[code] = number
    return _Parsed(codes=codes, repeated=repeated, rejected=rejected)


def _batches(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), BATCH_SIZE):
        yield items[start : start + BATCH_SIZE]


async def count_available(session: AsyncSession, product_id: int) -> int:
    """Unsold, unreserved codes of a product, counted through `ix_codes_available`."""
    count = await session.scalar(
        select(func.count(Code.id)).where(
            Code.product_id == product_id, Code.order_id.is_(None), Code.reserved_by.is_(None)
        )
    )
    return count or 0


async def _holders(session: AsyncSession, by_digest: Mapping[str, str]) -> dict[str, str]:
    """Code → SKU of the product holding it, for the codes whose digests are stored."""
    rows = await session.execute(
        select(Code.digest, Product.sku)
        .join(Product, Product.id == Code.product_id)
        .where(Code.digest.in_(list(by_digest)))
    )
    return {by_digest[digest]: sku for digest, sku in rows}


class StockService:
    """Stocking codes (admin) and keeping them readable across key rotations."""

    def __init__(self, db: Database, vault: CodeVault, clock: Clock) -> None:
        self._db = db
        self._vault = vault
        self._clock = clock

    async def import_codes(self, sku: str, lines: Iterable[str]) -> ImportReport:
        """Add one code per line to a product's stock, in one transaction.

        A code is one thing that can be sold once, so a code already stored for any
        product (sold or not) is a duplicate, reported with the product that holds it.
        A code stored under any listed key counts, so an import after a key rotation
        still recognises the old codes. The shop-wide unique digest settles imports
        racing each other: a row another import got in first is skipped, never added
        twice. Rows go in ordered by digest so that concurrent imports take their index
        locks in the same order and cannot deadlock.
        """
        parsed = _parse(lines)
        codes = list(parsed.codes)
        digests = {code: self._vault.digests(code) for code in codes}
        codes.sort(key=lambda code: digests[code][0])
        now = self._clock.now()
        added = 0
        duplicates = [Duplicate(line=line, held_by=None) for line in parsed.repeated]
        async with self._db.transaction() as session:
            product_id = await session.scalar(select(Product.id).where(Product.sku == sku))
            if product_id is None:
                raise ShopError(ErrorCode.PRODUCT_NOT_FOUND, sku=sku)
            for batch in _batches(codes):
                by_digest = {digest: code for code in batch for digest in digests[code]}
                held = await _holders(session, by_digest)
                rows = [
                    {
                        "product_id": product_id,
                        "secret": self._vault.encrypt(code),
                        "digest": digests[code][0],
                        "added_at": now,
                    }
                    for code in batch
                    if code not in held
                ]
                lost: dict[str, str] = {}
                if rows:
                    inserted = await session.execute(
                        insert_ignoring_conflict(session, Code).returning(Code.digest), rows
                    )
                    landed = {row.digest for row in inserted}
                    added += len(landed)
                    lost = {
                        digests[code][0]: code
                        for code in batch
                        if code not in held and digests[code][0] not in landed
                    }
                    if lost:  # a concurrent import stored them first
                        held |= await _holders(session, lost)
                duplicates += [
                    Duplicate(line=parsed.codes[code], held_by=held.get(code))
                    for code in batch
                    if code in held or digests[code][0] in lost
                ]
            stock_after = await count_available(session, product_id)
        return ImportReport(
            added=added,
            duplicate=len(duplicates),
            rejected=parsed.rejected,
            stock_after=stock_after,
            duplicates=tuple(sorted(duplicates, key=lambda duplicate: duplicate.line)),
        )

    async def available(self, product_id: int) -> int:
        async with self._db.read() as session:
            return await count_available(session, product_id)

    async def rotate_keys(self) -> int:
        """Re-encrypt every code under the newest key and store its newest digest.

        Run after putting a new key first; once it returns, the old key can be dropped.
        Works in batches, each its own transaction, so the shop keeps selling meanwhile:
        lookups check every listed key's digest, so half-rotated stock still dedupes.
        Returns how many codes were rewritten (0 on a second run).
        """
        rewritten = 0
        last_id = 0
        while True:
            async with self._db.transaction() as session:
                result = await session.execute(
                    select(Code.id, Code.secret, Code.digest)
                    .where(Code.id > last_id)
                    .order_by(Code.id)
                    .limit(BATCH_SIZE)
                )
                rows = result.all()
                if not rows:
                    return rewritten
                changes = []
                for code_id, secret, digest in rows:
                    if digest.startswith(SOLD_TWICE_MARK):
                        # Its code's digest belongs to the first sale; only re-encrypt.
                        if not self._vault.is_current(secret):
                            rotated = self._vault.rotate(secret)
                            changes.append({"id": code_id, "secret": rotated, "digest": digest})
                        continue
                    newest = self._vault.digest(self._vault.decrypt(secret))
                    if newest != digest:
                        rotated = self._vault.rotate(secret)
                        changes.append({"id": code_id, "secret": rotated, "digest": newest})
                if changes:
                    await session.execute(update(Code), changes)
                rewritten += len(changes)
                last_id = rows[-1].id

"""The prepaid wallet: an append-only ledger and a balance that moves only with it.

Every change goes through `post_entry_on` (`run_on` from an async session), one
guarded `UPDATE ... RETURNING` plus one ledger insert in the caller's transaction, so
the balance can never go negative (the guard, backed by a CHECK constraint) and never
drifts from the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from core.db import table_of
from core.errors import ErrorCode, ShopError
from core.members import load_member
from core.models import Member, WalletEntry
from core.prepared import Prepared
from core.uow import Database

#: `topup_refund`: a top-up given back to its payer (a Stars refund), with its payment id.
#: `commission`: a referrer's share of a referred member's delivered order (its order id);
#: `commission_rev`: that share taken back when the order is refunded.
EntryKind = Literal[
    "topup",
    "purchase",
    "refund",
    "adjustment",
    "topup_refund",
    "commission",
    "commission_rev",
]

#: The largest single top-up or adjustment accepted (¥1,000,000), against typos.
MAX_SINGLE_AMOUNT = 100_000_000

# Built once: the hot path then skips building and cache-keying them on every call.
_members = table_of(Member).c
_MOVE = Prepared(
    update(table_of(Member))
    .where(_members.id == bindparam("member"), _members.balance + bindparam("amount") >= 0)
    .values(
        balance=_members.balance + bindparam("amount"),
        total_spent=_members.total_spent + bindparam("spend_delta"),
    )
    .returning(_members.balance)
)
_LEDGER = Prepared(insert(table_of(WalletEntry)))


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    member_id: int
    kind: str
    amount: int
    balance_after: int
    order_id: int | None
    payment_id: int | None
    reason: str
    actor: str
    created_at: datetime


def post_entry_on(
    conn: Connection,
    member_id: int,
    amount: int,
    *,
    kind: EntryKind,
    at: datetime,
    order_id: int | None = None,
    payment_id: int | None = None,
    reason: str = "",
    actor: str = "system",
    spend_delta: int = 0,
) -> int:
    """Move `amount` 分 (negative = debit) and record it; returns the new balance.

    `spend_delta` adjusts the member's lifetime spend in the same statement (purchases
    add, refunds subtract), which keeps the tier metric exact at no extra cost.
    """
    balance: int | None = _MOVE.scalar(
        conn, {"member": member_id, "amount": amount, "spend_delta": spend_delta}
    )
    if balance is None:
        current = conn.scalar(select(_members.balance).where(_members.id == member_id))
        if current is None:
            raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
        raise ShopError(
            ErrorCode.INSUFFICIENT_BALANCE,
            balance=current,
            required=-amount,
            missing=-amount - current,
        )
    _LEDGER.all(
        conn,
        {
            "member_id": member_id,
            "kind": kind,
            "amount": amount,
            "balance_after": balance,
            "order_id": order_id,
            "payment_id": payment_id,
            "reason": reason,
            "actor": actor,
            "created_at": at,
        },
    )
    return balance


class Wallet:
    """What a member reads of their wallet; money moves through `post_entry_on` in the
    transaction of what moves it (a purchase, a refund, an audited admin action)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def balance(self, member_id: int) -> int:
        async with self._db.read() as session:
            return (await load_member(session, member_id)).balance

    async def history(self, member_id: int, *, limit: int = 10) -> list[LedgerEntry]:
        """The newest ledger rows first."""
        async with self._db.read() as session:
            rows = await session.scalars(
                select(WalletEntry)
                .where(WalletEntry.member_id == member_id)
                .order_by(WalletEntry.id.desc())
                .limit(limit)
            )
            return [
                LedgerEntry(
                    id=row.id,
                    member_id=row.member_id,
                    kind=row.kind,
                    amount=row.amount,
                    balance_after=row.balance_after,
                    order_id=row.order_id,
                    payment_id=row.payment_id,
                    reason=row.reason,
                    actor=row.actor,
                    created_at=row.created_at,
                )
                for row in rows
            ]

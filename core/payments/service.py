"""Wallet top-ups: start one, take the provider's word that money came, credit it once.

Exactly once is held by the database, not by this code's checks alone: a provider's
charge id is unique per provider (`payments`), the ledger holds at most one `topup` row
per payment (a partial unique index), and a credit locks its payment row (SQLite lets
one writer in at a time) before it looks for the charge, so a replay waiting behind the
first credit finds it and hands back `created=False`. The credit, the payment's state
and the ledger row commit in one transaction.

Money a provider confirmed is never dropped: a top-up that expired unpaid is credited
when its money arrives late; a second, different charge for one top-up (an invoice paid
twice) is credited as a top-up of its own, its note naming the first; money that cannot
be credited automatically (a Stars amount that differs from the invoice) leaves the
payment `paid` with a note for an admin.

Locks are always taken payment row first, then the member row (the ledger's balance
update), the order every path here follows.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import Audit
from core.clock import Clock, local_day
from core.db import table_of
from core.errors import ErrorCode, ShopError
from core.ladder import TopUpRules
from core.models import Member, Payment, PaymentState
from core.payments.providers import Notification, Provider
from core.payments.stars import XTR, StarsProvider
from core.payments.views import (
    EPAY,
    STARS,
    BuyIntent,
    Checkout,
    Credit,
    ForgedNotificationError,
    PaymentView,
    PreCheckoutRefusal,
    ReconcileReport,
    StarsInvoice,
)
from core.uow import Database, run_on
from core.wallet import post_entry_on

log = logging.getLogger(__name__)

_payments = table_of(Payment)
_P = _payments.c
_M = table_of(Member).c

#: States whose money counts against the daily ceiling (pending ones while unexpired).
_HELD = (PaymentState.PAID.value, PaymentState.CREDITED.value, PaymentState.REFUNDING.value)
#: States a payment is credited from: unpaid so far, in time or late.
_CREDITABLE = (PaymentState.PENDING.value, PaymentState.EXPIRED.value)
#: Pending top-ups asked about per reconciliation run, oldest first.
RECONCILE_BATCH = 100
#: Providers asked at once by a reconciliation run (a slow gateway holds up no more).
QUERIES_AT_ONCE = 8
#: What asking a provider in `reconcile` came to, when it credited nothing.
_UNREACHABLE, _REFUSED, _NOTHING = "unreachable", "refused", "nothing"
#: The most top-ups `recent` lists at once.
MAX_LISTED = 500

_WITH_MEMBER = select(*_P, _M.telegram_id, _M.locale, _M.balance).join(
    table_of(Member), _M.id == _P.member_id
)

#: Decides whether money may be credited: a reason to hold it as `paid` instead, or
#: None; it may raise ForgedNotificationError to refuse it outright.
Check = Callable[[Any, Notification], str | None]
#: The bot's call to the provider that gives a payment's money back (refundStarPayment).
Refunder = Callable[[PaymentView], Awaitable[None]]


def new_reference() -> str:
    """Our id for a top-up at its provider: 96 random bits, letters and digits only
    (gateways differ on what an out_trade_no may hold)."""
    return "T" + secrets.token_hex(12)


def _view(row: Any) -> PaymentView:
    return PaymentView(
        id=row.id,
        reference=row.reference,
        member_id=row.member_id,
        provider=row.provider,
        method=row.method,
        amount=row.amount,
        charge_amount=row.charge_amount,
        charge_currency=row.charge_currency,
        state=PaymentState(row.state),
        provider_charge_id=row.provider_charge_id,
        then_buy=BuyIntent.from_json(row.then_buy),
        note=row.note,
        created_at=row.created_at,
        expires_at=row.expires_at,
        paid_at=row.paid_at,
        credited_at=row.credited_at,
        refunded_at=row.refunded_at,
    )


def _replay(row: Any) -> Credit:
    """A credit already made (or money held): the balance as it stands, moved by nothing."""
    return Credit(
        payment=_view(row),
        created=False,
        balance_before=row.balance,
        balance_after=row.balance,
        telegram_id=row.telegram_id,
        locale=row.locale,
    )


def _lock_on(conn: Connection, *where: Any) -> Any:
    """The payment row matching `where`, locked (PostgreSQL), with its member's columns."""
    return conn.execute(_WITH_MEMBER.where(*where).with_for_update(of=_payments)).one_or_none()


def _paid_on(
    conn: Connection,
    payment_id: int,
    notice: Notification,
    now: datetime,
    *,
    state: PaymentState,
    **values: Any,
) -> Any:
    """Record the provider's money on an unpaid (pending or expired) payment: `state`,
    the charge id and when it was paid, with `values`; returns the row as it is now."""
    return conn.execute(
        update(_payments)
        .where(_P.id == payment_id, _P.state.in_(_CREDITABLE))
        .values(state=state.value, provider_charge_id=notice.charge_id, paid_at=now, **values)
        .returning(*_P)
    ).one()


class Payments:
    """Top-ups through the configured providers (`core.shop.payment_providers`)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        zone: ZoneInfo,
        rules: TopUpRules,
        providers: Sequence[Provider],
        audit: Audit,
    ) -> None:
        self._db = db
        self._clock = clock
        self._zone = zone
        self.rules = rules
        self._providers = {provider.name: provider for provider in providers}
        self._by_method = {method: p for p in providers for method in p.methods}
        self._audit = audit

    def methods(self) -> tuple[str, ...]:
        """The methods a buyer may pick, in the order to show them (Stars first)."""
        return tuple(self._by_method)

    # --- starting a top-up ------------------------------------------------------------

    async def start(
        self, member_id: int, amount: int, method: str, *, then_buy: BuyIntent | None = None
    ) -> Checkout:
        """A pending top-up of `amount` 分 and how to pay it.

        The daily ceiling is counted under the member's row lock, so top-ups started at
        once cannot pass it together.
        """
        provider = self._by_method.get(method)
        if provider is None:
            raise ShopError(ErrorCode.PAYMENT_METHOD_UNAVAILABLE, method=method)
        rules = self.rules
        if not rules.min_amount <= amount <= rules.max_amount:
            raise ShopError(
                ErrorCode.TOPUP_AMOUNT_OUT_OF_RANGE,
                amount=amount,
                min=rules.min_amount,
                max=rules.max_amount,
            )
        charge = provider.charge(amount)
        now = self._clock.now()
        today = local_day(now, self._zone)
        day_start = datetime.combine(today, time.min, self._zone).astimezone(UTC)
        day_end = datetime.combine(today + timedelta(days=1), time.min, self._zone)
        values = {
            "reference": new_reference(),
            "member_id": member_id,
            "provider": provider.name,
            "method": method,
            "amount": amount,
            "charge_amount": charge.amount,
            "charge_currency": charge.currency,
            "state": PaymentState.PENDING.value,
            "then_buy": then_buy.as_json() if then_buy is not None else None,
            "note": "",
            "created_at": now,
            "expires_at": now + timedelta(minutes=rules.expiry_minutes),
        }

        def start_on(conn: Connection) -> PaymentView:
            found = conn.scalar(
                select(_M.id).where(_M.id == member_id).with_for_update(key_share=True)
            )
            if found is None:
                raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
            used = conn.scalar(
                select(func.coalesce(func.sum(_P.amount), 0)).where(
                    _P.member_id == member_id,
                    _P.created_at >= day_start,
                    _P.created_at < day_end.astimezone(UTC),
                    or_(
                        _P.state.in_(_HELD),
                        and_(_P.state == PaymentState.PENDING.value, _P.expires_at > now),
                    ),
                )
            )
            used = int(used or 0)
            if used + amount > rules.daily_max:
                raise ShopError(
                    ErrorCode.TOPUP_DAILY_LIMIT,
                    amount=amount,
                    left=max(rules.daily_max - used, 0),
                    max=rules.daily_max,
                )
            return _view(conn.execute(insert(_payments).values(values).returning(*_P)).one())

        payment = await self._db.run(start_on)
        made = provider.create(payment)
        if isinstance(made, StarsInvoice):
            return Checkout(payment, invoice=made, url=None)
        return Checkout(payment, invoice=None, url=made)

    # --- Telegram Stars ---------------------------------------------------------------

    async def pre_checkout(
        self, telegram_user_id: int, payload: str, currency: str, total_amount: int
    ) -> PreCheckoutRefusal | None:
        """Whether Telegram may take this Stars payment (None: yes), in one read.

        Telegram cancels the payment unless this is answered within 10 seconds.
        """
        if STARS not in self._providers:
            return PreCheckoutRefusal.UNAVAILABLE
        row = await self._db.run_read(
            lambda conn: conn.execute(
                _WITH_MEMBER.where(_P.reference == payload, _P.provider == STARS)
            ).one_or_none()
        )
        if row is None:
            return PreCheckoutRefusal.UNKNOWN
        if row.telegram_id != telegram_user_id:
            return PreCheckoutRefusal.NOT_YOURS
        state = PaymentState(row.state)
        now = self._clock.now()
        if state is PaymentState.EXPIRED or (
            state is PaymentState.PENDING and row.expires_at <= now
        ):
            return PreCheckoutRefusal.EXPIRED
        if state is not PaymentState.PENDING:
            return PreCheckoutRefusal.NOT_PENDING
        if currency != XTR or total_amount != row.charge_amount:
            return PreCheckoutRefusal.AMOUNT_MISMATCH
        return None

    async def credit_stars(
        self,
        telegram_user_id: int,
        payload: str,
        currency: str,
        total_amount: int,
        charge_id: str,
    ) -> Credit:
        """Credit a `successful_payment`, exactly once per `charge_id`.

        Telegram took the money already, so a payment that does not match what was
        invoiced (currency, Stars, payer) is kept `paid` with a note for an admin, not
        refused. A payload naming no Stars top-up raises PAYMENT_NOT_FOUND (logged).
        """
        notice = StarsProvider.verify(
            {
                "payload": payload,
                "currency": currency,
                "total_amount": str(total_amount),
                "charge_id": charge_id,
            }
        )

        def check(row: Any, notice: Notification) -> str | None:
            problems = []
            if notice.currency != XTR or notice.amount != row.charge_amount:
                problems.append(
                    f"paid {notice.amount} {notice.currency}, invoiced {row.charge_amount} {XTR}"
                )
            if row.telegram_id != telegram_user_id:
                problems.append(f"paid by Telegram user {telegram_user_id}, not the member")
            return "; ".join(problems) or None

        credit = await self._settle(STARS, notice, check)
        if credit is None:
            log.error(
                "Stars payment %s by %s for unknown payload %r: money taken, nothing credited",
                charge_id, telegram_user_id, payload,
            )  # fmt: skip
            raise ShopError(ErrorCode.PAYMENT_NOT_FOUND, payment=payload)
        return credit

    # --- 易支付 -------------------------------------------------------------------------

    async def credit_epay(self, params: Mapping[str, str]) -> Credit:
        """Credit a gateway notification, exactly once per order; a replay of one already
        credited returns `created=False` (answer `success` to both).

        Raises ForgedNotificationError, changing nothing, for a bad signature, another
        merchant, a state other than TRADE_SUCCESS, an unknown order or an amount other
        than the one asked (compared exactly, in 分).
        """
        try:
            provider = self._providers.get(EPAY)
            if provider is None:
                raise ForgedNotificationError("易支付 is not configured")
            notice = provider.verify(params)
            credit = await self._settle(EPAY, notice, _exactly)
            if credit is None:
                raise ForgedNotificationError(f"unknown order {notice.reference!r}")
        except ForgedNotificationError as refusal:
            shown = {k: v for k, v in params.items() if k != "sign"}
            log.warning("易支付 notification refused (%s): %s", refusal, shown)
            raise
        return credit

    # --- crediting (every provider) ---------------------------------------------------

    async def _settle(self, provider: str, notice: Notification, check: Check) -> Credit | None:
        """Record the money of `notice` once; None when its reference is unknown."""
        return await self._db.run(
            lambda conn: self._settle_on(conn, provider, notice, check, self._clock.now())
        )

    def _settle_on(
        self,
        conn: Connection,
        provider: str,
        notice: Notification,
        check: Check,
        now: datetime,
    ) -> Credit | None:
        row = _lock_on(conn, _P.reference == notice.reference, _P.provider == provider)
        if row is None:
            return None
        # Looked for only now, under the payment's lock: a concurrent credit of the same
        # charge has committed by the time this one gets the row.
        seen = conn.execute(
            _WITH_MEMBER.where(_P.provider == provider, _P.provider_charge_id == notice.charge_id)
        ).one_or_none()
        if seen is not None:
            return _replay(seen)
        hold = check(row, notice)
        if row.state not in _CREDITABLE:
            row = self._second_charge_on(conn, row, notice, now)
        if hold is not None:
            log.warning("payment %s: money came but is held: %s", row.reference, hold)
            held = _paid_on(conn, row.id, notice, now, state=PaymentState.PAID, note=hold)
            return replace(_replay(row), payment=_view(held))
        credited = _paid_on(conn, row.id, notice, now, state=PaymentState.CREDITED, credited_at=now)
        balance = post_entry_on(
            conn, row.member_id, row.amount, kind="topup", at=now, payment_id=row.id,
            reason=f"{provider} {notice.charge_id}", actor=f"payment:{provider}",
        )  # fmt: skip
        return Credit(
            payment=_view(credited),
            created=True,
            balance_before=balance - row.amount,
            balance_after=balance,
            telegram_id=row.telegram_id,
            locale=row.locale,
        )

    def _second_charge_on(
        self, conn: Connection, first: Any, notice: Notification, now: datetime
    ) -> Any:
        """A top-up of its own for money paid again for a top-up that already had its
        money (the same invoice paid twice): the member paid, so the wallet gets it."""
        log.warning(
            "payment %s (%s) paid again by %s: credited as a top-up of its own",
            first.reference, first.state, notice.charge_id,
        )  # fmt: skip
        payment_id = conn.scalar(
            insert(_payments)
            .values(
                reference=new_reference(),
                member_id=first.member_id,
                provider=first.provider,
                method=first.method,
                amount=first.amount,
                charge_amount=first.charge_amount,
                charge_currency=first.charge_currency,
                state=PaymentState.PENDING.value,
                note=f"paid again for {first.reference}",
                created_at=now,
                expires_at=now,
            )
            .returning(_P.id)
        )
        return conn.execute(_WITH_MEMBER.where(_P.id == payment_id)).one()

    # --- reading ----------------------------------------------------------------------

    async def get(self, reference: str) -> PaymentView | None:
        row = await self._db.run_read(
            lambda conn: conn.execute(select(*_P).where(_P.reference == reference)).one_or_none()
        )
        return None if row is None else _view(row)

    async def status(self, member_id: int, payment_id: int) -> PaymentView:
        """One of the member's own top-ups (someone else's reads as not found); a pending
        one past its time is expired on the way."""
        now = self._clock.now()

        row = await self._db.run_read(
            lambda conn: conn.execute(
                select(*_P).where(_P.id == payment_id, _P.member_id == member_id)
            ).one_or_none()
        )
        if row is None:
            raise ShopError(ErrorCode.PAYMENT_NOT_FOUND, payment=payment_id)
        if row.state != PaymentState.PENDING.value or row.expires_at > now:
            return _view(row)

        def expire_on(conn: Connection) -> Any:
            expired = conn.execute(
                update(_payments)
                .where(_P.id == payment_id, _P.state == PaymentState.PENDING.value)
                .values(state=PaymentState.EXPIRED.value)
                .returning(*_P)
            ).one_or_none()
            # None: credited by a notification in between; read it as it is now.
            return expired or conn.execute(select(*_P).where(_P.id == payment_id)).one()

        return _view(await self._db.run(expire_on))

    async def recent(
        self,
        *,
        limit: int = 20,
        state: PaymentState | None = None,
        member_id: int | None = None,
    ) -> list[PaymentView]:
        """The newest top-ups first, optionally in one state or of one member."""
        if not 1 <= limit <= MAX_LISTED:
            raise ShopError(ErrorCode.INVALID_INPUT, field="limit", max=MAX_LISTED)
        query = select(*_P).order_by(_P.id.desc()).limit(limit)
        if state is not None:
            query = query.where(_P.state == state.value)
        if member_id is not None:
            query = query.where(_P.member_id == member_id)
        rows = await self._db.run_read(lambda conn: conn.execute(query).all())
        return [_view(row) for row in rows]

    # --- refunds ----------------------------------------------------------------------

    async def refund(self, actor: str, payment_id: int, refunder: Refunder) -> PaymentView:
        """Give a credited top-up back to its payer: debit first, then the provider.

        The wallet is debited (`topup_refund`) and the payment marked `refunding` in one
        transaction, refused with INSUFFICIENT_BALANCE when the wallet no longer holds
        the amount, so money spent can never also be refunded. Then `refunder` asks the
        provider (the bot's refundStarPayment); if it raises, the debit is restored (an
        `adjustment` with the payment id) and PAYMENT_REFUND_REFUSED raised. Each step
        is audited in its own transaction.
        """
        target = f"payment:{payment_id}"
        async with self._db.transaction() as session:
            row = await run_on(session, _lock_on, _P.id == payment_id)
            if row is None:
                raise ShopError(ErrorCode.PAYMENT_NOT_FOUND, payment=payment_id)
            provider = self._providers.get(row.provider)
            if row.state != PaymentState.CREDITED.value or provider is None or not provider.refunds:
                raise ShopError(
                    ErrorCode.PAYMENT_NOT_REFUNDABLE, payment=payment_id, state=row.state
                )
            balance = await run_on(
                session, post_entry_on, row.member_id, -row.amount, kind="topup_refund",
                at=self._clock.now(), payment_id=payment_id, reason=f"refund {row.reference}",
                actor=actor,
            )  # fmt: skip
            refunding = await self._move(session, payment_id, PaymentState.CREDITED, {
                "state": PaymentState.REFUNDING.value,
            })  # fmt: skip
            assert refunding is not None  # the row is locked and was credited
            await self._audit.record(
                session, actor, "refund_payment", target,
                {"state": row.state, "balance": row.balance},
                {"state": refunding.state, "balance": balance, "amount": row.amount},
            )  # fmt: skip
        try:
            await refunder(refunding)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("refund of payment %s refused by the provider: %s", payment_id, reason)
            await self._restore(actor, refunding, reason)
            raise ShopError(
                ErrorCode.PAYMENT_REFUND_REFUSED, payment=payment_id, reason=reason
            ) from exc
        async with self._db.transaction() as session:
            done = await self._move(session, payment_id, PaymentState.REFUNDING, {
                "state": PaymentState.REFUNDED.value, "refunded_at": self._clock.now(),
            })  # fmt: skip
            # None: Telegram's refunded_payment got here first and marked it refunded.
            payment = done or await self._read(session, payment_id)
            await self._audit.record(
                session, actor, "refund_payment", target,
                {"state": PaymentState.REFUNDING.value}, {"state": payment.state},
            )  # fmt: skip
        return payment

    async def _restore(self, actor: str, refunding: PaymentView, reason: str) -> None:
        """Put a refused refund's money back, unless the provider refunded it after all."""
        async with self._db.transaction() as session:
            back = await self._move(session, refunding.id, PaymentState.REFUNDING, {
                "state": PaymentState.CREDITED.value, "note": f"refund refused: {reason}",
            })  # fmt: skip
            if back is None:
                return
            balance = await run_on(
                session, post_entry_on, refunding.member_id, refunding.amount,
                kind="adjustment", at=self._clock.now(), payment_id=refunding.id,
                reason=f"refund of {refunding.reference} refused: {reason}", actor=actor,
            )  # fmt: skip
            await self._audit.record(
                session, actor, "refund_payment", f"payment:{refunding.id}",
                {"state": PaymentState.REFUNDING.value},
                {"state": back.state, "balance": balance, "refused": reason},
            )  # fmt: skip

    async def refunded_by_provider(self, provider: str, charge_id: str) -> PaymentView | None:
        """The provider says it gave a payment back (Telegram's `refunded_payment`).

        One refunded through `refund` changes no further. One refunded elsewhere (an
        admin in Telegram, a dispute) is debited from the wallet as far as the balance
        goes, never below zero, the shortfall kept in the note. None: not our payment.
        """
        now = self._clock.now()
        async with self._db.transaction() as session:
            row = await run_on(
                session,
                _lock_on,
                _P.provider == provider,
                _P.provider_charge_id == charge_id,
            )
            if row is None:
                log.warning(
                    "%s refunded charge %s, which is no payment of ours", provider, charge_id
                )
                return None
            state = PaymentState(row.state)
            if state is PaymentState.REFUNDED:
                return _view(row)
            changes: dict[str, Any] = {"state": PaymentState.REFUNDED.value, "refunded_at": now}
            if state is PaymentState.CREDITED:
                balance = (
                    await session.execute(
                        select(_M.balance).where(_M.id == row.member_id).with_for_update()
                    )
                ).scalar_one()
                taken = min(row.amount, balance)
                if taken:
                    await run_on(
                        session, post_entry_on, row.member_id, -taken, kind="topup_refund",
                        at=now, payment_id=row.id, reason=f"refunded by {provider}",
                        actor=f"payment:{provider}",
                    )  # fmt: skip
                if taken < row.amount:
                    changes["note"] = (
                        f"refunded by {provider}: {row.amount - taken} 分 already spent"
                    )
            moved = await self._move(session, row.id, state, changes)
            assert moved is not None  # the row is locked
            return moved

    async def _move(
        self,
        session: AsyncSession,
        payment_id: int,
        state: PaymentState,
        changes: Mapping[str, Any],
    ) -> PaymentView | None:
        """Change a payment that is in `state`; None when it no longer is."""
        row = (
            await session.execute(
                update(_payments)
                .where(_P.id == payment_id, _P.state == state.value)
                .values(**changes)
                .returning(*_P)
            )
        ).one_or_none()
        return None if row is None else _view(row)

    async def _read(self, session: AsyncSession, payment_id: int) -> PaymentView:
        return _view((await session.execute(select(*_P).where(_P.id == payment_id))).one())

    # --- reconciliation (the `payments` job) ----------------------------------------------

    async def reconcile(self, *, batch: int = RECONCILE_BATCH) -> ReconcileReport:
        """Ask the providers about pending top-ups, credit the paid ones whose
        notification never came, then expire the ones past their time.

        The oldest `batch` pending top-ups are asked about, those due included (money may
        have come in the last minute). A failed query is logged and counted; the next run
        asks again. Credits go through the same path as a notification, so one that
        arrives at the same time is credited once.
        """
        now = self._clock.now()
        pending = await self._db.run_read(
            lambda conn: conn.execute(
                select(*_P)
                .where(
                    _P.state == PaymentState.PENDING.value,
                    _P.provider.in_(tuple(self._providers)),
                )
                .order_by(_P.id)
                .limit(batch)
            ).all()
        )
        room = asyncio.Semaphore(QUERIES_AT_ONCE)

        async def ask(payment: PaymentView) -> Credit | str:
            """The credit made, or UNREACHABLE, REFUSED (an answer not to trust) or NOTHING."""
            provider = self._providers[payment.provider]
            async with room:
                try:
                    notice = await provider.query(payment)
                except Exception:
                    log.exception("asking %s about payment %s failed", provider.name, payment.id)
                    return _UNREACHABLE
            if notice is None:
                return _NOTHING
            try:
                credit = await self._settle(provider.name, notice, _exactly)
            except ForgedNotificationError as refusal:
                log.error("%s answered for payment %s: %s", provider.name, payment.id, refusal)
                return _REFUSED
            # created=False: a notification credited it in the meantime.
            return credit if credit is not None and credit.created else _NOTHING

        outcomes = await asyncio.gather(*(ask(_view(row)) for row in pending))
        credits = [outcome for outcome in outcomes if isinstance(outcome, Credit)]
        unreachable = outcomes.count(_UNREACHABLE)
        refused = outcomes.count(_REFUSED)

        def expire_on(conn: Connection) -> int:
            expired = conn.execute(
                update(_payments)
                .where(_P.state == PaymentState.PENDING.value, _P.expires_at <= now)
                .values(state=PaymentState.EXPIRED.value)
                .returning(_P.id)
            )
            return len(expired.all())

        expired = await self._db.run(expire_on)
        return ReconcileReport(
            queried=len(pending) - unreachable,
            credits=tuple(credits),
            failed=unreachable + refused,
            expired=expired,
        )


def _exactly(row: Any, notice: Notification) -> str | None:
    """A gateway's money is credited only when it is exactly what was asked."""
    if notice.amount != row.charge_amount or notice.currency != row.charge_currency:
        raise ForgedNotificationError(
            f"money {notice.amount} {notice.currency} for an order of"
            f" {row.charge_amount} {row.charge_currency}"
        )
    return None

"""What the bot sends on its own, not in answer to an update: notices and broadcasts.

`TransportNotifier` is core's `Notifier` over a `Transport`: every scheduled-job event
becomes a message in its recipient's language (members in their own, the staff chat
in the shop's default, admins each in theirs). `Broadcaster` carries every running
broadcast to its end with core's `Broadcasts.run`, first resuming those a stop cut off,
and keeps its creator posted. `RiskWatch` tells the admins and the staff chat, once per
trip, about a member risk control has paused. `background` runs them next to the bot and
stops them with it, so nothing of a stopped bot keeps sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import assert_never

from bot.conversation import Button, CannotEditError, Transport, UnreachableError, escape
from bot.framework import STOP_GRACE_SECONDS
from bot.handlers.topup import tell
from bot.i18n import Translator
from bot.names import category_name, telegram_id_of
from core.broadcast import BroadcastReport, Broadcasts, SendFn, SendOutcome
from core.broadcast import Button as LinkButton
from core.jobs import (
    Downgraded,
    Event,
    Lane,
    LowStock,
    PointsExpiring,
    ReservationExpired,
    ReservationExpiring,
    TicketBreached,
    TicketSlaWarning,
    TierWarning,
    TopUpCredited,
)
from core.risk import ORDERS, RiskControl, Trip
from core.shop import Shop, build_jobs

log = logging.getLogger(__name__)

#: Seconds between two looks for broadcasts created since the last one.
BROADCAST_POLL = 1.0
#: Seconds at least between two edits of a broadcast's progress message.
PROGRESS_EVERY = 2.0
#: Seconds between two looks for members risk control has just paused.
RISK_POLL = 1.0
#: Seconds between two ticks of the scheduled jobs.
JOBS_TICK = 30.0


async def repeat(step: Callable[[], Awaitable[object]], every: float, stop: asyncio.Event) -> None:
    """`step()` every `every` seconds until `stop` is set.

    A failed step is logged and tried again at the next turn. Stopping waits for the step
    under way instead of cancelling it, so a shutdown never cuts a database call in half
    (SQLAlchemy logs a connection interrupted mid-rollback as an error).
    """
    while not stop.is_set():
        try:
            await step()
        except Exception:
            log.exception(
                "%s failed; tried again in %ss", getattr(step, "__qualname__", step), every
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def translator(shop: Shop, locale: str | None) -> Translator:
    settings = shop.settings
    return Translator(
        locale or settings.default_locale, currency=settings.shop_currency, zone=settings.zone
    )


async def translator_for(shop: Shop, telegram_id: int) -> Translator:
    """The language of whoever has this Telegram id (the default for a stranger)."""
    member = await shop.members.by_telegram(telegram_id)
    return translator(shop, member.locale if member else None)


# --- scheduled-job notices ---------------------------------------------------------------


class TransportNotifier:
    """Delivers `core.jobs` events; a member who blocked the bot is marked unreachable."""

    def __init__(self, shop: Shop, transport: Transport) -> None:
        self._shop = shop
        self._transport = transport

    def _tier(self, t: Translator, key: str) -> str:
        return escape(self._shop.ladder.tier(key).name(t.locale))

    async def notify(self, event: Event) -> None:
        match event:
            case TierWarning() | Downgraded() | PointsExpiring():
                t = translator(self._shop, event.locale)
                try:
                    await self._transport.send(event.telegram_id, self._member_text(t, event))
                except UnreachableError:
                    await self._shop.members.set_reachable(event.member_id, False)
            case TicketSlaWarning() | TicketBreached():
                chat_id = self._shop.settings.staff_chat_id
                if chat_id is None:
                    log.warning("no staff chat for the SLA notice on ticket %s", event.ticket.id)
                    return
                t = translator(self._shop, None)
                await self._transport.send(chat_id, self._staff_text(t, event))
            case LowStock():
                for admin_id in self._shop.settings.admin_ids:
                    t = await translator_for(self._shop, admin_id)
                    product = event.product
                    text = t.ngettext(
                        "📉 Low stock: <b>{name}</b> ({sku}) has {stock} code left"
                        " (restock below {threshold}).",
                        "📉 Low stock: <b>{name}</b> ({sku}) has {stock} codes left"
                        " (restock below {threshold}).",
                        product.stock,
                    ).format(
                        name=escape(product.name(t.locale)),
                        sku=escape(product.sku),
                        stock=t.number(product.stock),
                        threshold=t.number(product.low_stock_threshold),
                    )
                    try:
                        await self._transport.send(admin_id, text)
                    except UnreachableError:
                        log.warning("admin %s has blocked the bot", admin_id)
            case TopUpCredited():
                # Told as money landing from a notification is: the same words, and a
                # buy-in-one-step order placed.
                await tell(self._shop, self._transport, event.credit)
            case ReservationExpiring() | ReservationExpired():
                await self._reservation_notice(event)
            case _:
                assert_never(event)

    async def _reservation_notice(self, event: ReservationExpiring | ReservationExpired) -> None:
        """Tell the holder their reservation ends soon, or has ended."""
        hold = event.reservation
        if hold.telegram_id is None:
            return
        t = translator(self._shop, hold.locale)
        name = escape(hold.product_name(t.locale))
        if isinstance(event, ReservationExpiring):
            text = t.ngettext(
                "⏳ Your reservation of {count} code of <b>{name}</b> ends at {time}."
                " Buy it before then, or it goes back on sale.",
                "⏳ Your reservation of {count} codes of <b>{name}</b> ends at {time}."
                " Buy them before then, or they go back on sale.",
                hold.remaining,
            ).format(count=t.number(hold.remaining), name=name, time=t.datetime(hold.expires_at))
        elif event.released:
            text = t.ngettext(
                "Your reservation of <b>{name}</b> has ended: {count} unbought code went"
                " back on sale.",
                "Your reservation of <b>{name}</b> has ended: {count} unbought codes went"
                " back on sale.",
                event.released,
            ).format(count=t.number(event.released), name=name)
        else:
            return
        try:
            await self._transport.send(hold.telegram_id, text)
        except UnreachableError:
            await self._shop.members.set_reachable(hold.member_id, False)

    def _member_text(self, t: Translator, event: TierWarning | Downgraded | PointsExpiring) -> str:
        match event:
            case TierWarning(protected_until=until) if until is not None:
                return t._(
                    "⚠️ Last quarter ({quarter}) did not meet what your {tier} level needs."
                    " You keep it until {date}; meet its rule by then to stay."
                    " Send /level to see what is left."
                ).format(
                    quarter=t.quarter(event.quarter),
                    tier=self._tier(t, event.tier),
                    date=t.datetime(until),
                )
            case TierWarning():
                return t._(
                    "⚠️ Last quarter ({quarter}) did not meet what your {tier} level needs."
                    " Meet it this quarter to keep your level. Send /level to see what is left."
                ).format(quarter=t.quarter(event.quarter), tier=self._tier(t, event.tier))
            case Downgraded():
                return t._(
                    "After the review of {quarter}, your level has moved from {from_tier} to"
                    " {to_tier}. Send /level to see how to climb back."
                ).format(
                    to_tier=self._tier(t, event.to_tier),
                    from_tier=self._tier(t, event.from_tier),
                    quarter=t.quarter(event.quarter),
                )
            case PointsExpiring():
                return t.ngettext(
                    "⏳ You have {points} point expiring on {date}."
                    " Use it at checkout before then!",
                    "⏳ You have {points} points expiring on {date}."
                    " Use them at checkout before then!",
                    event.amount,
                ).format(points=t.number(event.amount), date=t.datetime(event.expires_at))

    def _staff_text(self, t: Translator, event: TicketSlaWarning | TicketBreached) -> str:
        ticket = event.ticket
        if isinstance(event, TicketBreached):
            text = t._("🚨 Ticket #{id} ({category}) missed its first-response deadline {time}.")
        else:
            text = t._("⏰ Ticket #{id} ({category}) must be answered by {time}.")
        return text.format(
            id=ticket.id,
            category=category_name(t, ticket.category),
            time=t.datetime(ticket.first_response_due),
        )


# --- risk control ------------------------------------------------------------------------


def trip_text(t: Translator, trip: Trip) -> str:
    """The staff notice for a member who ran into a risk limit (seed 003: 风控)."""
    window = t.ngettext("{seconds} second", "{seconds} seconds", trip.window_seconds).format(
        seconds=t.number(trip.window_seconds)
    )
    if trip.limit == ORDERS:
        what = t.ngettext(
            "placed {count} order within {window}",
            "placed {count} orders within {window}",
            trip.allowed,
        )
    else:
        what = t.ngettext(
            "had {count} purchase refused within {window}",
            "had {count} purchases refused within {window}",
            trip.allowed,
        )
    member = escape(trip.display_name or "—")
    if trip.username:
        member += f" (@{escape(trip.username)})"
    return t._(
        "🛡 <b>Risk control</b>: {member}, Telegram id <code>{telegram_id}</code>, {what}."
        " Their purchases are paused until {time}."
    ).format(
        member=member,
        telegram_id=trip.telegram_id if trip.telegram_id is not None else "—",
        what=what.format(count=t.number(trip.allowed), window=window),
        time=t.datetime(trip.retry_at),
    )


class RiskWatch:
    """Tells the admins (each in their language) and the staff chat about each trip once.

    Trips are recorded by the purchase that ran into a limit, on whichever worker; this
    claims them from the database, so one notice goes out per trip whatever the number
    of workers, and none is lost to a restart before it was claimed.
    """

    def __init__(self, shop: Shop, transport: Transport) -> None:
        self._shop = shop
        self._risk = RiskControl(shop.db, shop.ladder.risk, shop.clock)
        self._transport = transport

    async def tell_new_trips(self) -> None:
        """Claim the trips nobody has told about yet and tell about each."""
        for trip in await self._risk.claim_trips():
            await self._tell(trip)

    async def _tell(self, trip: Trip) -> None:
        settings = self._shop.settings
        recipients = [
            (admin_id, await translator_for(self._shop, admin_id))
            for admin_id in settings.admin_ids
        ]
        if settings.staff_chat_id is not None:
            recipients.append((settings.staff_chat_id, translator(self._shop, None)))
        if not recipients:
            log.warning("no admin or staff chat to tell about risk trip %s", trip.id)
        for chat_id, t in recipients:
            try:
                await self._transport.send(chat_id, trip_text(t, trip))
            except Exception:
                log.exception("could not tell %s about risk trip %s", chat_id, trip.id)


# --- broadcasts --------------------------------------------------------------------------


def broadcast_sender(transport: Transport) -> SendFn:
    """Core's send function over the transport: 403 is blocked.

    A 429 never gets here: the transport waits it out (`bot.flood`), the one place
    that does, so the broadcaster does not retry on top of it.
    """

    async def send(
        telegram_id: int, _locale: str | None, text: str, button: LinkButton | None
    ) -> SendOutcome:
        keyboard = [[Button(button.text, url=button.url)]] if button is not None else None
        try:
            await transport.send(telegram_id, escape(text), keyboard)
        except UnreachableError:
            return SendOutcome.blocked()
        return SendOutcome.sent()

    return send


@dataclass
class _Shown:
    """A broadcast's progress message in its creator's chat."""

    chat_id: int
    message_id: int
    at: float


def progress_text(t: Translator, report: BroadcastReport) -> str:
    if report.pending == 0:
        return t._(
            "📣 <b>Broadcast #{id} finished</b>\n"
            "Sent: {sent}\nBlocked the bot: {blocked}\nFailed: {failed}\nAudience: {total}"
        ).format(
            id=report.broadcast_id,
            sent=t.number(report.sent),
            blocked=t.number(report.blocked),
            failed=t.number(report.failed),
            total=t.number(report.total),
        )
    return t._(
        "📣 <b>Broadcast #{id}</b> is sending… {done} / {total}\n"
        "Sent: {sent} · blocked: {blocked} · failed: {failed}"
    ).format(
        id=report.broadcast_id,
        done=t.number(report.done),
        total=t.number(report.total),
        sent=t.number(report.sent),
        blocked=t.number(report.blocked),
        failed=t.number(report.failed),
    )


class Broadcaster:
    """Runs every running broadcast to its end, one after another, at the shared pace.

    The audience lives in the database, so this needs no word from the handler that
    created a broadcast: `serve_new` is run every `BROADCAST_POLL` seconds. Its creator
    gets a progress message, edited at most every `PROGRESS_EVERY` seconds, and the
    final counts.
    """

    def __init__(
        self,
        shop: Shop,
        broadcasts: Broadcasts,
        transport: Transport,
        stop: asyncio.Event,
    ) -> None:
        self._shop = shop
        self._broadcasts = broadcasts
        self._transport = transport
        self._stop = stop
        self._send = broadcast_sender(transport)
        self._shown: dict[int, _Shown] = {}

    async def resume(self) -> None:
        """Finish what a stop cut off."""
        await self._broadcasts.resume_unfinished(
            self._send, progress=self._progress, stop=self._stop
        )

    async def serve_new(self) -> None:
        """Run every broadcast still unfinished (new ones, or one a failure interrupted)."""
        for broadcast_id in await self._broadcasts.unfinished():
            await self._broadcasts.run(
                broadcast_id, self._send, progress=self._progress, stop=self._stop
            )

    async def _progress(self, report: BroadcastReport) -> None:
        """Post or update the creator's progress message; never stops the broadcast."""
        chat_id = telegram_id_of(report.created_by)
        if chat_id is None:
            return
        now = asyncio.get_running_loop().time()
        shown = self._shown.get(report.broadcast_id)
        final = report.pending == 0
        if shown is not None and not final and now - shown.at < PROGRESS_EVERY:
            return
        text = progress_text(await translator_for(self._shop, chat_id), report)
        try:
            if shown is not None:
                try:
                    await self._transport.edit(chat_id, shown.message_id, text)
                    shown.at = now
                except CannotEditError:
                    shown = None
            if shown is None:
                message_id = await self._transport.send(chat_id, text)
                self._shown[report.broadcast_id] = _Shown(chat_id, message_id, now)
        except Exception:
            log.exception("could not report broadcast %s to %s", report.broadcast_id, chat_id)
        if final:
            self._shown.pop(report.broadcast_id, None)


@contextlib.asynccontextmanager
async def background(shop: Shop, transport: Transport) -> AsyncIterator[None]:
    """Scheduled jobs (a loop per `Lane`), broadcasts and risk notices next to the bot.

    At the end each finishes the step it is in (a broadcast stops between two deliveries
    and resumes at the next start); what is still busy after `STOP_GRACE_SECONDS` is
    cancelled.
    """
    stop = asyncio.Event()
    jobs = build_jobs(shop, TransportNotifier(shop, transport))
    broadcaster = Broadcaster(shop, shop.operations.broadcasts, transport, stop)
    risk = RiskWatch(shop, transport)

    async def broadcasts() -> None:
        try:
            await broadcaster.resume()
        except Exception:
            log.exception("resuming broadcasts failed")
        await repeat(broadcaster.serve_new, BROADCAST_POLL, stop)

    tasks = [
        asyncio.create_task(
            repeat(functools.partial(jobs.run_due, lane=lane), JOBS_TICK, stop),
            name=f"jobs-{lane}",
        )
        for lane in Lane
    ]
    tasks += [
        asyncio.create_task(broadcasts(), name="broadcasts"),
        asyncio.create_task(repeat(risk.tell_new_trips, RISK_POLL, stop), name="risk"),
    ]
    try:
        yield
    finally:
        stop.set()
        _, late = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""The bot's one HTTP server: Telegram's webhook, the payment gateways' callbacks and
the reseller API.

`cardshop run` builds one `HttpServer` for HTTP_LISTEN; the Telegram adapter adds its
webhook to it when WEBHOOK_URL is set, `bot.app` adds the 易支付 routes when 易支付 is
configured and the reseller API (`bot.api`) unless API_ENABLED is off, and it listens
only when some route needs it. Everything that answers
after the request (an update from the webhook, telling a member their money landed)
runs as a task of its own, and stopping gives those tasks and the requests in progress
`STOP_GRACE_SECONDS` together, as the adapters do for their updates.

What the outside sends is untrusted: a webhook call without the secret is a 403, a body
that is no update a 400; an 易支付 notify that is forged, tampered with or unknown
credits nothing and is a 400 (`fail`), logged in one line, never with a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from bot.api import ResellerApi
from bot.framework import STOP_GRACE_SECONDS
from bot.i18n import Translator
from bot.incoming import BadUpdateError, update_json
from core.config import EPAY_NOTIFY_PATH, EPAY_RETURN_PATH, Settings, SettingsError
from core.members import locale_for
from core.payments import Credit, ForgedNotificationError, Payments

log = logging.getLogger(__name__)

U = TypeVar("U")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: What 易支付 must read to stop calling back, exactly; anything else makes it retry.
EPAY_ACK = "success"
EPAY_REFUSED = "fail"

#: Told a credit that has just landed (not a replay): the member hears of it there.
Landed = Callable[[Credit], Awaitable[None]]


def listen_address(settings: Settings) -> tuple[str, int]:
    """HTTP_LISTEN as (host, port)."""
    host, _, port = settings.http_listen.rpartition(":")
    if not host or not port.isdigit():
        raise SettingsError("HTTP_LISTEN: use host:port, e.g. 127.0.0.1:8080")
    return host, int(port)


class HttpServer:
    """The routes of this process's HTTP server, and the server while it runs.

    Routes are added before `serving`; a server with none does not listen at all.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app = web.Application()
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def needed(self) -> bool:
        return bool(self._app.router.routes())

    def later(self, what: str, work: Awaitable[object]) -> None:
        """Run `work` after the answer, in a task stopping waits for; its failure logged."""

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.create_task(run())
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    # --- Telegram's webhook ---------------------------------------------------------------

    def add_webhook(
        self,
        parse: Callable[[dict[str, Any]], U],
        accept: Callable[[U], Awaitable[object]],
        *,
        answer_after: bool = False,
    ) -> str:
        """Receive updates at WEBHOOK_URL's path; returns the secret to give setWebhook.

        A call without the secret is a 403; a body that is no update (not JSON, or a shape
        `parse`, the framework's reading, trips over) a 400, logged in one line; anything
        else a 200 at once, `accept` handling it in a task of its own. With
        `answer_after` (the ingress, `bot.workers`) the 200 waits for `accept`, and its
        failure is a 503, so Telegram sends the update again.
        """
        settings = self._settings
        assert settings.webhook_url is not None
        if settings.webhook_secret is None:
            raise SettingsError("WEBHOOK_SECRET: required when WEBHOOK_URL is set")
        secret = settings.webhook_secret.get_secret_value()

        async def receive(request: web.Request) -> web.Response:
            given = request.headers.get(SECRET_HEADER, "").encode()
            if not hmac.compare_digest(given, secret.encode()):
                return web.Response(status=403, text="Forbidden")
            try:
                update = parse(update_json(await request.read()))
            except BadUpdateError as exc:
                reason = str(exc)
            except Exception as exc:  # the framework raises whatever a wrong shape trips over
                reason = f"not an update: {type(exc).__name__}"
            else:
                if not answer_after:
                    self.later("webhook: an update", accept(update))
                    return web.Response(text="ok")
                try:
                    await accept(update)
                except Exception:
                    log.exception("webhook: an update not taken; Telegram sends it again")
                    return web.Response(status=503, text="Service Unavailable")
                return web.Response(text="ok")
            log.warning("webhook: refused a body (%s)", reason)
            return web.Response(status=400, text="Bad Request")

        self._app.router.add_post(urlsplit(settings.webhook_url).path or "/", receive)
        return secret

    # --- 易支付 ---------------------------------------------------------------------------

    def add_epay(self, payments: Payments, landed: Landed | None) -> None:
        """The notify route (credit exactly once, answer `success`) and the return page."""

        async def notify(request: web.Request) -> web.Response:
            params = notify_params([*request.query.items(), *(await request.post()).items()])
            if params is None:
                log.warning("epay notify refused: a parameter given twice or as a file")
                return web.Response(status=400, text=EPAY_REFUSED)
            try:
                credit = await payments.credit_epay(params)
            except ForgedNotificationError as exc:
                log.warning(
                    "epay notify refused (%s): out_trade_no=%r from %s",
                    exc,
                    params.get("out_trade_no"),
                    request.remote,
                )
                return web.Response(status=400, text=EPAY_REFUSED)
            except Exception:
                # Not the gateway's fault (the database is away, say): not `success`, so
                # it calls again, and the payments job asks it meanwhile.
                log.exception("epay notify for %r not credited now", params.get("out_trade_no"))
                return web.Response(status=500, text=EPAY_REFUSED)
            payment = credit.payment
            if not credit.created:
                log.info("epay notify for payment %s again: credited before", payment.id)
            else:
                log.info(
                    "epay: payment %s credited %s to member %s",
                    payment.id,
                    payment.amount,
                    payment.member_id,
                )
                if landed is not None:
                    self.later(f"telling of payment {payment.id}", landed(credit))
            return web.Response(text=EPAY_ACK)

        async def returned(request: web.Request) -> web.Response:
            return web.Response(
                text=return_page(self._translator(request)), content_type="text/html"
            )

        self._app.router.add_route("GET", EPAY_NOTIFY_PATH, notify)
        self._app.router.add_route("POST", EPAY_NOTIFY_PATH, notify)
        self._app.router.add_get(EPAY_RETURN_PATH, returned)

    def _translator(self, request: web.Request) -> Translator:
        """The buyer's browser's first language, else the shop's."""
        settings = self._settings
        first = request.headers.get("Accept-Language", "").split(",")[0].split(";")[0].strip()
        locale = locale_for(first) if first else settings.default_locale
        return Translator(locale, currency=settings.shop_currency, zone=settings.zone)

    # --- the reseller API ----------------------------------------------------------------

    def add_api(self, api: ResellerApi) -> None:
        """The reseller API under /api/v1/ (`bot.api`): signed JSON, its document, its docs."""
        api.mount(self._app.router)

    # --- running ----------------------------------------------------------------------------

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Listen on HTTP_LISTEN while the block runs, if any route needs it.

        Stopping, the listener closes first; then the requests in progress and the work
        they left (`later`) get `STOP_GRACE_SECONDS`, together.
        """
        if not self.needed:
            yield
            return
        host, port = listen_address(self._settings)
        runner = web.AppRunner(self._app, shutdown_timeout=STOP_GRACE_SECONDS)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:  # taken, or not an address of this machine
                raise SettingsError(f"HTTP_LISTEN {host}:{port}: {exc.strerror}") from exc
            log.info("HTTP listening on %s:%s", host, port)
            yield
        finally:
            waits: list[Awaitable[object]] = [runner.cleanup()]
            if self._in_flight:
                waits.append(asyncio.wait(set(self._in_flight), timeout=STOP_GRACE_SECONDS))
            await asyncio.gather(*waits)


def notify_params(pairs: Iterable[tuple[str, object]]) -> dict[str, str] | None:
    """A notify's parameters, from the query string and a form body alike.

    Gateways call back by GET or POST; either way each parameter counts once, and one
    given twice with different values (or as a file) is refused (None) rather than one
    picked.
    """
    params: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(value, str) or params.setdefault(key, value) != value:
            return None
    return params


def return_page(t: Translator) -> str:
    """Where the gateway sends the buyer after paying: back to the bot."""
    title = t._("Payment sent")
    body = t._(
        "Thank you. Go back to the bot: it tells you as soon as the money is in your wallet."
    )
    return (
        f'<!doctype html><html lang="{t.locale.replace("_", "-")}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{body}</p></body></html>"
    )

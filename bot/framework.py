"""The per-update work every adapter shares, so all of them behave the same.

An adapter turns its framework's update into an `Incoming` and hands it to
`Runtime.handle`, its one entry: the runtime de-duplicates, registers the member,
loads their language and conversation state (`begin`) under the chat's lock, and
routes (`dispatch`) to one of its entry points. Those decide everything that must not
differ between adapters: a command abandons pending input, callback data is validated,
a shop refusal is explained, a crash is logged and apologised for, state is saved only
after success, and every callback query is answered exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import replace
from typing import Any, Literal, TypeVar

from redis.asyncio import Redis

from bot.callbacks import BadCallbackError, Callback
from bot.conversation import (
    Button,
    CallbackSpec,
    ChatState,
    CommandSpec,
    Context,
    Conversation,
    Document,
    Handler,
    Incoming,
    Keyboard,
    PaymentKind,
    StaffReplyHandler,
    Transport,
    UnreachableError,
)
from bot.errors import bad_button, render_error, something_went_wrong
from bot.flood import FloodControl
from bot.i18n import Translator
from bot.payments import pre_checkout_refusal
from bot.state import ChatStore, state_key
from core.chat_state import AlreadyHandledError, ChatStateView, UpdateWrites
from core.errors import ShopError
from core.members import MemberView, locale_for, profile_changes
from core.payments import PreCheckoutRefusal
from core.shop import Shop

log = logging.getLogger(__name__)

#: Name under which update ids are de-duplicated: one bot, whichever adapter runs it.
UPDATE_SOURCE = "telegram"
#: How long a stopping bot lets the updates it has taken finish: under the 10 s Docker
#: allows between SIGTERM and SIGKILL.
STOP_GRACE_SECONDS = 8.0

K = TypeVar("K", bound=str)
V = TypeVar("V")

#: What the member is told when the runtime reads no further (see `Runtime.dispatch`),
#: each said by the handler a conversation registers with `Conversation.notice`.
Notice = Literal["edited", "media", "group_command"]


class Registry:
    """Every conversation's handlers, indexed; a clash is an error at start, not a surprise."""

    def __init__(self, conversations: Sequence[Conversation]) -> None:
        self.conversations = tuple(conversations)
        self.commands: dict[str, CommandSpec] = {}
        self.callbacks: dict[str, CallbackSpec] = {}
        self.states: dict[str, Handler] = {}
        self.menus: dict[str, Handler] = {}
        self.staff_replies: list[StaffReplyHandler] = []
        self.notices: dict[Notice, Handler] = {}
        self.payments: dict[PaymentKind, Handler] = {}
        self.fallback: Handler | None = None
        for conversation in self.conversations:
            for spec in conversation.commands:
                for name in spec.names:
                    self._claim(self.commands, name, spec, conversation, "command")
            for callback in conversation.callbacks:
                prefix = callback.data_type.prefix
                self._claim(self.callbacks, prefix, callback, conversation, "callback")
            for name, handler in conversation.states.items():
                self._claim(self.states, name, handler, conversation, "state")
            for item, handler in conversation.menus.items():
                self._claim(self.menus, item, handler, conversation, "menu item")
            for notice, handler in conversation.notices.items():
                self._claim(self.notices, notice, handler, conversation, "notice")
            for kind, handler in conversation.payments.items():
                self._claim(self.payments, kind, handler, conversation, "payment")
            self.staff_replies.extend(conversation.staff_replies)
            if conversation.fallback_handler is not None:
                if self.fallback is not None:
                    raise ValueError(f"{conversation.name}: a second fallback handler")
                self.fallback = conversation.fallback_handler

    @staticmethod
    def _claim(table: dict[K, V], key: K, value: V, conversation: Conversation, what: str) -> None:
        if key in table:
            raise ValueError(f"{conversation.name}: {what} {key!r} is registered twice")
        table[key] = value

    def command_menu(self, t: Translator) -> list[tuple[str, str]]:
        """(command, description) pairs for Telegram's menu, in registration order."""
        menu: list[tuple[str, str]] = []
        for conversation in self.conversations:
            for spec in conversation.commands:
                if spec.description is not None:
                    menu.append((spec.names[0], t._(spec.description)))
        return menu


class ChatLocks:
    """One update at a time per chat in this process, so a member's steps stay in order."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, chat_id: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(chat_id, (asyncio.Lock(), 0))
        self._locks[chat_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[chat_id]
            if users == 1:
                del self._locks[chat_id]
            else:
                self._locks[chat_id] = (lock, users - 1)


#: Messages whose last drawing is remembered; the oldest are forgotten first.
SHOWN_CAPACITY = 10_000

Drawing = tuple[str, tuple[tuple[Button, ...], ...] | None]


def drawing(text: str, keyboard: Keyboard | None) -> Drawing:
    """What a message shows, comparable: its text and its buttons (none and empty alike)."""
    rows = tuple(tuple(row) for row in keyboard or ())
    return text, rows or None


class ShownMessages:
    """What this process last drew in each message it sent or edited, the newest kept.

    Telegram refuses an edit that changes nothing with 400 "message is not modified";
    knowing what is shown lets the bot not send it. Only this process's drawings are
    known, so workers fed from Redis (`bot.workers`), between which a chat moves when a
    partition changes hands, keep none (capacity 0): an older drawing remembered here
    could skip an edit another worker made necessary.
    """

    def __init__(self, capacity: int = SHOWN_CAPACITY) -> None:
        self._capacity = capacity
        self._shown: OrderedDict[tuple[int, int], Drawing] = OrderedDict()

    def shows(self, chat_id: int, message_id: int, drawn: Drawing) -> bool:
        return self._shown.get((chat_id, message_id)) == drawn

    def remember(self, chat_id: int, message_id: int, drawn: Drawing) -> None:
        key = (chat_id, message_id)
        self._shown[key] = drawn
        self._shown.move_to_end(key)
        if len(self._shown) > self._capacity:
            self._shown.popitem(last=False)

    def forget(self, chat_id: int, message_id: int) -> None:
        self._shown.pop((chat_id, message_id), None)

    def over(self, transport: Transport) -> Transport:
        """`transport` with every text message it draws remembered, unchanged edits skipped."""
        return _SkipUnchanged(transport, self)


class _SkipUnchanged:
    """A `Transport` that does not send an edit whose text and keyboard are already shown."""

    def __init__(self, inner: Transport, shown: ShownMessages) -> None:
        self._inner = inner
        self._shown = shown

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        message_id = await self._inner.send(chat_id, text, keyboard)
        self._shown.remember(chat_id, message_id, drawing(text, keyboard))
        return message_id

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        drawn = drawing(text, keyboard)
        if self._shown.shows(chat_id, message_id, drawn):
            return
        try:
            await self._inner.edit(chat_id, message_id, text, keyboard)
        except Exception:
            self._shown.forget(chat_id, message_id)
            raise
        self._shown.remember(chat_id, message_id, drawn)

    async def copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        return await self._inner.copy(from_chat_id, message_id, to_chat_id)

    async def answer_callback(
        self, callback_id: str, text: str | None = None, alert: bool = False
    ) -> None:
        await self._inner.answer_callback(callback_id, text, alert)

    async def send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None = None
    ) -> int:
        return await self._inner.send_document(chat_id, filename, data, caption)

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> int:
        return await self._inner.send_photo(chat_id, data, caption)

    async def download(self, document: Document) -> bytes:
        return await self._inner.download(document)

    async def send_invoice(
        self, chat_id: int, title: str, description: str, payload: str, stars: int
    ) -> int:
        return await self._inner.send_invoice(chat_id, title, description, payload, stars)

    async def answer_pre_checkout(self, query_id: str, ok: bool, error: str | None = None) -> None:
        await self._inner.answer_pre_checkout(query_id, ok, error)

    async def refund_star_payment(self, user_id: int, charge_id: str) -> None:
        await self._inner.refund_star_payment(user_id, charge_id)


#: Update ids this process remembers having taken, so a redelivery that reaches the same
#: process (while the first is still being handled, even) costs no database read.
RECENT_UPDATES = 10_000


class RecentUpdates:
    """The update ids this process took most recently, the newest kept."""

    def __init__(self, capacity: int = RECENT_UPDATES) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[int, None] = OrderedDict()

    def take(self, update_id: int) -> bool:
        """Remember `update_id`; False when it was already taken here."""
        if update_id in self._ids:
            return False
        self._ids[update_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def forget(self, update_id: int) -> None:
        self._ids.pop(update_id, None)


class Runtime:
    def __init__(
        self, shop: Shop, registry: Registry, store: ChatStore, redis: Redis | None = None
    ) -> None:
        self.shop = shop
        self.registry = registry
        #: The shop's Redis when REDIS_URL is set: shared state across workers (the API's
        #: rate limits and nonces); None keeps it in the database or this process.
        self.redis = redis
        #: Chat state and handled update ids (database or Redis), read once per update.
        self.store = store
        self.recent = RecentUpdates()
        self.locks = ChatLocks()
        #: The one pace and 429 handling for every client of this process (see bot.flood).
        self.flood = FloodControl()
        #: What each message shows, so an edit that changes nothing is not sent.
        self.shown = ShownMessages()
        self.staff_chat_id = shop.settings.staff_chat_id

    def translator(self, locale: str) -> Translator:
        settings = self.shop.settings
        return Translator(locale, currency=settings.shop_currency, zone=settings.zone)

    def locale(self, chosen: str | None, language_code: str | None) -> str:
        """The member's own choice, else their Telegram app's language, else the shop's."""
        if chosen:
            return chosen
        if language_code:
            return locale_for(language_code)
        return self.shop.settings.default_locale

    # --- per update ---------------------------------------------------------------------
    #
    # A known member's update costs one read on arrival (`ChatStore.arrive`: member,
    # state, whether the id was handled) and at most one write besides its own effect
    # (the claim, a changed name or reachable flag, a changed state), which rides in the
    # handler's first write transaction when there is one (see core.chat_state) and is
    # otherwise written when the handler is done. A new member's registration is the
    # one write on arrival, and the claim rides in it.

    async def begin(self, incoming: Incoming, transport: Transport) -> Context | None:
        """Read the member and their state, register a new one; None: skip the update.

        Skipped are redeliveries and updates the shop could not prepare (its database
        is down, say); the latter are logged, and a tapped button still gets an answer.
        """
        update_id = incoming.update_id
        if update_id is not None and not self.recent.take(update_id):
            log.info("update %s taken before in this process; skipped", update_id)
            return None
        try:
            ctx = await self._begin(incoming, transport)
        except AlreadyHandledError:
            ctx = None
        except Exception:
            log.exception("could not prepare update %s", update_id)
            if update_id is not None:
                self.recent.forget(update_id)
            if incoming.callback_id is not None:
                t = self.translator(locale_for(incoming.language_code))
                await self._quietly(
                    transport.answer_callback(incoming.callback_id, something_went_wrong(t), True)
                )
            return None
        if ctx is None:
            log.info("update %s seen before; skipped", update_id)
        return ctx

    async def _begin(self, incoming: Incoming, transport: Transport) -> Context | None:
        key = state_key(incoming.chat_id, incoming.user_id)
        arrival = await self.store.arrive(incoming.user_id, key, incoming.update_id)
        if arrival.seen:
            return None
        claim = None if self.store.claims_on_arrival else incoming.update_id
        member = arrival.member
        profile: dict[str, Any] = {}
        if member is None:
            member = await self._register(incoming, claim)
            claim = None
        else:
            profile = profile_changes(
                member, username=incoming.username, display_name=incoming.full_name
            )
        if member.unreachable and incoming.chat_type == "private":
            profile["unreachable"] = False
        if profile:
            member = replace(member, **profile)
        return Context(
            shop=self.shop,
            member=member,
            locale=self.locale(member.locale, incoming.language_code),
            incoming=incoming,
            transport=self.shown.over(transport),
            state=ChatState(arrival.state.state, arrival.state.data),
            registry=self.registry,
            pending=UpdateWrites(claim=claim, member_id=member.id, profile=profile),
        )

    async def _register(self, incoming: Incoming, claim: int | None) -> MemberView:
        """A member's first update: register them, the update's claim riding along."""
        referral = None
        if incoming.command == "start" and incoming.args.startswith("ref_"):
            referral = incoming.args.removeprefix("ref_")
        claiming = (
            nullcontext()
            if claim is None
            else self.shop.db.riding(self.store.records.rider(UpdateWrites(claim=claim)))
        )
        with claiming:
            return await self.shop.members.register(
                incoming.user_id,
                username=incoming.username,
                display_name=incoming.full_name,
                language_code=incoming.language_code,
                referral_code=referral,
            )

    async def run(self, ctx: Context, work: Callable[[], Awaitable[object]]) -> None:
        """Run a handler with the house rules around it (see the module docstring)."""
        settled = False
        try:
            await self._riding(ctx, work)
            await self._settle(ctx, with_state=True)
            settled = True
        except AlreadyHandledError:
            # Another worker took this update first and wrote what it needs; it answers too.
            log.info("update %s was handled by another worker; undone here", ctx.incoming.update_id)
            ctx.answered = settled = True
        except BadCallbackError as exc:
            log.info("bad callback %r from %s: %s", ctx.incoming.callback_data, ctx.chat_id, exc)
            await self._tell(ctx, bad_button(ctx))
        except ShopError as exc:
            await self._tell(ctx, render_error(exc, ctx, self.shop.ladder))
        except UnreachableError as exc:
            log.warning("chat %s blocked the bot", exc.chat_id)
            await self._mark_unreachable(ctx, exc.chat_id)
            if exc.chat_id != ctx.chat_id:
                await self._tell(ctx, something_went_wrong(ctx))
        except Exception:
            log.exception("handler failed on update %s", ctx.incoming.update_id)
            await self._tell(ctx, something_went_wrong(ctx))
        finally:
            if not settled:
                await self._settle_quietly(ctx)
            await self._quietly(ctx.answer())

    async def _riding(self, ctx: Context, work: Callable[[], Awaitable[object]]) -> None:
        """`work`, the update's pending writes riding in its first write transaction."""
        if not ctx.pending:
            await work()
            return
        with self.shop.db.riding(self.store.records.rider(ctx.pending)) as rider:
            try:
                await work()
            finally:
                if rider.done:
                    ctx.pending = UpdateWrites()

    async def _settle(self, ctx: Context, *, with_state: bool) -> None:
        """Write what the update left: the claim, a profile change, a changed state.

        The state only after the handler succeeded (`with_state`), and only when it
        ended somewhere else than it began.
        """
        writes = ctx.pending
        if with_state and ctx.state.changed:
            view = ChatStateView(ctx.state.name, dict(ctx.state.data))
            writes = replace(writes, state=(state_key(ctx.chat_id, ctx.incoming.user_id), view))
        await self.store.settle(writes)
        ctx.pending = UpdateWrites()

    async def _settle_quietly(self, ctx: Context) -> None:
        """After a failed handler: the claim and profile, never its state; errors logged."""
        try:
            await self._settle(ctx, with_state=False)
        except Exception:
            log.exception("could not record update %s", ctx.incoming.update_id)

    async def _tell(self, ctx: Context, text: str) -> None:
        """A refusal or apology: an alert on a tapped button, else a message."""
        if ctx.incoming.callback_id is not None and not ctx.answered:
            await self._quietly(ctx.answer(text, alert=True))
        else:
            await self._quietly(ctx.transport.send(ctx.chat_id, text))

    async def _mark_unreachable(self, ctx: Context, chat_id: int) -> None:
        """Record a 403: with this update's writes when it is this member's own chat."""
        if chat_id == ctx.member.telegram_id:
            profile = {**ctx.pending.profile, "unreachable": True}
            ctx.pending = replace(ctx.pending, member_id=ctx.member.id, profile=profile)
            return
        member = await self.shop.members.by_telegram(chat_id)
        if member is not None:
            await self.shop.members.set_reachable(member.id, False)

    @staticmethod
    async def _quietly(step: Awaitable[object]) -> None:
        try:
            await step
        except Exception:
            log.exception("could not reach the chat")

    # --- entry points the adapters route to ---------------------------------------------

    async def command(self, ctx: Context, spec: CommandSpec) -> None:
        async def work() -> None:
            ctx.state.clear()
            await spec.handler(ctx)

        await self.run(ctx, work)

    async def callback(self, ctx: Context, spec: CallbackSpec | None) -> None:
        """A tapped button; `spec` None when no conversation claims its prefix."""

        async def work() -> None:
            incoming = ctx.incoming
            raw = incoming.callback_data or ""
            if incoming.chat_type == "private" and incoming.chat_id != incoming.user_id:
                raise BadCallbackError("a button under someone else's private chat")
            if spec is None:
                raise BadCallbackError(f"no conversation for {Callback.prefix_of(raw)!r}")
            if spec.guard is not None and not await spec.guard(ctx):
                return
            await spec.handler(ctx, spec.data_type.unpack(raw))

        await self.run(ctx, work)

    async def state_input(self, ctx: Context, handler: Handler) -> None:
        await self.run(ctx, lambda: handler(ctx))

    async def fallback(self, ctx: Context) -> None:
        fallback = self.registry.fallback
        if fallback is not None:
            await self.run(ctx, lambda: fallback(ctx))

    async def staff_reply(self, ctx: Context) -> None:
        async def work() -> None:
            for handler in self.registry.staff_replies:
                if await handler(ctx):
                    return

        await self.run(ctx, work)

    async def notice(self, ctx: Context, name: Notice) -> None:
        notice = self.registry.notices.get(name)
        if notice is not None:
            await self.run(ctx, lambda: notice(ctx))

    async def payment(self, ctx: Context, kind: PaymentKind) -> None:
        """A payment went through or was refunded: the handler a conversation registered."""
        handler = self.registry.payments.get(kind)
        if handler is None:
            log.error(
                "a %r payment message (charge %s) and no conversation handles it",
                kind,
                ctx.incoming.charge_id,
            )
            return
        await self.run(ctx, lambda: handler(ctx))

    async def pre_checkout(self, incoming: Incoming, transport: Transport) -> None:
        """Telegram asks whether to take a Stars payment: answered now, in one read.

        Telegram cancels the payment unless the answer comes within 10 seconds, so this
        runs ahead of everything else: no chat lock (the member's other updates may be
        busy), no registration and no de-duplication (it changes nothing; a second
        answer to the same query is refused by Telegram and logged). Ok only when the
        shop knows the top-up as the payer's, pending and of this amount; a refusal is
        told in the member's language. A shop that cannot check refuses.
        """
        query_id = incoming.pre_checkout_id
        assert query_id is not None
        try:
            refusal = await self.shop.payments.pre_checkout(
                incoming.user_id,
                incoming.invoice_payload or "",
                incoming.currency or "",
                incoming.total_amount or 0,
            )
        except Exception:
            log.exception("pre-checkout %s: the shop could not check it; refused", query_id)
            refusal = PreCheckoutRefusal.UNAVAILABLE
        if refusal is None:
            await self._quietly(transport.answer_pre_checkout(query_id, True))
            return
        log.info("pre-checkout %s from %s refused: %s", query_id, incoming.user_id, refusal.value)
        try:
            member = await self.shop.members.by_telegram(incoming.user_id)
        except Exception:
            log.exception("pre-checkout %s: the payer's language is unknown", query_id)
            member = None
        chosen = member.locale if member is not None else None
        t = self.translator(self.locale(chosen, incoming.language_code))
        await self._quietly(
            transport.answer_pre_checkout(query_id, False, pre_checkout_refusal(t, refusal))
        )

    async def member_status(self, incoming: Incoming) -> None:
        """The member blocked the bot ("kicked") or unblocked it ("member"): their flag.

        Only the reachable flag is written, and only when it changes: no registration
        (someone the shop does not know has no flag), no de-duplication (setting a flag
        twice is harmless), no state, no reply (a blocked chat cannot receive one; an
        unblocking member says /start). The bot added to or removed from a group is only
        logged: the shop serves no group.
        """
        status = incoming.member_status
        if incoming.chat_type != "private" or status not in ("kicked", "member"):
            log.info("the bot is now %r in %s %s", status, incoming.chat_type, incoming.chat_id)
            return
        members = self.shop.members
        try:
            member = await members.by_telegram(incoming.user_id)
            if member is not None and member.unreachable != (status == "kicked"):
                await members.set_reachable(member.id, status != "kicked")
        except Exception:
            log.exception("could not record %r from chat %s", status, incoming.chat_id)

    # --- routing --------------------------------------------------------------------------

    def is_staff_reply(self, incoming: Incoming) -> bool:
        return (
            self.staff_chat_id is not None
            and incoming.chat_id == self.staff_chat_id
            and incoming.reply_to_message_id is not None
            and incoming.kind in ("text", "command", "document", "media")
        )

    def unheard(self, incoming: Incoming) -> bool:
        """Group chatter: dropped before any work, as nothing in a group is for the shop
        but a command to the bot, a tapped button, the staff chat's replies and money
        (an invoice forwarded to a group can be paid there)."""
        return (
            incoming.chat_type != "private"
            and incoming.kind not in ("command", "callback", "paid", "refunded")
            and not self.is_staff_reply(incoming)
        )

    def state_handler(self, ctx: Context) -> Handler | None:
        """The handler for the input the chat's current state awaits, if it awaits any."""
        return self.registry.states.get(ctx.state.name) if ctx.state.name is not None else None

    async def dispatch(self, ctx: Context) -> None:
        """Route a prepared update to its entry point; the one router of every adapter.

        A payment message goes to its handler wherever it arrives, leaving the chat's
        state alone. Outside private chats only replies in the staff chat, buttons and
        commands to the bot are heard, a command being told to come to the private
        chat. In a private chat a command abandons pending input; text and files go to
        the state awaiting them; an edit or a photo, sticker, voice… is told that it is
        not read when input is awaited; an edit outside is dropped (it changes nothing
        already answered); anything else gets the fallback's hint.
        """
        incoming, registry = ctx.incoming, self.registry
        kind = incoming.kind
        handler = self.state_handler(ctx)
        if kind == "paid" or kind == "refunded":
            await self.payment(ctx, kind)
        elif self.is_staff_reply(incoming):
            await self.staff_reply(ctx)
        elif kind == "callback":
            prefix = Callback.prefix_of(incoming.callback_data or "")
            await self.callback(ctx, registry.callbacks.get(prefix))
        elif incoming.chat_type != "private":
            if kind == "command":
                await self.notice(ctx, "group_command")
        elif kind == "command" and incoming.command in registry.commands:
            await self.command(ctx, registry.commands[incoming.command])
        elif kind in ("text", "document") and handler is not None:
            await self.state_input(ctx, handler)
        elif kind in ("edited", "media") and handler is not None:
            await self.notice(ctx, kind)
        elif kind == "edited":
            log.debug("edit of message %s in chat %s: not read", incoming.message_id, ctx.chat_id)
        else:
            await self.fallback(ctx)

    async def handle(self, incoming: Incoming, transport: Transport) -> None:
        """One update, from any adapter: prepared under the chat's lock, then routed.

        A pre-checkout query is answered at once, outside any lock (`pre_checkout`).
        """
        if incoming.kind == "pre_checkout":
            await self.pre_checkout(incoming, transport)
        elif incoming.kind == "member_status":
            await self.member_status(incoming)
        elif self.unheard(incoming):
            log.debug(
                "%s in %s %s: not for the shop", incoming.kind, incoming.chat_type, incoming.chat_id
            )
        else:
            async with self.locks.hold(incoming.chat_id):
                ctx = await self.begin(incoming, transport)
                if ctx is not None:
                    await self.dispatch(ctx)

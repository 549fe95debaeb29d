"""The neutral conversation API: what `bot/handlers/` is written against.

A conversation is written once, here-shaped, and carried by the aiogram, PTB and
terminal adapters. Handlers see an `Incoming` (what the member did) through a `Context`
(who they are, their language, the shop's services, where they are in a conversation)
and answer through the `Transport` the adapter provides. Nothing here knows a chat
framework, and nothing in a handler computes a price or a tier: the shop does.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from bot.callbacks import Callback
from bot.i18n import Translator
from bot.incoming import Document, Incoming, split_command
from core.chat_state import UpdateWrites
from core.members import MemberView
from core.shop import Shop

if TYPE_CHECKING:
    from bot.framework import Notice, Registry

__all__ = [
    "Button",
    "CannotEditError",
    "ChatState",
    "Context",
    "Conversation",
    "Document",
    "Incoming",
    "Keyboard",
    "PaymentKind",
    "RefundRefusedError",
    "Transport",
    "UnreachableError",
    "escape",
    "split_command",
]


def escape(text: str) -> str:
    """Escape text typed by people (names, ticket text) before putting it in a message."""
    return html.escape(text, quote=False)


@dataclass(frozen=True, slots=True, init=False)
class Button:
    """An inline button: callback data (a `Callback` or its packed string) or a URL."""

    text: str
    data: str | None
    url: str | None

    def __init__(self, text: str, data: Callback | str | None = None, url: str | None = None):
        if (data is None) == (url is None):
            raise ValueError("a button needs exactly one of data or url")
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "data", data.pack() if isinstance(data, Callback) else data)
        object.__setattr__(self, "url", url)


#: Rows of buttons, top to bottom.
Keyboard = Sequence[Sequence[Button]]


class UnreachableError(Exception):
    """The chat refuses the bot (403: blocked, deactivated, kicked)."""

    def __init__(self, chat_id: int) -> None:
        super().__init__(f"chat {chat_id} is unreachable")
        self.chat_id = chat_id


class CannotEditError(Exception):
    """The message cannot be edited any more (gone, too old, not the bot's)."""


class RefundRefusedError(Exception):
    """Telegram refused to refund a Stars payment (unknown charge, refunded already…).

    The message is Telegram's reason, kept with the payment (see `Payments.refund`).
    """


class Transport(Protocol):
    """What an adapter offers handlers. Every method raises `UnreachableError` on a 403."""

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        """Send an HTML message; returns its message id."""

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        """Replace a message's text and keyboard; "not modified" counts as success."""

    async def copy(self, from_chat_id: int, message_id: int, to_chat_id: int) -> int:
        """copyMessage: relay without the sender's name; returns the copy's id."""

    async def answer_callback(
        self, callback_id: str, text: str | None = None, alert: bool = False
    ) -> None: ...

    async def send_document(
        self, chat_id: int, filename: str, data: bytes, caption: str | None = None
    ) -> int: ...

    async def send_photo(self, chat_id: int, data: bytes, caption: str | None = None) -> int: ...

    async def download(self, document: Document) -> bytes: ...

    async def send_invoice(
        self, chat_id: int, title: str, description: str, payload: str, stars: int
    ) -> int:
        """sendInvoice for `stars` Telegram Stars (XTR: no provider token, one price).

        `payload` comes back in the pre-checkout query and the payment; returns the
        invoice message's id.
        """

    async def answer_pre_checkout(self, query_id: str, ok: bool, error: str | None = None) -> None:
        """answerPreCheckoutQuery: take the payment, or refuse it telling the payer `error`."""

    async def refund_star_payment(self, user_id: int, charge_id: str) -> None:
        """refundStarPayment; raises `RefundRefusedError` when Telegram refuses."""


class ChatState:
    """Where this member is in a conversation in this chat, plus its scratch data.

    Changes are kept aside and saved only when the handler finishes without an error,
    so a handler that fails half-way leaves the member where they were; a state that
    ends as it began is not written at all.
    """

    def __init__(self, name: str | None, data: Mapping[str, Any]) -> None:
        self._name = name
        self._data = dict(data)
        self._loaded = (name, dict(data))

    @property
    def changed(self) -> bool:
        return (self._name, self._data) != self._loaded

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def data(self) -> Mapping[str, Any]:
        return dict(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, name: str, **data: Any) -> None:
        """Enter state `name` with exactly this data (JSON-serialisable values)."""
        self._name, self._data = name, dict(data)

    def update(self, **data: Any) -> None:
        """Add to the data, staying in the same state."""
        self._data.update(data)

    def clear(self) -> None:
        self._name, self._data = None, {}


class Context(Translator):
    """Everything a handler gets: the member, their language, the shop and the chat."""

    def __init__(
        self,
        *,
        shop: Shop,
        member: MemberView,
        locale: str,
        incoming: Incoming,
        transport: Transport,
        state: ChatState,
        registry: Registry,
        pending: UpdateWrites | None = None,
    ) -> None:
        super().__init__(locale, currency=shop.settings.shop_currency, zone=shop.settings.zone)
        self.shop = shop
        self.member = member
        self.incoming = incoming
        self.transport = transport
        self.state = state
        self.registry = registry
        self.answered = False
        #: What the runtime still has to write for this update (handlers leave it alone).
        self.pending = pending or UpdateWrites()

    @property
    def chat_id(self) -> int:
        return self.incoming.chat_id

    @property
    def is_admin(self) -> bool:
        return self.incoming.user_id in self.shop.settings.admin_ids

    def use_locale(self, locale: str) -> None:
        """Speak `locale` from now on in this update (after the member switched)."""
        Translator.__init__(self, locale, currency=self.currency, zone=self.zone)

    async def reply(self, text: str, keyboard: Keyboard | None = None) -> int:
        """Answer in this chat: a tapped button's message is edited in place, else sent."""
        message_id = self.incoming.callback_message_id
        if self.incoming.kind == "callback" and message_id is not None:
            try:
                await self.transport.edit(self.chat_id, message_id, text, keyboard)
            except CannotEditError:
                return await self.transport.send(self.chat_id, text, keyboard)
            return message_id
        return await self.transport.send(self.chat_id, text, keyboard)

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        return await self.transport.send(chat_id, text, keyboard)

    async def answer(self, text: str | None = None, alert: bool = False) -> None:
        """Answer the tapped button (a toast, or an alert box); at most once per update."""
        if self.answered or self.incoming.callback_id is None:
            return
        self.answered = True
        await self.transport.answer_callback(self.incoming.callback_id, text, alert)

    async def download(self, document: Document) -> bytes:
        return await self.transport.download(document)

    async def open_menu(self, item: str) -> bool:
        """Run the handler hooked to main-menu `item`; False when none is (yet)."""
        handler = self.registry.menus.get(item)
        if handler is None:
            return False
        await handler(self)
        return True


Handler = Callable[[Context], Awaitable[None]]
StaffReplyHandler = Callable[[Context], Awaitable[bool]]
C = TypeVar("C", bound=Callback)
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    names: tuple[str, ...]
    handler: Handler
    #: Shown in Telegram's command menu when set (mark it with `N_`).
    description: str | None


#: The payment messages a conversation may handle: money in, money given back.
PaymentKind = Literal["paid", "refunded"]

#: Who may press a conversation's buttons; False when it refused (and said so) itself.
ButtonGuard = Callable[[Context], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class CallbackSpec:
    data_type: type[Callback]
    handler: Callable[[Context, Any], Awaitable[None]]
    #: Runs before the data is parsed, so a refused press is refused whatever it carried.
    guard: ButtonGuard | None = None


@dataclass
class Conversation:
    """One conversation's handlers; a module exposes `conversation = Conversation(...)`."""

    name: str
    commands: list[CommandSpec] = field(default_factory=list)
    callbacks: list[CallbackSpec] = field(default_factory=list)
    states: dict[str, Handler] = field(default_factory=dict)
    menus: dict[str, Handler] = field(default_factory=dict)
    staff_replies: list[StaffReplyHandler] = field(default_factory=list)
    fallback_handler: Handler | None = None
    notices: dict[Notice, Handler] = field(default_factory=dict)
    payments: dict[PaymentKind, Handler] = field(default_factory=dict)
    #: Asked before any of this conversation's buttons is parsed (the admin screens).
    button_guard: ButtonGuard | None = None

    def command(self, *names: str, description: str | None = None) -> Callable[[H], H]:
        """`/name` (and aliases) in a private chat; a command abandons any pending input."""

        def register(handler: H) -> H:
            self.commands.append(CommandSpec(tuple(names), handler, description))
            return handler

        return register

    def callback(
        self, data_type: type[C]
    ) -> Callable[
        [Callable[[Context, C], Awaitable[None]]], Callable[[Context, C], Awaitable[None]]
    ]:
        """A tapped button whose data is `data_type` (already unpacked and validated)."""

        def register(
            handler: Callable[[Context, C], Awaitable[None]],
        ) -> Callable[[Context, C], Awaitable[None]]:
            self.callbacks.append(CallbackSpec(data_type, handler, self.button_guard))
            return handler

        return register

    def state(self, *names: str) -> Callable[[H], H]:
        """Text (or a document) sent while the chat is in one of these states."""

        def register(handler: H) -> H:
            for name in names:
                self.states[name] = handler
            return handler

        return register

    def menu(self, item: str) -> Callable[[H], H]:
        """What the main menu's `item` button opens (see `bot.handlers.start`)."""

        def register(handler: H) -> H:
            self.menus[item] = handler
            return handler

        return register

    def staff_reply(
        self,
    ) -> Callable[[StaffReplyHandler], StaffReplyHandler]:
        """A reply in the staff chat; return True when it was yours to handle."""

        def register(handler: StaffReplyHandler) -> StaffReplyHandler:
            self.staff_replies.append(handler)
            return handler

        return register

    def fallback(self) -> Callable[[H], H]:
        """Input nothing else handles (an unknown command, text outside any state)."""

        def register(handler: H) -> H:
            self.fallback_handler = handler
            return handler

        return register

    def notice(self, name: Notice) -> Callable[[H], H]:
        """What the member is told when the runtime reads no further (see `Runtime.dispatch`)."""

        def register(handler: H) -> H:
            self.notices[name] = handler
            return handler

        return register

    def payment(self, kind: PaymentKind) -> Callable[[H], H]:
        """A message saying a Stars payment went through ("paid") or was refunded.

        It runs like any update (the chat's lock, de-duplication, the claim riding the
        handler's first write), whatever state the chat is in, which it leaves alone.
        """

        def register(handler: H) -> H:
            self.payments[kind] = handler
            return handler

        return register

"""What the stand-in remembers, in shapes a scenario test can assert on directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class TgUser:
    """A Telegram account that talks to the bot; `as_dict()` is its Bot API `User` object."""

    id: int
    first_name: str = "Tester"
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = "zh-hans"
    is_bot: bool = False

    def as_dict(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            value = getattr(self, key)
            if value is not None:
                user[key] = value
        return user

    def private_chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.last_name is not None:
            chat["last_name"] = self.last_name
        if self.username is not None:
            chat["username"] = self.username
        return chat


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    filename: str
    content: bytes
    content_type: str


@dataclass(frozen=True)
class StoredFile:
    """A file the server holds: uploaded by the bot or sent by a user, downloadable by path."""

    file_id: str
    file_unique_id: str
    file_path: str
    kind: str
    filename: str
    mime_type: str
    content: bytes


@dataclass
class StoredMessage:
    """A message in a chat; `message` is its current Bot API object with edits applied.

    `reply_markup` is the markup as the bot sent it, reply keyboards included (Telegram only
    echoes inline keyboards inside the message object). `versions` keeps every earlier state.
    """

    chat_id: int
    message_id: int
    from_bot: bool
    message: dict[str, Any]
    reply_markup: dict[str, Any] | None = None
    file: StoredFile | None = None
    deleted: bool = False
    versions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str | None:
        """The text, or the caption of a media message."""
        value = self.message.get("text", self.message.get("caption"))
        return None if value is None else str(value)

    @property
    def entities(self) -> list[dict[str, Any]]:
        found = self.message.get("entities", self.message.get("caption_entities", []))
        return list(found)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every button of the reply markup, inline or reply keyboard, row by row."""
        if self.reply_markup is None:
            return []
        rows = self.reply_markup.get("inline_keyboard") or self.reply_markup.get("keyboard") or []
        return [
            button if isinstance(button, dict) else {"text": button}
            for row in rows
            for button in row
        ]

    @property
    def invoice(self) -> dict[str, Any] | None:
        """The `invoice` object of an invoice message (title, currency, total_amount...)."""
        value = self.message.get("invoice")
        return dict(value) if isinstance(value, dict) else None

    @property
    def callback_data(self) -> list[str]:
        return [b["callback_data"] for b in self.buttons if "callback_data" in b]


@dataclass(frozen=True)
class ApiCall:
    """One request the bot made, with the decoded parameters and the answer it got."""

    method: str
    params: dict[str, Any]
    time: float
    status: int
    response: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def result(self) -> Any:
        return self.response.get("result")

    @property
    def description(self) -> str | None:
        value = self.response.get("description")
        return None if value is None else str(value)


@dataclass(frozen=True)
class CallbackAnswer:
    """The bot's `answerCallbackQuery` for one query."""

    callback_query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int
    time: float


@dataclass(frozen=True)
class WebhookAttempt:
    """One POST of an update to the webhook: the HTTP status, or why it failed."""

    update_id: int
    status: int | None
    error: str | None


@dataclass(frozen=True)
class SentInvoice:
    """An invoice the bot sent with `sendInvoice`, including what the message object hides.

    Telegram never shows `payload`, `prices` or `provider_token` in the `invoice` of the
    message; the stand-in keeps them so `pay_invoice` can hand them back as Telegram would.
    """

    chat_id: int
    message_id: int
    title: str
    description: str
    payload: str
    currency: str
    prices: tuple[tuple[str, int], ...]
    start_parameter: str
    provider_token: str

    @property
    def total_amount(self) -> int:
        return sum(amount for _, amount in self.prices)


@dataclass
class StarCharge:
    """A completed payment, as Telegram holds it for `refundStarPayment`.

    `refunded_by` is "bot" after `refundStarPayment`, "support" after `support_refund`.
    """

    telegram_payment_charge_id: str
    provider_payment_charge_id: str
    payer: TgUser
    chat_id: int
    invoice_message_id: int
    currency: str
    total_amount: int
    invoice_payload: str
    refunded_by: str | None = None

    @property
    def user_id(self) -> int:
        return self.payer.id

    @property
    def refunded(self) -> bool:
        return self.refunded_by is not None

    def payment_object(self) -> dict[str, Any]:
        """The fields `successful_payment` and `refunded_payment` share."""
        return {
            "currency": self.currency,
            "total_amount": self.total_amount,
            "invoice_payload": self.invoice_payload,
            "telegram_payment_charge_id": self.telegram_payment_charge_id,
            "provider_payment_charge_id": self.provider_payment_charge_id,
        }


@dataclass(frozen=True)
class PreCheckoutAnswer:
    """The bot's `answerPreCheckoutQuery` for one query."""

    pre_checkout_query_id: str
    ok: bool
    error_message: str | None
    time: float


class PaymentStatus(StrEnum):
    """How a user's attempt to pay ended, as the Telegram app would show it."""

    PAID = "paid"
    #: The bot answered the pre-checkout query with ok=false (the app shows its error_message).
    DECLINED = "declined"
    #: No answer within the pre-checkout window: Telegram cancelled the payment.
    TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class PaymentOutcome:
    """What `BotApiStub.pay_invoice` saw: the query, the bot's answer and the payment, if any.

    `update` is the `successful_payment` message update, ready for `redeliver` to replay it.
    """

    status: PaymentStatus
    pre_checkout_query: dict[str, Any]
    error_message: str | None = None
    charge: StarCharge | None = None
    update: dict[str, Any] | None = None

    @property
    def paid(self) -> bool:
        return self.status is PaymentStatus.PAID

    @property
    def query_id(self) -> str:
        return str(self.pre_checkout_query["id"])

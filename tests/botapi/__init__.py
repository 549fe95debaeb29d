"""A local Telegram Bot API for end-to-end tests of the real bot; see `server.BotApiStub`."""

from tests.botapi.html import FormattedText, HtmlParseError, parse_html
from tests.botapi.limits import RateLimits
from tests.botapi.records import (
    ApiCall,
    CallbackAnswer,
    PaymentOutcome,
    PaymentStatus,
    PreCheckoutAnswer,
    SentInvoice,
    StarCharge,
    StoredFile,
    StoredMessage,
    TgUser,
    Upload,
    WebhookAttempt,
)
from tests.botapi.server import ApiError, BotApiStub

__all__ = [
    "ApiCall",
    "ApiError",
    "BotApiStub",
    "CallbackAnswer",
    "FormattedText",
    "HtmlParseError",
    "PaymentOutcome",
    "PaymentStatus",
    "PreCheckoutAnswer",
    "RateLimits",
    "SentInvoice",
    "StarCharge",
    "StoredFile",
    "StoredMessage",
    "TgUser",
    "Upload",
    "WebhookAttempt",
    "parse_html",
]

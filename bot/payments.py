"""What the bot says and does around payments, outside any one conversation.

The runtime answers Telegram's pre-checkout queries with `pre_checkout_refusal`'s words;
the admin screen and `cardshop refund-payment` both give a Stars payment back through
`star_refunder` and word its refusals alike (`refund_refusal`); a method and a state
read the same wherever a payment is shown. The buyer's side (top-up menus, invoices,
telling a member the money landed) is the `topup` conversation's.
"""

from __future__ import annotations

from bot.conversation import RefundRefusedError, Transport, escape
from bot.i18n import Translator
from core.errors import ErrorCode, ShopError
from core.payments import STARS, PaymentState, PaymentView, PreCheckoutRefusal, Refunder
from core.shop import Shop


def pre_checkout_refusal(t: Translator, refusal: PreCheckoutRefusal) -> str:
    """Why a payment is not taken, as Telegram shows it to the payer (plain text)."""
    match refusal:
        case PreCheckoutRefusal.UNKNOWN:
            return t._("The shop does not know this invoice. Please start a new top-up.")
        case PreCheckoutRefusal.NOT_YOURS:
            return t._("This invoice is another member's. Please start a top-up of your own.")
        case PreCheckoutRefusal.NOT_PENDING:
            return t._("This top-up is paid or closed already. Please start a new one.")
        case PreCheckoutRefusal.EXPIRED:
            return t._("This invoice has expired. Please start a new top-up.")
        case PreCheckoutRefusal.AMOUNT_MISMATCH:
            return t._("The amount differs from the invoice. Please start a new top-up.")
        case PreCheckoutRefusal.UNAVAILABLE:
            return t._("Payments cannot be taken right now. Please try again in a few minutes.")


def method_name(t: Translator, method: str) -> str:
    """A way to pay as members know it: Stars, 支付宝, 微信支付, QQ钱包."""
    match method:
        case "stars":
            return t._("⭐ Telegram Stars")
        case "alipay":
            return t._("Alipay")
        case "wxpay":
            return t._("WeChat Pay")
        case "qqpay":
            return t._("QQ Wallet")
        case _:
            return method


def state_name(t: Translator, state: PaymentState) -> str:
    """Where a payment stands, in words."""
    match state:
        case PaymentState.PENDING:
            return t._("awaiting payment")
        case PaymentState.PAID:
            return t._("paid, not credited")
        case PaymentState.CREDITED:
            return t._("credited")
        case PaymentState.REFUNDING:
            return t._("being refunded")
        case PaymentState.REFUNDED:
            return t._("refunded")
        case PaymentState.EXPIRED:
            return t._("expired")


def star_refunder(shop: Shop, transport: Transport) -> Refunder:
    """refundStarPayment for a payment, to the member who paid it.

    Only Stars go back through Telegram: for any other payment this refuses, and the
    shop restores what it took from the wallet.
    """

    async def refund(payment: PaymentView) -> None:
        if payment.provider != STARS or payment.provider_charge_id is None:
            raise RefundRefusedError("only a Stars payment is refunded through Telegram")
        member = await shop.members.get(payment.member_id)
        if member.telegram_id is None:
            raise RefundRefusedError("the member has no Telegram account to refund to")
        await transport.refund_star_payment(member.telegram_id, payment.provider_charge_id)

    return refund


def refund_refusal(t: Translator, error: ShopError) -> str | None:
    """Why a refund did not happen, in an admin's terms (the chat's and the shell's);
    None for a refusal of another kind, which reads as anywhere else."""
    params = error.params
    match error.code:
        case ErrorCode.INSUFFICIENT_BALANCE:
            return t._(
                "⚠️ Not refunded: the wallet holds {balance}, less than the {amount} to take"
                " back. Nothing was changed."
            ).format(
                balance=t.money(int(params.get("balance", 0))),
                amount=t.money(int(params.get("required", 0))),
            )
        case ErrorCode.PAYMENT_REFUND_REFUSED:
            return t._(
                "⚠️ Telegram refused the refund ({reason}). The money is back in the wallet."
            ).format(reason=escape(str(params.get("reason", ""))))
        case ErrorCode.PAYMENT_NOT_REFUNDABLE:
            return t._("⚠️ This payment cannot be refunded now.")
        case _:
            return None

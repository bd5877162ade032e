"""LiPayKripto webhooks: unsigned, so authenticated by client id and a per-subject URL token.

LiPayKripto signs nothing. Its document only says to check that the body's client id is ours,
which anyone who has seen one delivery can copy, so the ledger also hands out a callback URL with
an unguessable token per payment or withdrawal (`{public_url}/v1/webhooks/lipaykripto/{token}`).
This adapter checks what it can on its own (client id, token present); whether the token belongs
to the payment or withdrawal the body names is checked by the ingestion service, which knows the
tokens it issued.

Two body shapes arrive at the same kind of URL:
- payment:    {try_amount, client_id, payment_id, status: confirmed|failed}
- withdrawal: {success, clientId, status: confirmed|failed|manual_process, tryAmount, requestId}
They are told apart by their keys (`payment_id` versus `requestId`).
"""

from __future__ import annotations

import hmac
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from adapters.providers.canonical import payload_dedupe_key
from adapters.providers.contract import (
    TokenScope,
    WebhookBodyInvalid,
    WebhookDelivery,
    parse_webhook_object,
)
from ledger.commands import (
    DepositReport,
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    Translation,
    WithdrawalReference,
    WithdrawalUpdate,
)
from ledger.deliveries import Verification, VerificationOutcome
from ledger.errors import AmountPrecisionExceedsCurrencyScale, AmountTooLarge
from ledger.money import quantize_exact

if TYPE_CHECKING:
    from collections.abc import Mapping

PROVIDER_ID = "lipaykripto"
SCHEME = "callback-token-per-subject"
TRY_CURRENCY = "TRY"

PAYMENT_OUTCOMES: Mapping[str, ProviderPaymentOutcome] = {
    "confirmed": ProviderPaymentOutcome.PAID,
    "failed": ProviderPaymentOutcome.FAILED,
}
WITHDRAWAL_OUTCOMES: Mapping[str, ProviderWithdrawalOutcome] = {
    "confirmed": ProviderWithdrawalOutcome.COMPLETED,
    "failed": ProviderWithdrawalOutcome.FAILED,
    "manual_process": ProviderWithdrawalOutcome.MANUAL_REVIEW,
}

Shape = Literal["payment", "withdrawal"]


class LiPayKriptoWebhooks:
    token_scope = TokenScope.PER_SUBJECT

    def __init__(self, client_id: str) -> None:
        if not client_id:
            raise ValueError("lipaykripto client_id must not be empty")
        self._client_id = client_id.encode("utf-8")

    def authenticate(self, delivery: WebhookDelivery) -> Verification:
        body = parse_webhook_object(delivery.body)
        shape = _shape_of(body)
        # Each shape names the client in its own key; checking the other key would let a body
        # carry a correct id in a field this shape never reads.
        received = body.get("client_id" if shape == "payment" else "clientId")
        if not isinstance(received, str) or not received:
            return Verification(VerificationOutcome.REJECTED, SCHEME, "client_id_missing")
        if not hmac.compare_digest(received.encode("utf-8"), self._client_id):
            return Verification(VerificationOutcome.REJECTED, SCHEME, "client_id_mismatch")
        if not delivery.path_token:
            return Verification(VerificationOutcome.UNVERIFIED, SCHEME, "token_missing")
        # Only the ingestion service can tell whether the token is the one issued for the
        # payment or withdrawal named in the body; until it has, this is a claim, not a proof.
        return Verification(VerificationOutcome.VERIFIED, SCHEME, "token_to_be_matched")

    def translate(self, delivery: WebhookDelivery) -> Translation:
        body = parse_webhook_object(delivery.body)
        shape = _shape_of(body)
        dedupe_key = payload_dedupe_key(PROVIDER_ID, body)
        if shape == "payment":
            return _translate_payment(body, dedupe_key)
        return _translate_withdrawal(body, dedupe_key)


def _translate_payment(body: Mapping[str, Any], dedupe_key: str) -> Translation:
    payment_id = _required_text(body, "payment_id")
    status_word = _required_text(body, "status")
    amount = _try_amount(body, "try_amount")
    outcome = PAYMENT_OUTCOMES.get(status_word, ProviderPaymentOutcome.UNKNOWN)
    deposits: tuple[DepositReport, ...] = ()
    if outcome is ProviderPaymentOutcome.PAID and amount > 0:
        # The body has no deposit id or tx hash and a payment is confirmed once, so the deposit
        # is named by the payment: the same confirmation delivered twice counts once.
        deposits = (
            DepositReport(
                deposit_id=f"{PROVIDER_ID}:{payment_id}:confirmed",
                amount=amount,
                currency=TRY_CURRENCY,
                confirmed=True,
            ),
        )
    update = PaymentUpdate(
        # `payment_id` is the paymentId WE sent (our order id), not the provider's
        # paymentRequestId, which the webhooks never mention.
        reference=PaymentReference(provider=PROVIDER_ID, order_id=payment_id),
        deposits=deposits,
        status=PaymentStatusReport(
            status_word=status_word,
            outcome=outcome,
            amount_paid_reported=amount if outcome is ProviderPaymentOutcome.PAID else None,
        ),
    )
    return Translation(dedupe_key=dedupe_key, facts=(update,), event_type=f"payment.{status_word}")


def _translate_withdrawal(body: Mapping[str, Any], dedupe_key: str) -> Translation:
    request_id = _required_text(body, "requestId")
    status_word = _required_text(body, "status")
    amount = _try_amount(body, "tryAmount")
    if "success" in body and not isinstance(body["success"], bool):
        raise WebhookBodyInvalid("wrong_shape", "success must be a boolean")
    outcome = WITHDRAWAL_OUTCOMES.get(status_word, ProviderWithdrawalOutcome.UNKNOWN)
    update = WithdrawalUpdate(
        reference=WithdrawalReference(provider=PROVIDER_ID, request_id=request_id),
        status_word=status_word,
        outcome=outcome,
        # tryAmount is the requested amount echoed back; it was only sent when confirmed.
        amount_sent=amount if outcome is ProviderWithdrawalOutcome.COMPLETED else None,
        currency=TRY_CURRENCY,
    )
    return Translation(
        dedupe_key=dedupe_key, facts=(update,), event_type=f"withdrawal.{status_word}"
    )


def _shape_of(body: Mapping[str, Any]) -> Shape:
    is_payment = "payment_id" in body
    is_withdrawal = "requestId" in body
    if is_payment == is_withdrawal:
        raise WebhookBodyInvalid(
            "wrong_shape", "expected exactly one of payment_id (payment) or requestId (withdrawal)"
        )
    return "payment" if is_payment else "withdrawal"


def _required_text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise WebhookBodyInvalid("wrong_shape", f"{key} must be a non-empty string")
    return value


def _try_amount(body: Mapping[str, Any], key: str) -> Decimal:
    value = body.get(key)
    # loads_exact yields Decimal for 100.00 and int for 100; a quoted amount is not the shape.
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise WebhookBodyInvalid("wrong_shape", f"{key} must be a JSON number")
    amount = Decimal(value)
    if amount < 0:
        raise WebhookBodyInvalid("wrong_shape", f"{key} must not be negative")
    try:
        return quantize_exact(amount, TRY_CURRENCY)
    except (AmountPrecisionExceedsCurrencyScale, AmountTooLarge, InvalidOperation):
        detail = f"{key} is not a TRY amount (at most 24 digits and two decimals)"
        raise WebhookBodyInvalid("wrong_shape", detail) from None

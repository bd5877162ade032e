"""CoinPay webhooks: the signature over re-serialized JSON, and the translation into facts.

The document's only event payload shape is `{"event": ..., "data": {...}}` with the events
`transaction.completed` (data: transactionId, amount, currency, metadata), `transaction.failed`
(data: transactionId, error) and `payout.completed` (data not shown). Any other event is recorded
with no facts, as the document's own handler only logs it.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from adapters.providers.canonical import payload_dedupe_key
from adapters.providers.coinpay.javascript_json import (
    JavaScriptJsonError,
    parse_as_javascript,
    stringify,
)
from adapters.providers.contract import (
    TokenScope,
    WebhookBodyInvalid,
    WebhookDelivery,
    parse_webhook_object,
)
from ledger.commands import (
    CumulativeReceivedReport,
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    ProviderFact,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    Translation,
    WithdrawalReference,
    WithdrawalUpdate,
)
from ledger.deliveries import Verification, VerificationOutcome
from ledger.money import to_decimal

if TYPE_CHECKING:
    from collections.abc import Mapping

PROVIDER_ID = "coinpay"
SIGNATURE_HEADER = "x-signature"
SIGNATURE_SCHEME = "hmac-sha256-hex-json-stringify"

EVENT_TRANSACTION_COMPLETED = "transaction.completed"
EVENT_TRANSACTION_FAILED = "transaction.failed"
EVENT_PAYOUT_COMPLETED = "payout.completed"
# Not in the document: CoinPay documents no payout failure event. Mapped so that a failure the
# provider does send is not silently dropped; the sandbox sends it for the `failed` scenario.
EVENT_PAYOUT_FAILED = "payout.failed"


def signature_for(body: bytes | str, secret: str) -> str:
    """HMAC-SHA256 hex of JSON.stringify(JSON.parse(body)), as CoinPay computes it."""
    signing_input = stringify(parse_as_javascript(body))
    return hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).hexdigest()


class CoinPayWebhooks:
    """Implements `WebhookAdapter` for CoinPay. One shared secret, set in CoinPay's portal."""

    token_scope = TokenScope.NONE

    def __init__(self, webhook_secret: str) -> None:
        if not webhook_secret:
            raise ValueError("coinpay webhook_secret must not be empty")
        self._secret = webhook_secret

    def authenticate(self, delivery: WebhookDelivery) -> Verification:
        """Checks `x-signature`. Raises WebhookBodyInvalid(not_json) when the body cannot be
        parsed, since the signed text is rebuilt from the parsed body."""
        received = delivery.headers.get(SIGNATURE_HEADER)
        if not received:
            return _rejected("signature_missing")
        try:
            expected = signature_for(delivery.body, self._secret)
        except (JavaScriptJsonError, UnicodeDecodeError) as error:
            raise WebhookBodyInvalid("not_json", str(error)) from error
        # The document compares with `===`, so the hex must match exactly (lower case included).
        if not hmac.compare_digest(expected.encode(), received.encode()):
            return _rejected("signature_mismatch")
        return Verification(VerificationOutcome.VERIFIED, SIGNATURE_SCHEME)

    def translate(self, delivery: WebhookDelivery) -> Translation:
        payload = parse_webhook_object(delivery.body)
        event = payload.get("event")
        data = payload.get("data")
        if not isinstance(event, str) or not event:
            raise WebhookBodyInvalid("wrong_shape", "`event` must be a non-empty string")
        if not isinstance(data, dict):
            raise WebhookBodyInvalid("wrong_shape", "`data` must be an object")
        return Translation(
            dedupe_key=dedupe_key(payload),
            facts=_facts_for(event, data),
            event_type=event,
        )


def dedupe_key(payload: Any, prefix: str = PROVIDER_ID) -> str:
    """CoinPay deliveries carry no event id: the key is the hash of the canonical payload."""
    return payload_dedupe_key(prefix, payload)


def _facts_for(event: str, data: Mapping[str, Any]) -> tuple[ProviderFact, ...]:
    if event == EVENT_TRANSACTION_COMPLETED:
        return (_transaction_completed(data),)
    if event == EVENT_TRANSACTION_FAILED:
        return (
            PaymentUpdate(
                reference=_payment_reference(data),
                status=PaymentStatusReport(
                    status_word=event,
                    outcome=ProviderPaymentOutcome.FAILED,
                    reported_at=parse_time(data.get("failedAt")),
                ),
            ),
        )
    if event in {EVENT_PAYOUT_COMPLETED, EVENT_PAYOUT_FAILED}:
        return (_payout_update(event, data),)
    # The document's handler only logs other events; recorded, no effect.
    return ()


def _transaction_completed(data: Mapping[str, Any]) -> PaymentUpdate:
    # `amount` is read as the total paid so far (CoinPay sends no separate deposits). Comparing it
    # with the expected amount is the domain's job: the provider's word "completed" is kept as is.
    amount = _amount(data, "amount", required=True)
    assert amount is not None
    currency = _text(data, "currency", required=True)
    assert currency is not None
    completed_at = parse_time(data.get("completedAt"))
    return PaymentUpdate(
        reference=_payment_reference(data),
        cumulative=CumulativeReceivedReport(
            total=amount, currency=currency, confirmed=True, observed_at=completed_at
        ),
        status=PaymentStatusReport(
            status_word=EVENT_TRANSACTION_COMPLETED,
            outcome=ProviderPaymentOutcome.PAID,
            amount_paid_reported=amount,
            reported_at=completed_at,
        ),
    )


def _payout_update(event: str, data: Mapping[str, Any]) -> WithdrawalUpdate:
    # The document shows no payout.completed body; the create response names the payout `id`,
    # so `payoutId` (like `transactionId`) and `id` are both accepted.
    payout_id = _text(data, "payoutId") or _text(data, "id")
    if payout_id is None:
        raise WebhookBodyInvalid("wrong_shape", "payout event without `payoutId` or `id`")
    completed = event == EVENT_PAYOUT_COMPLETED
    error = data.get("error")
    return WithdrawalUpdate(
        reference=WithdrawalReference(provider=PROVIDER_ID, provider_ref=payout_id),
        status_word=event,
        outcome=(
            ProviderWithdrawalOutcome.COMPLETED if completed else ProviderWithdrawalOutcome.FAILED
        ),
        tx_hash=_text(data, "txHash"),
        amount_sent=_amount(data, "amount") if completed else None,
        currency=_text(data, "currency"),
        failure_reason=None if completed or error is None else str(error),
        reported_at=parse_time(data.get("completedAt") if completed else data.get("failedAt")),
    )


def _payment_reference(data: Mapping[str, Any]) -> PaymentReference:
    transaction_id = _text(data, "transactionId", required=True)
    metadata = data.get("metadata")
    order_id = None
    if isinstance(metadata, dict):
        order_id = _text(metadata, "orderId")
    return PaymentReference(provider=PROVIDER_ID, provider_ref=transaction_id, order_id=order_id)


def _text(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    """A string id or code; integers are accepted as ids (JSON gives no guarantee of strings)."""
    value = data.get(key)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if required:
        raise WebhookBodyInvalid("wrong_shape", f"`{key}` must be a non-empty string")
    return None


def _amount(data: Mapping[str, Any], key: str, *, required: bool = False) -> Decimal | None:
    value = data.get(key)
    if value is None and not required:
        return None
    try:
        amount = to_decimal(value)
    except (TypeError, ValueError, ArithmeticError) as error:
        raise WebhookBodyInvalid("wrong_shape", f"`{key}` is not an amount: {error}") from error
    if amount < 0:
        raise WebhookBodyInvalid("wrong_shape", f"`{key}` must not be negative")
    return amount


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time, when the provider gives one; anything else is left out, not refused,
    because no time field is part of the document's payloads."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _rejected(reason: str) -> Verification:
    return Verification(VerificationOutcome.REJECTED, SIGNATURE_SCHEME, reason)

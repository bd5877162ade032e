"""Payment Engine webhooks: `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.

Body: `{eventId, eventType, timestamp?, data}`. Which way a transaction went is read from its
`fromAccountId`: money leaving the configured merchant account is a withdrawal, anything else is
an incoming payment (the document's own handler treats `transaction.completed` as "order paid").
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from adapters.providers.contract import TokenScope, WebhookBodyInvalid, WebhookDelivery
from adapters.providers.payment_engine.payloads import (
    TransactionView,
    content_key,
    optional_amount,
    optional_text,
    optional_timestamp,
    payment_update,
    require_object,
    require_text,
    withdrawal_update,
    wrong_shape,
)
from adapters.providers.payment_engine.vocabulary import (
    EVENT_BALANCE_UPDATED,
    EVENT_TRANSACTION_COMPLETED,
    EVENT_TRANSACTION_CREATED,
    EVENT_TRANSACTION_FAILED,
    PROVIDER_ID,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_PENDING,
)
from ledger.commands import ProviderBalanceReport, ProviderFact, Translation
from ledger.deliveries import Verification, VerificationOutcome
from ledger.money import loads_exact

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

SIGNATURE_HEADER = "x-webhook-signature"
SIGNATURE_PREFIX = "sha256="
SCHEME = "hmac-sha256-raw-body"


def sign(secret: str, body: bytes) -> str:
    """The header value the provider sends for `body` (the sandbox signs with it too)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


class PaymentEngineWebhooks:
    token_scope = TokenScope.NONE

    def __init__(self, webhook_secret: str, merchant_account_id: str) -> None:
        if not webhook_secret:
            raise ValueError("payment_engine needs a webhook_secret")
        self._secret = webhook_secret
        self._merchant_account_id = merchant_account_id

    def authenticate(self, delivery: WebhookDelivery) -> Verification:
        received = delivery.headers.get(SIGNATURE_HEADER)
        if not received:
            return Verification(VerificationOutcome.REJECTED, SCHEME, "signature_missing")
        if not received.startswith(SIGNATURE_PREFIX):
            return Verification(VerificationOutcome.REJECTED, SCHEME, "signature_malformed")
        expected = sign(self._secret, delivery.body)
        # Bytes on both sides: compare_digest refuses non-ASCII text, and a header is untrusted.
        if not hmac.compare_digest(expected.encode("utf-8"), received.encode("utf-8")):
            return Verification(VerificationOutcome.REJECTED, SCHEME, "signature_mismatch")
        return Verification(VerificationOutcome.VERIFIED, SCHEME)

    def translate(self, delivery: WebhookDelivery) -> Translation:
        try:
            parsed = loads_exact(delivery.body)
        except ValueError as error:  # also UnicodeDecodeError, a ValueError
            raise WebhookBodyInvalid("not_json", str(error)) from None
        event = require_object(parsed, "body")
        event_type = require_text(event, "eventType")
        event_id = optional_text(event, "eventId")
        # The provider's event id is its idempotency key; the payload hash is a fallback only.
        dedupe_key = f"{PROVIDER_ID}:{event_id}" if event_id else content_key(parsed)
        reader = self._readers().get(event_type)
        if reader is None:
            return Translation(dedupe_key=dedupe_key, event_type=event_type)
        facts = reader(event, require_object(event.get("data"), "data"))
        return Translation(dedupe_key=dedupe_key, facts=facts, event_type=event_type)

    def _readers(
        self,
    ) -> dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[ProviderFact, ...]]]:
        return {
            EVENT_TRANSACTION_CREATED: self._created,
            EVENT_TRANSACTION_COMPLETED: self._completed,
            EVENT_TRANSACTION_FAILED: self._failed,
            EVENT_BALANCE_UPDATED: _balance,
        }

    def _created(
        self, event: Mapping[str, Any], data: Mapping[str, Any]
    ) -> tuple[ProviderFact, ...]:
        # The document says a new transaction is PENDING; a transaction created already in
        # progress (its `status` PROCESSING) is read by that status word.
        return self._transaction(event, data, optional_text(data, "status") or STATUS_PENDING)

    def _completed(
        self, event: Mapping[str, Any], data: Mapping[str, Any]
    ) -> tuple[ProviderFact, ...]:
        return self._transaction(event, data, STATUS_COMPLETED)

    def _failed(
        self, event: Mapping[str, Any], data: Mapping[str, Any]
    ) -> tuple[ProviderFact, ...]:
        return self._transaction(event, data, STATUS_FAILED)

    def _transaction(
        self, event: Mapping[str, Any], data: Mapping[str, Any], status_word: str
    ) -> tuple[ProviderFact, ...]:
        view = TransactionView.read(
            data, id_field="transactionId", at=optional_timestamp(event, "timestamp")
        )
        if view.from_account == self._merchant_account_id:
            return (withdrawal_update(view, status_word),)
        return (payment_update(view, status_word),)


def _balance(event: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[ProviderFact, ...]:
    # The handler in the document only says "update cached balance"; the balance endpoint's
    # field is `availableBalance`, and `balance` is read when that is absent.
    available = optional_amount(data, "availableBalance")
    if available is None:
        available = optional_amount(data, "balance")
    if available is None:
        raise wrong_shape("account.balance.updated needs availableBalance or balance")
    return (
        ProviderBalanceReport(
            provider=PROVIDER_ID,
            account=require_text(data, "accountId"),
            currency=require_text(data, "currencyCode"),
            available=available,
            reported_at=optional_timestamp(event, "timestamp"),
        ),
    )

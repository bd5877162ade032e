"""Reading Payment Engine transaction objects into ledger facts.

Webhook `data` objects and the status query's answer describe the same transaction with the same
field names (except its id: `transactionId` in webhooks, `id` in API answers), so both paths go
through here and a deposit reported by either gets the same id and the same amount.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from adapters.providers.canonical import canonical_json
from adapters.providers.contract import WebhookBodyInvalid
from adapters.providers.payment_engine.vocabulary import (
    PROVIDER_ID,
    STATUS_COMPLETED,
    payment_outcome,
    withdrawal_outcome,
)
from ledger.commands import (
    DepositReport,
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    WithdrawalReference,
    WithdrawalUpdate,
)
from ledger.money import to_decimal

if TYPE_CHECKING:
    from collections.abc import Mapping


def wrong_shape(detail: str) -> WebhookBodyInvalid:
    return WebhookBodyInvalid("wrong_shape", detail)


def require_object(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise wrong_shape(f"{name} must be a JSON object")
    return value


def optional_text(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise wrong_shape(f"{field} must be a non-empty string")
    return value


def require_text(data: Mapping[str, Any], field: str) -> str:
    value = optional_text(data, field)
    if value is None:
        raise wrong_shape(f"{field} is missing")
    return value


def optional_amount(data: Mapping[str, Any], field: str) -> Decimal | None:
    """Reads a JSON number (parsed as Decimal upstream) or a decimal string; never a float."""
    value = data.get(field)
    if value is None:
        return None
    try:
        return to_decimal(value)
    except (TypeError, ValueError, ArithmeticError) as error:
        raise wrong_shape(f"{field} is not an exact amount: {error}") from None


def optional_timestamp(data: Mapping[str, Any], field: str) -> datetime | None:
    text = optional_text(data, field)
    if text is None:
        return None
    try:
        # Python 3.11 reads a trailing "Z" itself.
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise wrong_shape(f"{field} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise wrong_shape(f"{field} has no time zone")
    return moment


def content_key(value: Any, prefix: str = f"{PROVIDER_ID}:") -> str:
    return prefix + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TransactionView:
    """The fields of one transaction that the ledger cares about."""

    transaction_id: str
    order_reference: str | None  # externalReference, else transactionReference
    amount: Decimal | None
    currency: str | None
    failure_reason: str | None
    from_account: str | None
    at: datetime | None

    @classmethod
    def read(
        cls, data: Mapping[str, Any], *, id_field: str, at: datetime | None
    ) -> TransactionView:
        # The document uses both names for the merchant's reference: `transactionReference` in
        # its event handler, `externalReference` in its e-commerce example and on create.
        reference = optional_text(data, "externalReference") or optional_text(
            data, "transactionReference"
        )
        return cls(
            transaction_id=require_text(data, id_field),
            order_reference=reference,
            amount=optional_amount(data, "amount"),
            currency=optional_text(data, "currencyCode"),
            failure_reason=optional_text(data, "failureReason"),
            from_account=optional_text(data, "fromAccountId"),
            at=at,
        )

    def money(self) -> tuple[Decimal, str]:
        if self.amount is None or self.currency is None:
            raise wrong_shape("a completed transaction needs amount and currencyCode")
        if self.amount <= 0:
            raise wrong_shape("a completed transaction's amount must be positive")
        return self.amount, self.currency


def payment_update(view: TransactionView, status_word: str) -> PaymentUpdate:
    """An incoming transaction: once COMPLETED, its amount is one deposit named by its id."""
    deposits: tuple[DepositReport, ...] = ()
    if status_word == STATUS_COMPLETED:
        amount, currency = view.money()
        deposits = (
            DepositReport(
                deposit_id=view.transaction_id,
                amount=amount,
                currency=currency,
                confirmed=True,  # the engine reports a transaction only once it is final
                observed_at=view.at,
            ),
        )
    return PaymentUpdate(
        reference=PaymentReference(
            PROVIDER_ID, provider_ref=view.transaction_id, order_id=view.order_reference
        ),
        deposits=deposits,
        status=PaymentStatusReport(
            status_word=status_word,
            outcome=payment_outcome(status_word, view.failure_reason),
            reported_at=view.at,
        ),
    )


def withdrawal_update(view: TransactionView, status_word: str) -> WithdrawalUpdate:
    """An outgoing transaction from the merchant account to a withdrawal address."""
    completed = status_word == STATUS_COMPLETED
    return WithdrawalUpdate(
        reference=WithdrawalReference(
            PROVIDER_ID, provider_ref=view.transaction_id, request_id=view.order_reference
        ),
        status_word=status_word,
        outcome=withdrawal_outcome(status_word),
        amount_sent=view.amount if completed else None,
        currency=view.currency,
        failure_reason=view.failure_reason,
        reported_at=view.at,
    )

"""Payment Engine's words and how the ledger reads them.

The document names one set of transaction status words (PENDING, PROCESSING, COMPLETED, FAILED)
and four webhook event types. It has no word for expiry, partial or over payment, nor for manual
review; see `payment_outcome` for the one reading of `failureReason` the adapter adds.
"""

from __future__ import annotations

from ledger.commands import ProviderPaymentOutcome, ProviderWithdrawalOutcome

PROVIDER_ID = "payment_engine"

EVENT_TRANSACTION_CREATED = "transaction.created"
EVENT_TRANSACTION_COMPLETED = "transaction.completed"
EVENT_TRANSACTION_FAILED = "transaction.failed"
EVENT_BALANCE_UPDATED = "account.balance.updated"

STATUS_PENDING = "PENDING"
STATUS_PROCESSING = "PROCESSING"
STATUS_COMPLETED = "COMPLETED"
STATUS_FAILED = "FAILED"

# The document gives no list of failure reasons. The adapter reads this one as the provider's
# expiry word, and the sandbox sends it for its expiry scenarios; any other reason is a failure.
FAILURE_REASON_EXPIRED = "EXPIRED"

_PAYMENT_OUTCOMES = {
    STATUS_PENDING: ProviderPaymentOutcome.PENDING,
    # Funds are moving but the transaction is not final: the nearest ledger word is confirming.
    STATUS_PROCESSING: ProviderPaymentOutcome.CONFIRMING,
    STATUS_COMPLETED: ProviderPaymentOutcome.PAID,
    STATUS_FAILED: ProviderPaymentOutcome.FAILED,
}

_WITHDRAWAL_OUTCOMES = {
    # A PENDING outgoing transaction has been accepted and waits to be processed.
    STATUS_PENDING: ProviderWithdrawalOutcome.SUBMITTED,
    STATUS_PROCESSING: ProviderWithdrawalOutcome.PROCESSING,
    STATUS_COMPLETED: ProviderWithdrawalOutcome.COMPLETED,
    STATUS_FAILED: ProviderWithdrawalOutcome.FAILED,
}


def payment_outcome(status_word: str, failure_reason: str | None = None) -> ProviderPaymentOutcome:
    """Normalizes the status of an incoming transaction; unknown words are UNKNOWN, not errors."""
    outcome = _PAYMENT_OUTCOMES.get(status_word, ProviderPaymentOutcome.UNKNOWN)
    if outcome is ProviderPaymentOutcome.FAILED and failure_reason == FAILURE_REASON_EXPIRED:
        return ProviderPaymentOutcome.EXPIRED
    return outcome


def withdrawal_outcome(status_word: str) -> ProviderWithdrawalOutcome:
    """Normalizes the status of an outgoing transaction; unknown words are UNKNOWN."""
    return _WITHDRAWAL_OUTCOMES.get(status_word, ProviderWithdrawalOutcome.UNKNOWN)

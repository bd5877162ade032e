"""The Withdrawal aggregate: a payout whose funds are reserved on request and released on failure.

Transitions follow one table; a transition outside it raises a named error, and a provider
repeating the state a withdrawal is already in changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from eventsourcing.domain import event

from ledger.commands import ProviderWithdrawalOutcome, WithdrawalUpdate
from ledger.errors import (
    AmountMustBePositive,
    WithdrawalAlreadyFinal,
    WithdrawalTransitionNotAllowed,
)
from ledger.money import Money, quantize_exact
from ledger.recording import ProviderRecordedAggregate, utc


class WithdrawalStatus(StrEnum):
    REQUESTED = "requested"
    # The create went out and its answer was lost: funds stay reserved until the provider says.
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    PROCESSING = "processing"
    MANUAL_REVIEW = "manual_review"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset(
    {WithdrawalStatus.COMPLETED, WithdrawalStatus.FAILED, WithdrawalStatus.CANCELLED}
)

_ALLOWED: dict[WithdrawalStatus, frozenset[WithdrawalStatus]] = {
    WithdrawalStatus.REQUESTED: frozenset(
        {
            WithdrawalStatus.SUBMITTING,
            WithdrawalStatus.SUBMITTED,
            # A provider may answer the request by rejecting it, or report progress before the
            # create response has been recorded (webhooks can overtake responses).
            WithdrawalStatus.PROCESSING,
            WithdrawalStatus.MANUAL_REVIEW,
            WithdrawalStatus.COMPLETED,
            WithdrawalStatus.FAILED,
            WithdrawalStatus.CANCELLED,
        }
    ),
    WithdrawalStatus.SUBMITTING: frozenset(
        {
            WithdrawalStatus.SUBMITTED,
            WithdrawalStatus.PROCESSING,
            WithdrawalStatus.MANUAL_REVIEW,
            WithdrawalStatus.COMPLETED,
            WithdrawalStatus.FAILED,
            WithdrawalStatus.CANCELLED,
        }
    ),
    WithdrawalStatus.SUBMITTED: frozenset(
        {
            WithdrawalStatus.PROCESSING,
            WithdrawalStatus.MANUAL_REVIEW,
            WithdrawalStatus.COMPLETED,
            WithdrawalStatus.FAILED,
            WithdrawalStatus.CANCELLED,
        }
    ),
    WithdrawalStatus.PROCESSING: frozenset(
        {WithdrawalStatus.MANUAL_REVIEW, WithdrawalStatus.COMPLETED, WithdrawalStatus.FAILED}
    ),
    WithdrawalStatus.MANUAL_REVIEW: frozenset(
        {
            WithdrawalStatus.PROCESSING,
            WithdrawalStatus.COMPLETED,
            WithdrawalStatus.FAILED,
            WithdrawalStatus.CANCELLED,
        }
    ),
}

_OUTCOME_TO_STATUS = {
    ProviderWithdrawalOutcome.SUBMITTED: WithdrawalStatus.SUBMITTED,
    ProviderWithdrawalOutcome.PROCESSING: WithdrawalStatus.PROCESSING,
    ProviderWithdrawalOutcome.MANUAL_REVIEW: WithdrawalStatus.MANUAL_REVIEW,
    ProviderWithdrawalOutcome.COMPLETED: WithdrawalStatus.COMPLETED,
    ProviderWithdrawalOutcome.FAILED: WithdrawalStatus.FAILED,
    ProviderWithdrawalOutcome.CANCELLED: WithdrawalStatus.CANCELLED,
}


class Withdrawal(ProviderRecordedAggregate):
    @event("Requested")
    def __init__(  # noqa: PLR0913 - the facts of a withdrawal request
        self,
        provider: str,
        request_id: str,
        amount: Decimal,
        currency: str,
        address: str,
        pay_currency: str | None = None,
        customer_id: str | None = None,
        fee_platform: Decimal | None = None,
        fee_network: Decimal | None = None,
    ) -> None:
        self._start_recording()
        self.provider = provider
        self.request_id = request_id
        self.requested = Money.of(amount, currency)
        self.address = address
        self.pay_currency = pay_currency
        self.customer_id = customer_id
        self.fee = Money.of((fee_platform or Decimal(0)) + (fee_network or Decimal(0)), currency)
        self.fee_platform = fee_platform
        self.fee_network = fee_network
        self.status = WithdrawalStatus.REQUESTED
        self.provider_ref: str | None = None
        self.provider_status = ""
        self.provider_outcome = ""
        self.tx_hash: str | None = None
        self.sent: Money | None = None
        self.failure_reason: str | None = None
        # When the ledger noticed no progress for too long; any status change clears it.
        self.stuck_since: datetime | None = None

    @classmethod
    def request(
        cls,
        *,
        provider: str,
        request_id: str,
        amount: Money,
        address: str,
        pay_currency: str | None = None,
        customer_id: str | None = None,
    ) -> Withdrawal:
        if not amount.is_positive():
            raise AmountMustBePositive(f"withdrawal amount must be positive, got {amount}")
        return cls(
            provider=provider,
            request_id=request_id,
            amount=amount.amount,
            currency=amount.currency,
            address=address,
            pay_currency=pay_currency,
            customer_id=customer_id,
        )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def reserved(self) -> Money:
        """Funds held for this withdrawal: all of it until it completes or is released."""
        if self.is_final:
            return Money.zero(self.requested.currency)
        return self.requested

    def _check_transition(self, target: WithdrawalStatus) -> bool:
        """True when the transition should happen, False when it is a harmless repeat."""
        if target == self.status:
            return False
        if self.is_final:
            raise WithdrawalAlreadyFinal(f"withdrawal is {self.status}; cannot become {target}")
        if target not in _ALLOWED[self.status]:
            raise WithdrawalTransitionNotAllowed(f"{self.status} cannot become {target}")
        return True

    # ------------------------------------------------------------------ commands

    def submit(
        self,
        provider_ref: str,
        provider_status: str,
        fee_platform: Decimal | None = None,
        fee_network: Decimal | None = None,
    ) -> None:
        if self._check_transition(WithdrawalStatus.SUBMITTED):
            self._submitted(
                provider_ref=provider_ref,
                provider_status=provider_status,
                fee_platform=fee_platform,
                fee_network=fee_network,
            )

    def note_outcome_unknown(self, reason: str) -> None:
        """The create's answer was lost (timeout, dropped connection, crash): the funds stay
        reserved, since the provider may be paying out, until someone asks it."""
        if self._check_transition(WithdrawalStatus.SUBMITTING):
            self._moved(status=WithdrawalStatus.SUBMITTING.value)

    @property
    def awaits_provider_answer(self) -> bool:
        """Recorded, but whether the provider took the create is not known yet."""
        return self.status in {WithdrawalStatus.REQUESTED, WithdrawalStatus.SUBMITTING}

    @property
    def holds_request_id(self) -> bool:
        """Whether this withdrawal keeps its request id from a new request: all but those that
        ended before the provider ever took them (refused, or never sent)."""
        return not (self.is_final and self.provider_ref is None)

    def apply_update(self, update: WithdrawalUpdate, *, verified: bool) -> None:
        self._provider_status_reported(
            status_word=update.status_word, outcome=update.outcome.value, verified=verified
        )
        target = _OUTCOME_TO_STATUS.get(update.outcome)
        if not verified or target is None:
            return  # kept for the record; an unauthenticated or unknown word moves nothing
        if target is WithdrawalStatus.COMPLETED:
            self.complete(update.tx_hash, update.amount_sent)
        elif target is WithdrawalStatus.FAILED:
            self.fail(update.failure_reason or update.status_word)
        elif target is WithdrawalStatus.CANCELLED:
            self.cancel(update.failure_reason or update.status_word)
        elif target is WithdrawalStatus.SUBMITTED:
            if self._check_transition(target):
                self._submitted(
                    provider_ref=update.reference.provider_ref or "",
                    provider_status=update.status_word,
                    fee_platform=None,
                    fee_network=None,
                )
        elif self._check_transition(target):
            self._moved(status=target.value)

    def start_processing(self) -> None:
        if self._check_transition(WithdrawalStatus.PROCESSING):
            self._moved(status=WithdrawalStatus.PROCESSING.value)

    def require_manual_review(self) -> None:
        if self._check_transition(WithdrawalStatus.MANUAL_REVIEW):
            self._moved(status=WithdrawalStatus.MANUAL_REVIEW.value)

    def complete(self, tx_hash: str | None, amount_sent: Decimal | None) -> None:
        if self._check_transition(WithdrawalStatus.COMPLETED):
            sent = self.requested.amount - self.fee.amount if amount_sent is None else amount_sent
            self._completed(
                tx_hash=tx_hash, amount_sent=quantize_exact(sent, self.requested.currency)
            )

    def fail(self, reason: str) -> None:
        if self._check_transition(WithdrawalStatus.FAILED):
            self._failed(reason=reason)

    def cancel(self, reason: str) -> None:
        if self._check_transition(WithdrawalStatus.CANCELLED):
            self._cancelled(reason=reason)

    def notice_stuck(self, at: datetime) -> None:
        """The ledger's clock says the provider has gone quiet on an open withdrawal."""
        if not self.is_final and self.stuck_since is None:
            self._stuck_noticed(at=utc(at))

    # ------------------------------------------------------------------ events

    @event("Submitted")
    def _submitted(
        self,
        provider_ref: str,
        provider_status: str,
        fee_platform: Decimal | None,
        fee_network: Decimal | None,
    ) -> None:
        self.status = WithdrawalStatus.SUBMITTED
        self.stuck_since = None
        self.provider_ref = provider_ref or self.provider_ref
        self.provider_status = provider_status
        if fee_platform is not None or fee_network is not None:
            self.fee_platform = fee_platform
            self.fee_network = fee_network
            self.fee = Money.of(
                (fee_platform or Decimal(0)) + (fee_network or Decimal(0)),
                self.requested.currency,
            )

    @event("StatusChanged")
    def _moved(self, status: str) -> None:
        self.status = WithdrawalStatus(status)
        self.stuck_since = None

    @event("StuckNoticed")
    def _stuck_noticed(self, at: datetime) -> None:
        self.stuck_since = at

    @event("ProviderStatusReported")
    def _provider_status_reported(self, status_word: str, outcome: str, verified: bool) -> None:
        self.provider_status = status_word
        self.provider_outcome = outcome

    @event("Completed")
    def _completed(self, tx_hash: str | None, amount_sent: Decimal) -> None:
        self.status = WithdrawalStatus.COMPLETED
        self.stuck_since = None
        self.tx_hash = tx_hash
        self.sent = Money.of(amount_sent, self.requested.currency)

    @event("Failed")
    def _failed(self, reason: str) -> None:
        self.status = WithdrawalStatus.FAILED
        self.stuck_since = None
        self.failure_reason = reason

    @event("Cancelled")
    def _cancelled(self, reason: str) -> None:
        self.status = WithdrawalStatus.CANCELLED
        self.stuck_since = None
        self.failure_reason = reason

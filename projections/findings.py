"""Reconciliation findings: what a payment's or withdrawal's state says finance should look at.

Three-way: expected (the request), received (funds the ledger accepted), provider-reported (the
provider's status word, amounts and balances). A finding exists while its condition holds; the
projection opens an item when one appears and clears it when a later event makes it go away.

Findings that only record a fact finance has to act on (overpaid, paid_late, expired_with_funds,
duplicate_deposit) clear when finance settles the payment: settling is the act of dealing with it.

A late payment is one finding, paid_late, never also expired_with_funds, overpaid or a
status_mismatch that only says the funds came late: listed apart, they count the same funds
two or three times (docs/accounting.md, "One late payment, one item").
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from ledger.commands import ProviderPaymentOutcome
from ledger.payment import Deposit, Payment, PaymentStatus, Submission
from ledger.withdrawal import Withdrawal, WithdrawalStatus


class Reason(StrEnum):
    UNDERPAID = "underpaid"
    OVERPAID = "overpaid"
    EXPIRED_WITH_FUNDS = "expired_with_funds"
    PAID_LATE = "paid_late"
    STATUS_MISMATCH = "status_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    UNMATCHED = "unmatched"
    UNVERIFIED = "unverified"
    STALE = "stale"
    DUPLICATE_DEPOSIT = "duplicate_deposit"
    WITHDRAWAL_STUCK = "withdrawal_stuck"
    MANUAL_REVIEW = "manual_review"
    PROVIDER_BALANCE_MISMATCH = "provider_balance_mismatch"
    # A create whose answer was lost, at a provider the ledger cannot ask by our id.
    PROVIDER_OUTCOME_UNKNOWN = "provider_outcome_unknown"


@dataclass(frozen=True, slots=True)
class Finding:
    reason: Reason
    currency: str
    expected: Decimal | None
    received: Decimal | None
    provider_reported: Decimal | None
    difference: Decimal
    # The provider's last status word, where it gave one: with `provider_reported` (its amount or
    # balance) the third side of the comparison.
    provider_status: str | None = None


_PROVIDER_PAID = {ProviderPaymentOutcome.PAID.value, ProviderPaymentOutcome.OVERPAID.value}
_PROVIDER_NOT_PAID = {
    ProviderPaymentOutcome.FAILED.value,
    ProviderPaymentOutcome.EXPIRED.value,
    ProviderPaymentOutcome.PARTIALLY_PAID.value,
}
_PROVIDER_FINAL = _PROVIDER_PAID | _PROVIDER_NOT_PAID | {ProviderPaymentOutcome.SETTLING.value}
_SETTLEMENT_CLEARS = {
    Reason.OVERPAID,
    Reason.PAID_LATE,
    Reason.EXPIRED_WITH_FUNDS,
    Reason.DUPLICATE_DEPOSIT,
}
_AMOUNT_REFUSALS = {"deposit_amount_must_not_change", "currencies_must_match"}


def payment_findings(payment: Payment) -> dict[Reason, Finding]:
    if payment.submission is Submission.SUBMITTING:
        if payment.submission_unknown is None:
            return {}
        # `expected` is still the price: the provider never said what must arrive.
        unknown = _payment_finding(payment, Reason.PROVIDER_OUTCOME_UNKNOWN, payment.price.amount)
        return {unknown.reason: unknown}
    found = _money_findings(payment) + _provider_findings(payment)
    if payment.settled:
        found = [f for f in found if f.reason not in _SETTLEMENT_CLEARS]
    return {f.reason: f for f in found}


def _payment_finding(payment: Payment, reason: Reason, difference: Decimal) -> Finding:
    """Every payment finding carries all three sides: what was asked, what the ledger received,
    and what the provider said (its paid amount and status word), whatever the reason. Only
    the provider's authenticated word counts as its word: a forged delivery says nothing."""
    said = payment.provider_status_verified
    return Finding(
        reason,
        payment.expected.currency,
        payment.expected.amount,
        payment.received.amount,
        payment.provider_amount_reported if said else None,
        difference,
        (payment.provider_status or None) if said else None,
    )


def _money_findings(payment: Payment) -> list[Finding]:
    """What the funds themselves say, against what was asked."""
    expected = payment.expected.amount
    received = payment.received.amount
    status = payment.status
    found: list[Finding] = []
    if status in {PaymentStatus.PENDING, PaymentStatus.CONFIRMING} and 0 < received < expected:
        found.append(_payment_finding(payment, Reason.UNDERPAID, expected - received))
    closed = status in {PaymentStatus.EXPIRED, PaymentStatus.FAILED}
    late = [d for d in payment.deposits.values() if d.verified and payment.is_late(d)]
    if late:
        # One late payment, one item: it stands for expired_with_funds and overpaid, which
        # would count the same funds again.
        found.append(_payment_finding(payment, Reason.PAID_LATE, _held_late(payment, late)))
    elif closed and received > 0:
        found.append(_payment_finding(payment, Reason.EXPIRED_WITH_FUNDS, received))
    elif payment.overpaid.is_positive():
        found.append(_payment_finding(payment, Reason.OVERPAID, payment.overpaid.amount))
    if payment.unverified.is_positive():
        found.append(_payment_finding(payment, Reason.UNVERIFIED, payment.unverified.amount))
    repeated = sum(
        (payment.deposits[d].amount * n for d, n in payment.repeated_deposit_reports.items()),
        Decimal(0),
    )
    if repeated:
        found.append(_payment_finding(payment, Reason.DUPLICATE_DEPOSIT, repeated))
    return found


def _held_late(payment: Payment, late: list[Deposit]) -> Decimal:
    """What a late payment holds beyond what it can take: everything once it expired or failed,
    the excess once it completed, the late funds while its expiry is not yet recorded; late
    unconfirmed funds included (finance sees them coming)."""
    unconfirmed = sum((d.amount for d in late if not d.confirmed), Decimal(0))
    if payment.status in {PaymentStatus.EXPIRED, PaymentStatus.FAILED}:
        return payment.received.amount + unconfirmed
    if payment.status is PaymentStatus.COMPLETED:
        return payment.overpaid.amount + unconfirmed
    return sum((d.amount for d in late), Decimal(0))


def _provider_findings(payment: Payment) -> list[Finding]:
    """What the provider says, against what the ledger holds."""
    expected = payment.expected.amount
    received = payment.received.amount
    reported = payment.provider_amount_reported
    found: list[Finding] = []
    if _status_disagrees(payment) and not _only_late(payment):
        found.append(_payment_finding(payment, Reason.STATUS_MISMATCH, expected - received))
    seen = received + payment.pending.amount
    if reported is not None and payment.provider_status_verified and reported != seen:
        found.append(_payment_finding(payment, Reason.AMOUNT_MISMATCH, reported - seen))
    elif any(code in _AMOUNT_REFUSALS for code in payment.refused_deliveries.values()):
        found.append(_payment_finding(payment, Reason.AMOUNT_MISMATCH, Decimal(0)))
    if payment.expired_by == "clock" and payment.provider_outcome not in _PROVIDER_FINAL:
        found.append(_payment_finding(payment, Reason.STALE, expected - received))
    return found


def _status_disagrees(payment: Payment) -> bool:
    """The provider's final word against the ledger's money-derived status."""
    if not payment.provider_status_verified:
        return False
    completed = payment.status is PaymentStatus.COMPLETED
    if payment.provider_outcome in _PROVIDER_PAID:
        return not completed
    if payment.provider_outcome in _PROVIDER_NOT_PAID:
        return completed
    return False


def _only_late(payment: Payment) -> bool:
    """The provider calls paid a payment the ledger holds in full but expired because the funds
    came late: the disagreement is the time, which the paid_late item already states."""
    return (
        payment.late
        and payment.status is not PaymentStatus.COMPLETED
        and payment.provider_outcome in _PROVIDER_PAID
        and payment.received.amount >= payment.expected.amount
    )


def withdrawal_findings(withdrawal: Withdrawal) -> dict[Reason, Finding]:
    requested = withdrawal.requested.amount
    sent = withdrawal.sent.amount if withdrawal.sent is not None else None

    def finding(reason: Reason, difference: Decimal) -> Finding:
        status = withdrawal.provider_status or None
        currency = withdrawal.requested.currency
        return Finding(reason, currency, requested, sent, None, difference, status)

    found: list[Finding] = []
    if withdrawal.status is WithdrawalStatus.SUBMITTING:
        found.append(finding(Reason.PROVIDER_OUTCOME_UNKNOWN, requested))
    if withdrawal.stuck_since is not None and not withdrawal.is_final:
        found.append(finding(Reason.WITHDRAWAL_STUCK, requested))
    if withdrawal.status is WithdrawalStatus.MANUAL_REVIEW:
        found.append(finding(Reason.MANUAL_REVIEW, requested))
    if withdrawal.refused_deliveries:
        # The provider said something the withdrawal's state cannot take (e.g. completed after
        # it failed): both words are on record, and a person has to decide.
        found.append(finding(Reason.STATUS_MISMATCH, requested))
    if sent is not None and sent + withdrawal.fee.amount != requested:
        found.append(finding(Reason.AMOUNT_MISMATCH, requested - withdrawal.fee.amount - sent))
    return {f.reason: f for f in found}

"""The chart of accounts and the postings each payment or withdrawal state stands for.

The journal is derived, not hand-written per event type: for a subject (payment or withdrawal)
`target_postings` says what its current state should hold in every account, and the entry for an
event is the difference between the targets after the event and before it. That makes every entry
balanced by construction (each target set balances), makes corrections reversing entries (a target
that shrinks posts the opposite sign), and makes replay equal live (the same events give the same
states, so the same differences).

Signs: debit positive, credit negative. Over all accounts of one currency, posted sums to zero and
so does pending (reservations count as pending).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from ledger.payment import Payment, PaymentStatus
from ledger.withdrawal import Withdrawal, WithdrawalStatus


class Kind(StrEnum):
    POSTED = "posted"
    PENDING = "pending"  # unconfirmed funds, and the debit side of a reservation
    RESERVED = "reserved"  # the credit side of a reservation: lowers `available`, not `posted`


PAYMENTS_RECEIVED = "payments:received"
OVERPAYMENT_SUSPENSE = "suspense:overpayment"
UNDERPAYMENT_SUSPENSE = "suspense:underpayment"  # partial funds, and funds of expired payments
UNMATCHED_SUSPENSE = "suspense:unmatched"
MERCHANT_PAYABLE = "merchant:payable"
WITHDRAWALS_IN_FLIGHT = "withdrawals:in_flight"
FEES = "fees:withdrawals"


def provider_funds(provider: str) -> str:
    """Funds the ledger holds at a provider (an asset: debit positive)."""
    return f"provider:{provider}:funds"


@dataclass(frozen=True, slots=True, order=True)
class PostingKey:
    account: str
    currency: str
    kind: Kind


Postings = dict[PostingKey, Decimal]


def _add(postings: Postings, account: str, currency: str, kind: Kind, amount: Decimal) -> None:
    if amount:
        key = PostingKey(account, currency, kind)
        postings[key] = postings.get(key, Decimal(0)) + amount


def payment_targets(payment: Payment) -> Postings:
    """What a payment's authenticated funds stand for now.

    Confirmed funds are posted: up to the expected amount to `payments:received` (or, once finance
    settled the payment, to the merchant's payable) when the payment completed, the excess to
    overpayment suspense; all of it to underpayment suspense while the payment is not complete
    (partial, expired or failed with funds). Unconfirmed funds are pending. Funds from deliveries
    the ledger could not authenticate are not money yet and post nothing.
    """
    postings: Postings = {}
    currency = payment.expected.currency
    funds = provider_funds(payment.provider)
    received = payment.received.amount
    pending = payment.pending.amount
    _add(postings, funds, currency, Kind.POSTED, received)
    if payment.status is PaymentStatus.COMPLETED:
        kept = min(received, payment.expected.amount)
        _add(
            postings,
            MERCHANT_PAYABLE if payment.settled else PAYMENTS_RECEIVED,
            currency,
            Kind.POSTED,
            -kept,
        )
        _add(postings, OVERPAYMENT_SUSPENSE, currency, Kind.POSTED, -(received - kept))
    else:
        _add(postings, UNDERPAYMENT_SUSPENSE, currency, Kind.POSTED, -received)
    _add(postings, funds, currency, Kind.PENDING, pending)
    _add(postings, PAYMENTS_RECEIVED, currency, Kind.PENDING, -pending)
    return postings


def withdrawal_targets(withdrawal: Withdrawal) -> Postings:
    """Reserved while open; on completion the funds leave the provider, split into what was sent
    (paid out of the merchant's payable) and the fee; released (nothing) on failure."""
    postings: Postings = {}
    currency = withdrawal.requested.currency
    funds = provider_funds(withdrawal.provider)
    reserved = withdrawal.reserved.amount
    _add(postings, WITHDRAWALS_IN_FLIGHT, currency, Kind.PENDING, reserved)
    _add(postings, funds, currency, Kind.RESERVED, -reserved)
    if withdrawal.status is WithdrawalStatus.COMPLETED and withdrawal.sent is not None:
        sent = withdrawal.sent.amount
        fee = withdrawal.fee.amount
        _add(postings, MERCHANT_PAYABLE, currency, Kind.POSTED, sent)
        _add(postings, FEES, currency, Kind.POSTED, fee)
        _add(postings, funds, currency, Kind.POSTED, -(sent + fee))
    return postings


def unmatched_targets(provider: str, deposits: list[tuple[Decimal, str, bool]]) -> Postings:
    """Authenticated funds reported for a payment the ledger does not know (yet)."""
    postings: Postings = {}
    funds = provider_funds(provider)
    for amount, currency, confirmed in deposits:
        kind = Kind.POSTED if confirmed else Kind.PENDING
        _add(postings, funds, currency, kind, amount)
        _add(postings, UNMATCHED_SUSPENSE, currency, kind, -amount)
    return postings


def difference(
    before: Mapping[PostingKey, Decimal], after: Mapping[PostingKey, Decimal]
) -> Postings:
    """The entry that takes the accounts from `before` to `after`; empty when nothing moved."""
    delta: Postings = {}
    for key in sorted(set(before) | set(after)):
        amount = after.get(key, Decimal(0)) - before.get(key, Decimal(0))
        if amount:
            delta[key] = amount
    return delta


def combine(first: Mapping[PostingKey, Decimal], second: Mapping[PostingKey, Decimal]) -> Postings:
    """Both sets of postings as one, lines that cancel out dropped."""
    return difference(
        {}, {k: first.get(k, Decimal(0)) + second.get(k, Decimal(0)) for k in {**first, **second}}
    )


def is_balanced(postings: Mapping[PostingKey, Decimal]) -> bool:
    """Each currency's postings sum to zero, posted and pending (with reservations) apart."""
    sums: dict[tuple[str, bool], Decimal] = defaultdict(Decimal)
    for key, amount in postings.items():
        sums[(key.currency, key.kind is Kind.POSTED)] += amount
    return all(total == 0 for total in sums.values())

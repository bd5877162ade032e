"""What a provider delivery or response says, in the ledger's own simple types.

Provider adapters translate their payloads into these at the edge; the domain never sees a
provider's JSON shape. Amounts are Decimal in the currency named beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TypeAlias


class ProviderPaymentOutcome(StrEnum):
    """A provider's payment status word, normalized. The raw word is always kept beside it."""

    PENDING = "pending"  # waiting for funds
    CONFIRMING = "confirming"  # funds seen, not final
    PAID = "paid"  # provider says paid in full
    PARTIALLY_PAID = "partially_paid"
    OVERPAID = "overpaid"
    EXPIRED = "expired"
    FAILED = "failed"
    SETTLING = "settling"  # CoinCoin "in settlement": full, or expired with some funds
    UNKNOWN = "unknown"  # a word the adapter does not know; recorded, changes nothing


class ProviderWithdrawalOutcome(StrEnum):
    SUBMITTED = "submitted"  # provider accepted the request
    PROCESSING = "processing"
    MANUAL_REVIEW = "manual_review"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PaymentReference:
    """How a delivery names its payment: the provider's id, our order id, or both."""

    provider: str
    provider_ref: str | None = None
    order_id: str | None = None
    pay_address: str | None = None  # checked against the address the provider gave at creation


@dataclass(frozen=True, slots=True)
class WithdrawalReference:
    provider: str
    provider_ref: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class DepositReport:
    """One on-chain deposit as the provider reports it. The same deposit_id twice counts once."""

    deposit_id: str
    amount: Decimal
    currency: str
    confirmed: bool
    confirmations: int = 0
    tx_hash: str | None = None
    observed_at: datetime | None = None  # the provider's own timestamp, when it gives one
    # False when the provider named no currency and the adapter assumed one (Cryptofuse's
    # `completed`): the funds are then in whatever the payment expects.
    currency_stated: bool = True


@dataclass(frozen=True, slots=True)
class CumulativeReceivedReport:
    """A running total of funds received (CoinCoin `collected`), not a single deposit."""

    total: Decimal
    currency: str
    confirmed: bool = True
    observed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PaymentStatusReport:
    status_word: str
    outcome: ProviderPaymentOutcome
    amount_paid_reported: Decimal | None = None  # what the provider says was paid in total
    reported_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PaymentUpdate:
    """Everything one delivery says about one payment."""

    reference: PaymentReference
    deposits: tuple[DepositReport, ...] = ()
    cumulative: CumulativeReceivedReport | None = None
    status: PaymentStatusReport | None = None


@dataclass(frozen=True, slots=True)
class WithdrawalUpdate:
    reference: WithdrawalReference
    status_word: str
    outcome: ProviderWithdrawalOutcome
    tx_hash: str | None = None
    amount_sent: Decimal | None = None
    currency: str | None = None
    failure_reason: str | None = None
    reported_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProviderBalanceReport:
    """A balance the provider says it holds for us (Payment Engine, Cryptofuse)."""

    provider: str
    account: str
    currency: str
    available: Decimal
    pending: Decimal | None = None
    reported_at: datetime | None = None


ProviderFact: TypeAlias = PaymentUpdate | WithdrawalUpdate | ProviderBalanceReport


@dataclass(frozen=True, slots=True)
class Translation:
    """The facts one delivery carries, and the key that makes its redelivery a duplicate."""

    dedupe_key: str
    facts: tuple[ProviderFact, ...] = field(default_factory=tuple)
    event_type: str = ""  # the provider's own event word, for the record

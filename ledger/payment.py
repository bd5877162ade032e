"""The Payment aggregate: money facts in, status and coverage derived.

Status is never copied from a provider's word; it is derived from deposits, confirmations and
expiry, which makes it independent of the order in which the facts arrive. The provider's own word
is kept beside it so reconciliation can show where the two disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from eventsourcing.domain import event

from ledger.commands import (
    CumulativeReceivedReport,
    DepositReport,
    PaymentStatusReport,
    PaymentUpdate,
    ProviderPaymentOutcome,
)
from ledger.errors import (
    AmountMustBePositive,
    CurrenciesMustMatch,
    DepositAmountMustNotChange,
    PaymentCannotBeSettled,
    SubmissionAlreadyResolved,
)
from ledger.money import Money, quantize_exact
from ledger.recording import ProviderRecordedAggregate, utc


class PaymentStatus(StrEnum):
    SUBMITTING = "submitting"  # recorded, the provider's answer to the create not yet known
    PENDING = "pending"
    CONFIRMING = "confirming"
    COMPLETED = "completed"
    EXPIRED = "expired"
    FAILED = "failed"


_OUTCOME_RANK = {
    outcome.value: rank
    for rank, outcome in enumerate(
        [
            ProviderPaymentOutcome.UNKNOWN,
            ProviderPaymentOutcome.PENDING,
            ProviderPaymentOutcome.CONFIRMING,
            ProviderPaymentOutcome.PARTIALLY_PAID,
            ProviderPaymentOutcome.SETTLING,
            ProviderPaymentOutcome.EXPIRED,
            ProviderPaymentOutcome.FAILED,
            ProviderPaymentOutcome.PAID,
            ProviderPaymentOutcome.OVERPAID,
        ]
    )
}


class Submission(StrEnum):
    """Where the create request stands at the provider. The payment is recorded (with its
    order id claimed) before the provider is called, so that concurrent identical requests make
    one call and a lost answer leaves a payment that says so."""

    SUBMITTING = "submitting"  # the call is out, or its answer was lost
    ACCEPTED = "accepted"  # the provider created it: provider_ref and expected are its own
    REFUSED = "refused"  # the provider said no, or the call never went out: it holds nothing


class Coverage(StrEnum):
    UNPAID = "unpaid"
    PARTIAL = "partial"
    EXACT = "exact"
    OVER = "over"


@dataclass(frozen=True, slots=True)
class Deposit:
    deposit_id: str
    amount: Decimal
    tx_hash: str | None
    confirmations: int
    confirmed: bool
    verified: bool  # False while it came only through an unauthenticated delivery
    observed_at: datetime  # the provider's timestamp, else when the ledger received it


_CUMULATIVE = "cumulative:"  # deposit ids of running totals: cumulative:<total>[:above:<base>]


def _highest_total(deposits: Iterable[Deposit]) -> Decimal:
    """The highest running total the cumulative ones among `deposits` were recorded for."""
    return max(
        (
            Decimal(d.deposit_id.removeprefix(_CUMULATIVE).split(":", 1)[0])
            for d in deposits
            if d.deposit_id.startswith(_CUMULATIVE)
        ),
        default=Decimal(0),
    )


@dataclass(frozen=True, slots=True)
class DepositTotals:
    """What a payment's deposits add up to, against what it expects: the one place that says
    which deposit counts where.

    Counted once per state of the deposits, deadline and expected amount (`Deposits.totals`)."""

    received: Money  # confirmed funds from authenticated reports, late ones included
    received_on_time: Money  # of those, observed by the deadline: they complete a payment
    pending: Money  # authenticated, seen on chain, not yet confirmed
    unverified: Money  # reported only by deliveries the ledger could not authenticate
    cumulative_total: Decimal  # the highest verified running total
    late: bool  # an authenticated deposit observed after the deadline
    outstanding: Money  # expected, less what was received or is pending; never below zero
    overpaid: Money  # received beyond expected

    @classmethod
    def count(
        cls, deposits: Iterable[Deposit], deadline: datetime | None, expected: Money
    ) -> DepositTotals:
        received = received_on_time = pending = single_unverified = cumulative = Decimal(0)
        late = False
        unverified_totals: list[Deposit] = []
        for d in deposits:
            cumulative_part = d.deposit_id.startswith(_CUMULATIVE)
            if not d.verified:
                # Of unverified running totals only the part above the verified total counts.
                if cumulative_part:
                    unverified_totals.append(d)
                else:
                    single_unverified += d.amount
                continue
            observed_late = deadline is not None and d.observed_at > deadline
            late = late or observed_late
            if cumulative_part:
                cumulative += d.amount
            if not d.confirmed:
                pending += d.amount
                continue
            received += d.amount
            if not observed_late:
                received_on_time += d.amount
        above = max(_highest_total(unverified_totals) - cumulative, Decimal(0))
        currency = expected.currency

        def money(amount: Decimal) -> Money:  # most totals are zero: those are built once
            return Money(amount, currency) if amount > 0 else Money.zero(currency)

        return cls(
            received=money(received),
            received_on_time=money(received_on_time),
            pending=money(pending),
            unverified=money(single_unverified + above),
            cumulative_total=cumulative,
            late=late,
            outstanding=money(expected.amount - received - pending),
            overpaid=money(received - expected.amount),
        )


class Deposits(dict[str, Deposit]):
    """A payment's deposits by id. A mapping is never changed once built (each event that
    changes a deposit builds a new one), so what its deposits add up to is kept with it, counted
    on the first read: not once per event (a replay would count a long history again and again),
    nor once per read (a projection reads a state's amounts many times). Equality is the
    deposits' alone."""

    __slots__ = ("_counted",)

    def __init__(self, deposits: Mapping[str, Deposit] | None = None) -> None:
        super().__init__(deposits or {})
        self._counted: tuple[datetime | None, Money, DepositTotals] | None = None

    def totals(self, deadline: datetime | None, expected: Money) -> DepositTotals:
        counted = self._counted
        if counted is None or counted[0] != deadline or counted[1] is not expected:
            counted = (deadline, expected, DepositTotals.count(self.values(), deadline, expected))
            self._counted = counted
        return counted[2]


class Payment(ProviderRecordedAggregate):
    """A request for funds at one provider, and everything that arrived for it."""

    @event("Created")
    def __init__(  # noqa: PLR0913 - the creation facts of a payment
        self,
        provider: str,
        provider_ref: str,
        order_id: str,
        expected_amount: Decimal,
        expected_currency: str,
        price_amount: Decimal,
        price_currency: str,
        expires_at: datetime | None,
        customer_id: str | None = None,
        pay_address: str | None = None,
        provider_status: str = "",
        metadata: dict[str, Any] | None = None,
        submitting: bool = False,  # noqa: FBT002 - events stored before intents lack it
    ) -> None:
        self._start_recording()
        # Until the provider answers, provider_ref is empty and `expected` is the price.
        self.submission = Submission.SUBMITTING if submitting else Submission.ACCEPTED
        self.submission_unknown: str | None = None
        self.provider = provider
        self.provider_ref = provider_ref
        self.order_id = order_id
        self.expected = Money.of(expected_amount, expected_currency)
        self.price = Money.of(price_amount, price_currency)
        self.expires_at = expires_at
        self.customer_id = customer_id
        self.pay_address = pay_address
        self.metadata = dict(metadata or {})
        self.deposits = Deposits()
        self.provider_status = provider_status
        self.provider_outcome = ProviderPaymentOutcome.PENDING.value
        self.provider_amount_reported: Decimal | None = None
        self.provider_status_at: datetime | None = None
        self.provider_status_verified = False
        # Reports of an already known deposit by another delivery (not its confirmation).
        self.repeated_deposit_reports: dict[str, int] = {}
        self.expired_at: datetime | None = None
        self.expired_by = ""
        self.failed_reason: str | None = None
        self.settled = False
        self.settled_at: datetime | None = None

    @classmethod
    def create(  # noqa: PLR0913 - mirrors the creation facts
        cls,
        *,
        provider: str,
        provider_ref: str,
        order_id: str,
        expected: Money,
        price: Money,
        expires_at: datetime | None,
        customer_id: str | None = None,
        pay_address: str | None = None,
        provider_status: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> Payment:
        if not expected.is_positive():
            raise AmountMustBePositive(f"expected amount must be positive, got {expected}")
        if not price.is_positive():
            raise AmountMustBePositive(f"price must be positive, got {price}")
        return cls(
            provider=provider,
            provider_ref=provider_ref,
            order_id=order_id,
            expected_amount=expected.amount,
            expected_currency=expected.currency,
            price_amount=price.amount,
            price_currency=price.currency,
            expires_at=utc(expires_at) if expires_at else None,
            customer_id=customer_id,
            pay_address=pay_address,
            provider_status=provider_status,
            metadata=metadata,
        )

    @classmethod
    def intend(
        cls,
        *,
        provider: str,
        order_id: str,
        price: Money,
        expires_at: datetime | None,
        customer_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Payment:
        """The payment as requested, recorded before the provider is asked. `expires_at` is the
        ledger's own deadline (from `expires_in_minutes`), kept unless the provider sets one."""
        if not price.is_positive():
            raise AmountMustBePositive(f"price must be positive, got {price}")
        return cls(
            provider=provider,
            provider_ref="",
            order_id=order_id,
            expected_amount=price.amount,
            expected_currency=price.currency,
            price_amount=price.amount,
            price_currency=price.currency,
            expires_at=utc(expires_at) if expires_at else None,
            customer_id=customer_id,
            metadata=metadata,
            submitting=True,
        )

    # ------------------------------------------------------------------ submission

    def accept_submission(
        self,
        *,
        provider_ref: str,
        expected: Money,
        expires_at: datetime | None,
        provider_status: str,
        pay_address: str | None = None,
        payment_url: str | None = None,
    ) -> None:
        """The provider created the payment (its answer, or found later by our order id)."""
        self._check_submitting()
        if not expected.is_positive():
            raise AmountMustBePositive(f"expected amount must be positive, got {expected}")
        self._submitted(
            provider_ref=provider_ref,
            expected_amount=expected.amount,
            expected_currency=expected.currency,
            expires_at=utc(expires_at) if expires_at else None,
            provider_status=provider_status,
            pay_address=pay_address,
            payment_url=payment_url,
        )

    def refuse_submission(self, reason: str) -> None:
        """The provider refused the create, or it never went out: the payment ends failed and
        holds nothing at the provider, so its order id may be asked for again."""
        self._check_submitting()
        self._submission_refused(reason=reason)

    def note_outcome_unknown(self, reason: str) -> None:
        """The create's answer was lost (timeout, dropped connection, crash): whether the
        provider holds the payment is not known until someone asks it."""
        self._check_submitting()
        if self.submission_unknown is None:
            self._submission_outcome_unknown(reason=reason)

    def _check_submitting(self) -> None:
        if self.submission is not Submission.SUBMITTING:
            raise SubmissionAlreadyResolved(f"payment submission is already {self.submission}")

    @property
    def holds_order_id(self) -> bool:
        """Whether this payment keeps its order id from a new request: all but refused ones."""
        return self.submission is not Submission.REFUSED

    # ------------------------------------------------------------------ commands

    def apply_update(self, update: PaymentUpdate, *, received_at: datetime, verified: bool) -> None:
        """Applies everything one delivery (or status query) says about this payment.

        The ledger's own clock is consulted first, so a deposit arriving after `expires_at`
        finds the payment already expired and is flagged late, whoever noticed the time.
        """
        self.expire_if_due(received_at)
        # A deposit reported again is a duplicate report only when the delivery brings nothing
        # new: providers that re-list their whole history (Cryptofuse) repeat known deposits
        # beside new facts in every delivery, and that is no duplicate.
        brings_news = any(self._adds_to(d, received_at, verified) for d in update.deposits) or (
            update.cumulative is not None
            or (update.status is not None and update.status.status_word != self.provider_status)
        )
        for deposit in update.deposits:
            self.report_deposit(
                deposit, received_at=received_at, verified=verified, repeated=not brings_news
            )
        if update.cumulative is not None:
            self.report_cumulative(update.cumulative, received_at=received_at, verified=verified)
        if update.status is not None:
            self.report_status(update.status, received_at=received_at, verified=verified)

    def _adds_to(self, report: DepositReport, received_at: datetime, verified: bool) -> bool:
        """Whether `report` would tell this payment anything about its deposit it does not know."""
        known = self.deposits.get(report.deposit_id)
        if known is None:
            return True
        observed_at = utc(report.observed_at) if report.observed_at else received_at
        return (
            (report.confirmed and not known.confirmed)
            or (verified and not known.verified)
            or observed_at < known.observed_at
        )

    def report_deposit(
        self,
        report: DepositReport,
        *,
        received_at: datetime,
        verified: bool,
        repeated: bool = False,
    ) -> None:
        """`repeated`: the report came in a delivery with nothing new (a duplicate report)."""
        currency = report.currency if report.currency_stated else self.expected.currency
        amount = self._amount_in_expected_currency(report.amount, currency)
        if amount <= 0:
            raise AmountMustBePositive(f"deposit {report.deposit_id} amount must be positive")
        known = self.deposits.get(report.deposit_id)
        # A deposit only an unauthenticated delivery reported takes the provider's verified
        # amount, so a forged report of a real deposit id cannot block the real one.
        if known is None or (known.amount != amount and verified and not known.verified):
            self._deposit_detected(
                deposit_id=report.deposit_id,
                amount=amount,
                tx_hash=report.tx_hash,
                confirmations=report.confirmations,
                confirmed=report.confirmed,
                verified=verified,
                observed_at=utc(report.observed_at) if report.observed_at else received_at,
            )
            return
        if known.amount != amount:
            raise DepositAmountMustNotChange(
                f"deposit {report.deposit_id} was {known.amount}, now reported as {amount}"
            )
        observed_at = utc(report.observed_at) if report.observed_at else received_at
        if self._adds_to(report, received_at, verified):
            # Facts about a deposit only accumulate (confirmed, verified, earliest sighting),
            # so its reports may arrive in any order and leave the same deposit behind.
            self._deposit_confirmed(
                deposit_id=report.deposit_id,
                confirmations=max(report.confirmations, known.confirmations),
                confirmed=known.confirmed or report.confirmed,
                verified=known.verified or verified,
                observed_at=min(observed_at, known.observed_at),
            )
        else:
            self._deposit_reported_again(deposit_id=report.deposit_id, duplicate=repeated)

    def report_cumulative(
        self, report: CumulativeReceivedReport, *, received_at: datetime, verified: bool
    ) -> None:
        """A running total: it becomes the deposit `cumulative:<total>` of the part above the
        highest total counted so far, so totals arriving out of order or twice never count the
        same funds again.

        Only verified totals count, so a total first reported by an unauthenticated delivery
        (an unverified deposit of the part above the highest total seen) still counts when it
        arrives verified: that deposit becomes verified, or, where it was recorded as another
        part (the totals below it were verified in another order), a verified deposit of the
        right part is added beside it, and the unverified one is then covered (`unverified`).
        """
        total = self._amount_in_expected_currency(report.total, report.currency)
        counted = self.cumulative_total
        if total <= counted:
            return
        deposit_id = f"{_CUMULATIVE}{total}"
        if verified:
            amount = total - counted
            known = self.deposits.get(deposit_id)
            if known is not None and known.amount != amount:
                deposit_id = f"{deposit_id}:above:{counted}"
        else:
            seen = _highest_total(self.deposits.values())
            if total <= seen:
                return  # nothing an unauthenticated report has not said already
            amount = total - seen
        self.report_deposit(
            DepositReport(
                deposit_id=deposit_id,
                amount=amount,
                currency=self.expected.currency,
                confirmed=report.confirmed,
                observed_at=report.observed_at,
            ),
            received_at=received_at,
            verified=verified,
        )

    def report_status(
        self, report: PaymentStatusReport, *, received_at: datetime, verified: bool
    ) -> None:
        self._provider_status_reported(
            status_word=report.status_word,
            outcome=report.outcome.value,
            amount_paid_reported=report.amount_paid_reported,
            reported_at=report.reported_at or received_at,
            verified=verified,
        )
        if not verified:
            return  # an unauthenticated word is kept for the record and decides nothing
        if report.outcome is ProviderPaymentOutcome.EXPIRED:
            self.expire(report.reported_at or received_at, by="provider")
        elif report.outcome is ProviderPaymentOutcome.FAILED and self.failed_reason is None:
            self._failed(reason=f"provider said {report.status_word}")

    def expire_if_due(self, now: datetime) -> None:
        # A payment the provider has not (yet) taken has nothing to expire at the provider.
        if self.submission is not Submission.ACCEPTED:
            return
        if self.expires_at is not None and now >= self.expires_at and self.expired_at is None:
            self.expire(self.expires_at, by="clock")

    def expire(self, at: datetime, *, by: str) -> None:
        """Expiry is kept once, at its earliest instant; a payment already paid stays paid."""
        if self.expired_at is not None and self.expired_at <= at:
            return
        self._expired(at=utc(at), by=by)

    def fail(self, reason: str) -> None:
        if self.failed_reason is None:
            self._failed(reason=reason)

    def settle(self) -> None:
        """Finance closes the payment. Funds arriving later are still kept (and show late)."""
        if self.settled:
            return
        if self.received.is_zero():
            raise PaymentCannotBeSettled("a payment with no received funds cannot be settled")
        if self.status not in {PaymentStatus.COMPLETED, PaymentStatus.EXPIRED}:
            raise PaymentCannotBeSettled(f"a {self.status} payment cannot be settled")
        self._settled()

    # ------------------------------------------------------------------ events

    @event("Submitted")
    def _submitted(
        self,
        provider_ref: str,
        expected_amount: Decimal,
        expected_currency: str,
        expires_at: datetime | None,
        provider_status: str,
        pay_address: str | None,
        payment_url: str | None,
    ) -> None:
        self.submission = Submission.ACCEPTED
        self.submission_unknown = None
        self.provider_ref = provider_ref
        self.expected = Money.of(expected_amount, expected_currency)
        self.expires_at = expires_at or self.expires_at
        self.provider_status = provider_status
        self.pay_address = pay_address
        if payment_url is not None:
            self.metadata = {**self.metadata, "payment_url": payment_url}

    @event("SubmissionRefused")
    def _submission_refused(self, reason: str) -> None:
        self.submission = Submission.REFUSED
        self.failed_reason = reason

    @event("SubmissionOutcomeUnknown")
    def _submission_outcome_unknown(self, reason: str) -> None:
        self.submission_unknown = reason

    @event("DepositDetected")
    def _deposit_detected(
        self,
        deposit_id: str,
        amount: Decimal,
        tx_hash: str | None,
        confirmations: int,
        confirmed: bool,
        verified: bool,
        observed_at: datetime,
    ) -> None:
        deposit = Deposit(
            deposit_id, amount, tx_hash, confirmations, confirmed, verified, observed_at
        )
        self.deposits = Deposits({**self.deposits, deposit_id: deposit})

    @event("DepositConfirmed")
    def _deposit_confirmed(
        self,
        deposit_id: str,
        confirmations: int,
        confirmed: bool,
        verified: bool,
        observed_at: datetime,
    ) -> None:
        deposit = replace(
            self.deposits[deposit_id],
            confirmations=confirmations,
            confirmed=confirmed,
            verified=verified,
            observed_at=observed_at,
        )
        self.deposits = Deposits({**self.deposits, deposit_id: deposit})

    @event("DepositReportedAgain")
    def _deposit_reported_again(self, deposit_id: str, duplicate: bool = True) -> None:  # noqa: FBT002 - events stored before the field existed were duplicates
        # The deposit itself is unchanged; only a report in a delivery with nothing new counts
        # as a duplicate (reconciliation's duplicate_deposit).
        if duplicate:
            self.repeated_deposit_reports = {
                **self.repeated_deposit_reports,
                deposit_id: self.repeated_deposit_reports.get(deposit_id, 0) + 1,
            }

    @event("ProviderStatusReported")
    def _provider_status_reported(
        self,
        status_word: str,
        outcome: str,
        amount_paid_reported: Decimal | None,
        reported_at: datetime,
        verified: bool,
    ) -> None:
        # The provider's newest word wins, by its own clock, so that deliveries arriving out
        # of order leave the same word behind; on a tie the more final outcome wins.
        # An unauthenticated word never hides an authenticated one (a forger could claim any
        # time); among words of the same standing the newest wins.
        if self.provider_status_verified and not verified:
            return
        current = (self.provider_status_at, _OUTCOME_RANK.get(self.provider_outcome, 0))
        incoming = (reported_at, _OUTCOME_RANK.get(outcome, 0))
        if (
            current[0] is None
            or incoming >= current
            or (verified and not self.provider_status_verified)
        ):
            self.provider_status = status_word
            self.provider_outcome = outcome
            self.provider_status_at = reported_at
            self.provider_status_verified = verified
            if amount_paid_reported is not None:
                self.provider_amount_reported = amount_paid_reported

    @event("Expired")
    def _expired(self, at: datetime, by: str) -> None:
        self.expired_at = at
        self.expired_by = by

    @event("Failed")
    def _failed(self, reason: str) -> None:
        self.failed_reason = reason

    @event("Settled")
    def _settled(self, timestamp: datetime | None = None) -> None:
        # eventsourcing passes the event's own timestamp (stored in its payload) to a parameter
        # of that name: the time of settling without a new field in the event.
        self.settled = True
        self.settled_at = timestamp

    # ------------------------------------------------------------------ derived state

    def _amount_in_expected_currency(self, amount: Decimal, currency: str) -> Decimal:
        if currency != self.expected.currency:
            raise CurrenciesMustMatch(
                f"payment expects {self.expected.currency}, deposit is in {currency}"
            )
        return quantize_exact(amount, currency)

    @property
    def totals(self) -> DepositTotals:
        return self.deposits.totals(self.deadline, self.expected)

    @property
    def cumulative_total(self) -> Decimal:
        """The highest verified running total: verified cumulative deposits hold its increments.
        Unverified ones are not counted, so that the same total arriving verified adds them."""
        return self.totals.cumulative_total

    @property
    def deadline(self) -> datetime | None:
        """The instant after which funds are late: the earlier of our expiry and the provider's."""
        expires_at, expired_at = self.expires_at, self.expired_at
        if expires_at is None or expired_at is None:
            return expired_at if expires_at is None else expires_at
        return min(expires_at, expired_at)

    def is_late(self, deposit: Deposit) -> bool:
        deadline = self.deadline
        return deadline is not None and deposit.observed_at > deadline

    @property
    def received(self) -> Money:
        """Confirmed funds from authenticated reports, late ones included."""
        return self.totals.received

    @property
    def pending(self) -> Money:
        """Seen on chain, not yet confirmed."""
        return self.totals.pending

    @property
    def unverified(self) -> Money:
        """Reported only by deliveries the ledger could not authenticate: not received. Of the
        running totals, only what the highest unverified one reports above the verified one."""
        return self.totals.unverified

    @property
    def outstanding(self) -> Money:
        return self.totals.outstanding

    @property
    def overpaid(self) -> Money:
        return self.totals.overpaid

    @property
    def late(self) -> bool:
        return self.totals.late

    @property
    def coverage(self) -> Coverage:
        received = self.received
        if received.is_zero():
            return Coverage.UNPAID
        if received < self.expected:
            return Coverage.PARTIAL
        if received == self.expected:
            return Coverage.EXACT
        return Coverage.OVER

    @property
    def status(self) -> PaymentStatus:
        """Money first: funds confirmed in time complete a payment whatever else was said."""
        if self.submission is Submission.SUBMITTING:
            return PaymentStatus.SUBMITTING
        if self.totals.received_on_time >= self.expected:
            return PaymentStatus.COMPLETED
        if self.failed_reason is not None:
            return PaymentStatus.FAILED
        if self.expired_at is not None:
            return PaymentStatus.EXPIRED
        if self.pending.is_positive():
            return PaymentStatus.CONFIRMING
        return PaymentStatus.PENDING

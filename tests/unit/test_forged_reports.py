"""What an unauthenticated delivery cannot do to a payment, in either order of arrival: block a
real deposit by reporting its id with another amount, or hide the provider's authenticated word
behind a word of its own. Also the intent's life: submitting, then accepted or refused."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.commands import DepositReport, PaymentStatusReport, ProviderPaymentOutcome
from ledger.errors import DepositAmountMustNotChange, SubmissionAlreadyResolved
from ledger.money import Money
from ledger.payment import Payment, PaymentStatus, Submission

AT = datetime(2026, 12, 1, 12, tzinfo=UTC)


def payment() -> Payment:
    return Payment.create(
        provider="cryptofuse",
        provider_ref="ref-1",
        order_id="o-1",
        expected=Money.of("100", "USDT"),
        price=Money.of("100", "USD"),
        expires_at=AT + timedelta(hours=1),
    )


GENUINE = DepositReport("dep-1", Decimal(100), "USDT", confirmed=True)
FORGED = DepositReport("dep-1", Decimal(999), "USDT", confirmed=True)


@given(forged_first=st.booleans())
def test_a_forged_amount_for_a_real_deposit_id_never_blocks_the_real_deposit(forged_first):
    subject = payment()
    reports = [(FORGED, False), (GENUINE, True)]
    for report, verified in reports if forged_first else reversed(reports):
        if verified:
            subject.report_deposit(report, received_at=AT, verified=verified)
            continue
        # The forgery after the genuine report is refused as a changed amount (kept, moves
        # nothing); before it, it is recorded unverified.
        with contextlib.suppress(DepositAmountMustNotChange):
            subject.report_deposit(report, received_at=AT, verified=verified)
    assert (Decimal("100.000000"), PaymentStatus.COMPLETED) == (
        subject.received.amount,
        subject.status,
    )
    assert subject.unverified.is_zero()


@given(forged_first=st.booleans(), forged_later_by_hours=st.integers(-48, 48))
def test_a_forged_status_word_never_hides_the_providers_authenticated_word(
    forged_first, forged_later_by_hours
):
    subject = payment()
    genuine = PaymentStatusReport("Pending", ProviderPaymentOutcome.PENDING, reported_at=AT)
    forged = PaymentStatusReport(
        "Completed",
        ProviderPaymentOutcome.PAID,
        reported_at=AT + timedelta(hours=forged_later_by_hours),
    )
    reports = [(forged, False), (genuine, True)]
    for report, verified in reports if forged_first else reversed(reports):
        subject.report_status(report, received_at=AT, verified=verified)
    assert ("Pending", True) == (subject.provider_status, subject.provider_status_verified)


def test_an_intended_payment_is_submitting_until_the_provider_answers():
    intended = Payment.intend(
        provider="payment_engine",
        order_id="o-2",
        price=Money.of("10", "USD"),
        expires_at=AT + timedelta(minutes=30),
    )
    assert (PaymentStatus.SUBMITTING, Submission.SUBMITTING) == (
        intended.status,
        intended.submission,
    )
    intended.expire_if_due(AT + timedelta(days=1))  # nothing to expire at the provider yet
    assert intended.expired_at is None
    intended.accept_submission(
        provider_ref="tx-9",
        expected=Money.of("10", "USDT"),
        expires_at=None,
        provider_status="PENDING",
    )
    # The ledger's own deadline stays where the provider sets none.
    assert (PaymentStatus.PENDING, AT + timedelta(minutes=30), "USDT") == (
        intended.status,
        intended.expires_at,
        intended.expected.currency,
    )
    with pytest.raises(SubmissionAlreadyResolved):
        intended.refuse_submission("too late")


def test_a_refused_payment_is_failed_and_frees_its_order_id():
    intended = Payment.intend(
        provider="payment_engine", order_id="o-3", price=Money.of("10", "USD"), expires_at=None
    )
    assert intended.holds_order_id
    intended.refuse_submission("provider refused: 422")
    assert (PaymentStatus.FAILED, False) == (intended.status, intended.holds_order_id)

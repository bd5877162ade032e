"""Laws of the Payment aggregate, checked over generated histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.codec import encode_pending, rebuild
from ledger.commands import (
    CumulativeReceivedReport,
    DepositReport,
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    ProviderPaymentOutcome,
)
from ledger.money import Money
from ledger.payment import Coverage, Payment, PaymentStatus
from ledger.ports import RecordedEvent

START = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = START + timedelta(minutes=30)
REF = PaymentReference("cryptofuse", "ref-1")

# A deposit's amount is fixed per id (a provider reporting another amount for the same deposit is
# a separate, named error), so ids map to amounts.
DEPOSIT_AMOUNTS = {f"d{i}": Decimal(i * 7 + 3) / Decimal(100) * 10 for i in range(6)}

deposit_reports = st.builds(
    lambda deposit_id, confirmed, minutes: DepositReport(
        deposit_id=deposit_id,
        amount=DEPOSIT_AMOUNTS[deposit_id],
        currency="USDT",
        confirmed=confirmed,
        confirmations=20 if confirmed else 1,
        observed_at=START + timedelta(minutes=minutes),
    ),
    st.sampled_from(sorted(DEPOSIT_AMOUNTS)),
    st.booleans(),
    st.integers(min_value=0, max_value=60),
)
status_reports = st.builds(
    lambda outcome, minutes: PaymentStatusReport(
        status_word=outcome.value, outcome=outcome, reported_at=START + timedelta(minutes=minutes)
    ),
    st.sampled_from(list(ProviderPaymentOutcome)),
    st.integers(min_value=0, max_value=60),
)
updates = st.builds(
    lambda deposits, status: PaymentUpdate(REF, deposits=tuple(deposits), status=status),
    st.lists(deposit_reports, max_size=3),
    st.none() | status_reports,
)
expected_amounts = st.sampled_from([Decimal(1), Decimal("3.3"), Decimal(10), Decimal("25.5")])


def new_payment(expected: Decimal) -> Payment:
    return Payment.create(
        provider="cryptofuse",
        provider_ref="ref-1",
        order_id="o-1",
        expected=Money.of(expected, "USDT"),
        price=Money.of("10", "USD"),
        expires_at=EXPIRES,
    )


def apply_all(payment: Payment, history: list[PaymentUpdate], received_at: datetime) -> None:
    for update in history:
        payment.apply_update(update, received_at=received_at, verified=True)


def snapshot(payment: Payment) -> dict:
    return {
        "status": payment.status,
        "coverage": payment.coverage,
        "late": payment.late,
        "received": payment.received,
        "pending": payment.pending,
        "outstanding": payment.outstanding,
        "overpaid": payment.overpaid,
        "deposits": {k: (d.amount, d.confirmed) for k, d in payment.deposits.items()},
        "expired_at": payment.expired_at,
        "provider_status": payment.provider_status,
    }


def replayed(payment: Payment) -> Payment:
    events = encode_pending(payment, "Payment")
    recorded = [
        RecordedEvent(0, n, e.stream_id, e.version, e.type, e.payload, e.metadata, START, b"", b"")
        for n, e in enumerate(events, start=1)
    ]
    return rebuild(recorded)


@settings(max_examples=300, deadline=None)
@given(expected_amounts, st.lists(updates, max_size=8), st.integers(0, 90))
def test_amounts_add_up_and_status_agrees_with_coverage(expected, history, minutes):
    payment = new_payment(expected)
    apply_all(payment, history, START + timedelta(minutes=minutes))
    expected_money = payment.expected
    received, pending = payment.received, payment.pending
    if pending.is_zero() or received + pending <= expected_money:
        assert expected_money == received + pending + payment.outstanding - payment.overpaid
    # Duplicate reports of one deposit count once.
    confirmed_ids = {k for k, d in payment.deposits.items() if d.confirmed}
    assert sum((DEPOSIT_AMOUNTS[k] for k in confirmed_ids), Decimal(0)) == received.amount
    coverage_by_amount = (
        Coverage.UNPAID
        if received.is_zero()
        else Coverage.PARTIAL
        if received < expected_money
        else Coverage.EXACT
        if received == expected_money
        else Coverage.OVER
    )
    assert coverage_by_amount == payment.coverage
    if payment.status is PaymentStatus.COMPLETED:
        assert payment.coverage in {Coverage.EXACT, Coverage.OVER}
    if payment.coverage in {Coverage.UNPAID, Coverage.PARTIAL}:
        assert payment.status is not PaymentStatus.COMPLETED
    assert payment.overpaid.is_positive() == (payment.coverage is Coverage.OVER)


@settings(max_examples=200, deadline=None)
@given(expected_amounts, st.lists(updates, max_size=8), st.integers(0, 90))
def test_replaying_stored_events_rebuilds_an_equal_payment(expected, history, minutes):
    payment = new_payment(expected)
    apply_all(payment, history, START + timedelta(minutes=minutes))
    assert snapshot(payment) == snapshot(replayed(payment))


@settings(max_examples=200, deadline=None)
@given(expected_amounts, st.lists(updates, min_size=1, max_size=6), st.data())
def test_any_order_and_duplication_of_updates_gives_the_same_state(expected, history, data):
    received_at = START + timedelta(minutes=5)
    in_order = new_payment(expected)
    apply_all(in_order, history, received_at)
    shuffled = data.draw(st.permutations(history))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(history), max_size=4))
    other = new_payment(expected)
    apply_all(other, duplicated, received_at)
    assert snapshot(in_order) == snapshot(other)


def test_funds_after_expiry_are_kept_and_flagged_late():
    payment = new_payment(Decimal(10))
    payment.expire_if_due(EXPIRES + timedelta(seconds=1))
    late = DepositReport("d-late", Decimal(10), "USDT", confirmed=True)
    payment.apply_update(
        PaymentUpdate(REF, deposits=(late,)),
        received_at=EXPIRES + timedelta(minutes=5),
        verified=True,
    )
    assert (PaymentStatus.EXPIRED, Coverage.EXACT, True) == (
        payment.status,
        payment.coverage,
        payment.late,
    )
    assert Money.of("10", "USDT") == payment.received


def test_unverified_deposits_are_not_received():
    payment = new_payment(Decimal(10))
    report = DepositReport("d1", Decimal(10), "USDT", confirmed=True)
    payment.apply_update(PaymentUpdate(REF, deposits=(report,)), received_at=START, verified=False)
    assert payment.received.is_zero()
    assert Money.of("10", "USDT") == payment.unverified
    payment.apply_update(PaymentUpdate(REF, deposits=(report,)), received_at=START, verified=True)
    assert PaymentStatus.COMPLETED == payment.status
    assert payment.unverified.is_zero()


# --- unverified reports, then the same funds verified ------------------------------------------

CUMULATIVE_TOTALS = [Decimal("1.5"), Decimal("3.3"), Decimal(7), Decimal(10), Decimal("12.25")]

money_updates = st.builds(
    lambda deposits, total, status: PaymentUpdate(
        REF,
        deposits=tuple(deposits),
        cumulative=None if total is None else CumulativeReceivedReport(total, "USDT"),
        status=status,
    ),
    st.lists(deposit_reports, max_size=2),
    st.none() | st.sampled_from(CUMULATIVE_TOTALS),
    st.none() | status_reports,
)


def money(payment: Payment) -> dict:
    return {k: v for k, v in snapshot(payment).items() if k not in {"deposits", "provider_status"}}


@settings(max_examples=300, deadline=None)
@given(expected_amounts, st.lists(money_updates, min_size=1, max_size=6), st.data())
def test_unverified_then_verified_reports_of_the_same_funds_end_verified_and_counted_once(
    expected, history, data
):
    """Copies of a history arriving unauthenticated first (any order, some twice) change
    nothing once the history itself arrives verified (in any order): the funds count once,
    and none is left unverified."""
    received_at = START + timedelta(minutes=5)
    verified_only = new_payment(expected)
    apply_all(verified_only, history, received_at)
    copied_first = new_payment(expected)
    copies = data.draw(st.permutations(history)) + data.draw(
        st.lists(st.sampled_from(history), max_size=3)
    )
    for copy in copies:
        copied_first.apply_update(copy, received_at=received_at, verified=False)
    assert copied_first.received.is_zero()
    assert copied_first.pending.is_zero()
    apply_all(copied_first, data.draw(st.permutations(history)), received_at)

    assert money(verified_only) == money(copied_first)
    assert copied_first.unverified.is_zero()
    rebuilt = replayed(copied_first)
    assert (money(copied_first), copied_first.unverified) == (money(rebuilt), rebuilt.unverified)


def cumulative(total: str, *, verified: bool, payment: Payment) -> None:
    update = PaymentUpdate(REF, cumulative=CumulativeReceivedReport(Decimal(total), "USDT"))
    payment.apply_update(update, received_at=START, verified=verified)


def test_a_running_total_reported_unverified_then_verified_is_one_verified_deposit():
    payment = new_payment(Decimal(10))
    cumulative("10", verified=False, payment=payment)
    assert (Money.of("0", "USDT"), Money.of("10", "USDT")) == (
        payment.received,
        payment.unverified,
    )
    cumulative("10", verified=True, payment=payment)
    (deposit,) = payment.deposits.values()
    assert (Decimal(10), True) == (deposit.amount, deposit.verified)
    assert (PaymentStatus.COMPLETED, Coverage.EXACT) == (payment.status, payment.coverage)
    assert payment.unverified.is_zero()
    cumulative("10", verified=True, payment=payment)
    cumulative("10", verified=False, payment=payment)
    assert (Money.of("10", "USDT"), 1) == (payment.received, len(payment.deposits))


def test_verified_running_totals_count_once_whatever_unverified_ones_came_first():
    # Unverified 4 then 10 (parts 4 and 6); verified 10 alone must count 10, not 6.
    payment = new_payment(Decimal(10))
    cumulative("4", verified=False, payment=payment)
    cumulative("10", verified=False, payment=payment)
    assert Money.of("10", "USDT") == payment.unverified
    cumulative("10", verified=True, payment=payment)
    assert (Money.of("10", "USDT"), PaymentStatus.COMPLETED) == (payment.received, payment.status)
    assert payment.unverified.is_zero()
    # An unverified total above the verified one shows only the part above it.
    cumulative("12", verified=False, payment=payment)
    assert (Money.of("10", "USDT"), Money.of("2", "USDT")) == (
        payment.received,
        payment.unverified,
    )

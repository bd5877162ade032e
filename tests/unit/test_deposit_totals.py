"""A payment counts its deposits once per state of them (ledger/payment.py, Deposits.totals):
whatever history it went through, verified or not, cumulative or single, expired or not, what it
holds counted equals the definitions worked out afresh from its deposits, and a replay of its
events counts the same."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.commands import CumulativeReceivedReport, PaymentUpdate
from ledger.money import Money
from ledger.payment import _CUMULATIVE, Deposit, Payment
from tests.unit.test_payment_properties import (
    REF,
    START,
    deposit_reports,
    expected_amounts,
    new_payment,
    replayed,
    status_reports,
)

cumulative_reports = st.builds(
    lambda cents, confirmed: CumulativeReceivedReport(
        total=Decimal(cents) / 100, currency="USDT", confirmed=confirmed
    ),
    st.integers(min_value=1, max_value=5_000),
    st.booleans(),
)
updates = st.builds(
    lambda deposits, cumulative, status: PaymentUpdate(
        REF, deposits=tuple(deposits), cumulative=cumulative, status=status
    ),
    st.lists(deposit_reports, max_size=3),
    st.none() | cumulative_reports,
    st.none() | status_reports,
)
steps = st.tuples(updates, st.booleans(), st.integers(0, 90))  # update, verified, minute


def _late(payment: Payment, deposit: Deposit) -> bool:
    deadline = payment.deadline
    return deadline is not None and deposit.observed_at > deadline


def _sum(payment: Payment, *, confirmed: bool, on_time_only: bool = False) -> Money:
    deposits = payment.deposits.values()
    total = sum(
        (
            d.amount
            for d in deposits
            if d.verified and d.confirmed == confirmed
            if not (on_time_only and _late(payment, d))
        ),
        Decimal(0),
    )
    return Money(total, payment.expected.currency)


def _highest(deposits: list[Deposit]) -> Decimal:
    totals = [Decimal(d.deposit_id.removeprefix(_CUMULATIVE).split(":")[0]) for d in deposits]
    return max(totals, default=Decimal(0))


@settings(max_examples=300, deadline=None)
@given(expected_amounts, st.lists(steps, max_size=10))
def test_counted_totals_equal_their_definitions_and_the_replay(expected, history):
    payment = new_payment(expected)
    for update, verified, minute in history:
        received_at: datetime = START + timedelta(minutes=minute)
        payment.apply_update(update, received_at=received_at, verified=verified)

    deposits = list(payment.deposits.values())
    cumulative = [d for d in deposits if d.deposit_id.startswith(_CUMULATIVE)]
    verified_total = sum((d.amount for d in cumulative if d.verified), Decimal(0))
    single_unverified = sum(
        (d.amount for d in deposits if not d.verified and d not in cumulative), Decimal(0)
    )
    above = max(_highest([d for d in cumulative if not d.verified]) - verified_total, Decimal(0))
    received, pending = _sum(payment, confirmed=True), _sum(payment, confirmed=False)
    totals = payment.totals
    assert totals.received == received
    assert totals.pending == pending
    assert totals.received_on_time == _sum(payment, confirmed=True, on_time_only=True)
    assert totals.cumulative_total == verified_total
    assert totals.unverified == Money(single_unverified + above, "USDT")
    assert totals.late == any(_late(payment, d) for d in deposits if d.verified)
    assert totals.outstanding == (payment.expected - received - pending).max_zero()
    assert totals.overpaid == (received - payment.expected).max_zero()
    assert replayed(payment).totals == totals

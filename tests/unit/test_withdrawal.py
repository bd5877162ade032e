from decimal import Decimal

import pytest

from ledger.commands import ProviderWithdrawalOutcome, WithdrawalReference, WithdrawalUpdate
from ledger.errors import (
    AmountMustBePositive,
    WithdrawalAlreadyFinal,
    WithdrawalTransitionNotAllowed,
)
from ledger.money import Money
from ledger.withdrawal import Withdrawal, WithdrawalStatus


def requested() -> Withdrawal:
    return Withdrawal.request(
        provider="cryptofuse", request_id="w-1", amount=Money.of("100", "USDT"), address="T1"
    )


def update(outcome: ProviderWithdrawalOutcome, **kwargs) -> WithdrawalUpdate:
    return WithdrawalUpdate(
        WithdrawalReference("cryptofuse", "p-1"), outcome.value, outcome, **kwargs
    )


def test_funds_are_reserved_until_completion():
    withdrawal = requested()
    withdrawal.submit("p-1", "pending", fee_platform=Decimal(1), fee_network=Decimal("0.5"))
    assert Money.of("100", "USDT") == withdrawal.reserved
    withdrawal.apply_update(update(ProviderWithdrawalOutcome.PROCESSING), verified=True)
    withdrawal.apply_update(
        update(ProviderWithdrawalOutcome.COMPLETED, tx_hash="0xdef"), verified=True
    )
    assert WithdrawalStatus.COMPLETED == withdrawal.status
    assert Money.of("98.5", "USDT") == withdrawal.sent
    assert withdrawal.reserved.is_zero()


def test_failure_releases_the_reservation():
    withdrawal = requested()
    withdrawal.fail("rejected")
    assert withdrawal.reserved.is_zero()
    assert "rejected" == withdrawal.failure_reason


def test_a_final_withdrawal_refuses_another_final_state():
    withdrawal = requested()
    withdrawal.complete("0x1", Decimal(100))
    with pytest.raises(WithdrawalAlreadyFinal):
        withdrawal.fail("late failure")


def test_processing_cannot_go_back_to_submitted():
    withdrawal = requested()
    withdrawal.start_processing()
    with pytest.raises(WithdrawalTransitionNotAllowed):
        withdrawal.submit("p-1", "pending")


def test_repeating_the_current_state_changes_nothing():
    withdrawal = requested()
    withdrawal.require_manual_review()
    version = withdrawal.version
    withdrawal.require_manual_review()
    assert version == withdrawal.version


def test_an_unverified_word_is_recorded_but_moves_nothing():
    withdrawal = requested()
    withdrawal.apply_update(update(ProviderWithdrawalOutcome.COMPLETED), verified=False)
    assert WithdrawalStatus.REQUESTED == withdrawal.status
    assert "completed" == withdrawal.provider_status


def test_non_positive_amounts_are_refused():
    with pytest.raises(AmountMustBePositive):
        Withdrawal.request(provider="x", request_id="r", amount=Money.of("0", "USDT"), address="a")

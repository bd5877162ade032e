"""Named errors, one per broken rule (after tigerbeetle's result codes).

Each is raised for input that breaks a rule of the domain; `assert` is kept for programmer errors.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every rule the ledger enforces."""

    code = "ledger_error"


# Money
class AmountMustNotBeFloat(LedgerError, TypeError):
    code = "amount_must_not_be_float"


class AmountMustBeFinite(LedgerError, ValueError):
    code = "amount_must_be_finite"


class AmountTooLarge(LedgerError, ValueError):
    code = "amount_too_large"


class AmountPrecisionExceedsCurrencyScale(LedgerError, ValueError):
    code = "amount_precision_exceeds_currency_scale"


class CurrenciesMustMatch(LedgerError, ValueError):
    code = "currencies_must_match"


class CurrencyMustBeRegistered(LedgerError, ValueError):
    code = "currency_must_be_registered"


class AmountMustBePositive(LedgerError, ValueError):
    code = "amount_must_be_positive"


# Payments
class PaymentAlreadySettled(LedgerError):
    code = "payment_already_settled"


class PaymentCannotBeSettled(LedgerError):
    code = "payment_cannot_be_settled"


class DepositAmountMustNotChange(LedgerError):
    """The same deposit id was reported again with another amount: a provider inconsistency."""

    code = "deposit_amount_must_not_change"


# Payments and withdrawals: the create at the provider
class SubmissionAlreadyResolved(LedgerError):
    """The provider's answer to a create is already recorded (accepted or refused)."""

    code = "submission_already_resolved"


# Withdrawals
class WithdrawalTransitionNotAllowed(LedgerError):
    code = "withdrawal_transition_not_allowed"


class WithdrawalAlreadyFinal(WithdrawalTransitionNotAllowed):
    code = "withdrawal_already_final"


class InsufficientFunds(LedgerError):
    code = "insufficient_funds"


# Event store
class ConcurrencyConflict(LedgerError):
    """A stream was not at the version the writer expected."""

    code = "concurrency_conflict"


class StreamNotFound(LedgerError):
    code = "stream_not_found"


class HashChainBroken(LedgerError):
    """The stored log does not verify; `position` is the first event that fails."""

    code = "hash_chain_broken"

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"hash chain broken at position {position}: {reason}")
        self.position = position
        self.reason = reason

"""What `ledger demo` asks of each provider sandbox.

Every provider gets the payment scenarios its documented API can express; the ones it cannot are
left out and said so in `LIMITS`. Each provider's payments are all paid before its withdrawals are
requested, and the three withdrawals together ask for less than one fully paid payment brought in
the same currency, so a check for available funds at the provider lets every one of them through.
"""

from __future__ import annotations

from dataclasses import dataclass

PAYMENT_SCENARIOS = ("full", "partial", "over", "duplicate", "multiple_deposits", "fail")
EXPIRY_SCENARIOS = ("expire_no_funds", "expire_with_funds", "late")
WITHDRAWAL_SCENARIOS = ("completed", "failed", "manual_review")

# CoinPay and LiPayKripto say nothing at expiry: only the ledger's clock can expire a CoinPay
# payment. The shortest lifetime the API takes is a minute, so the demo moves the ledger's clock
# past it instead of waiting.
LEDGER_CLOCK_EXPIRY_MINUTES = 1


@dataclass(frozen=True, slots=True)
class Price:
    amount: str
    currency: str
    pay_currency: str | None = None  # the crypto paid with, where the provider lets us choose


@dataclass(frozen=True, slots=True)
class PaymentCase:
    provider: str
    scenario: str  # the sandbox's scenario name
    price: Price
    expires_in_minutes: int | None = None
    # Deliver only after the ledger's clock has passed the payment's expiry (funds arriving late
    # where the provider has no expiry word of its own).
    after_ledger_expiry: bool = False


@dataclass(frozen=True, slots=True)
class WithdrawalCase:
    provider: str
    scenario: str
    amount: str
    currency: str
    address: str
    pay_currency: str | None = None


# What each scenario does, in one line, as the report prints it before the tables.
SCENARIOS = {
    "full": "the customer pays the price in one deposit: completed, exact",
    "partial": "half the price arrives and no more: stays pending, partial (an underpaid item)",
    "over": "150% of the price arrives: completed, over; the excess waits in overpayment suspense",
    "duplicate": "the provider reports the same deposit twice: it counts once",
    "multiple_deposits": "the price arrives in three deposits: completed, exact",
    "fail": "the provider says the payment failed, nothing paid: failed, unpaid",
    "expire_no_funds": "the payment expires with nothing paid: expired, unpaid",
    "expire_with_funds": "half arrives, then the payment expires: expired, partial, funds kept",
    "late": "the payment expires, then the full price arrives: expired, late, funds kept",
    "completed": "(withdrawal) the provider sends the funds: completed; sent + fee leave funds",
    "failed": "(withdrawal) the provider refuses it: failed; the reserved funds come back",
    "manual_review": "(withdrawal) the provider holds it for review: funds stay reserved",
}

# Where a provider plays a scenario its own way, and the table therefore reads differently.
EXCEPTIONS = {
    ("coincoin", "fail"): "CoinCoin has no failure word; its nearest is Invalid (timed out) with "
    "a 0.5 USDT deposit below the network fee, which the ledger keeps: expired, partial, 0.5 "
    "received (an expired_with_funds item)",
    ("coincoin", "expire_with_funds"): "CoinCoin's In Settlement (overdue, some funds) is no "
    "expiry word, and the demo gives CoinCoin no lifetime: the payment stays pending, partial",
}

PRICES = {
    "coinpay": Price("100", "USDT"),
    "coincoin": Price("100", "USDT"),  # CoinCoin prices in the coin it collects (USDT)
    "cryptofuse": Price("100", "USD", "USDTTRC20"),  # not a testnet amount: no automatic flow
    "payment_engine": Price("100", "USD"),
    "lipaykripto": Price("100.00", "TRY"),
}

LIMITS = {
    "coinpay": "no expiry word: its payments expire by the ledger's clock (moved past a "
    "1-minute lifetime); no webhook for a payout under review, so that one stays submitted",
    "coincoin": "no withdrawals in its API",
    "cryptofuse": "no manual-review state: a held withdrawal shows processing",
    "payment_engine": "no expiry or manual-review words: expiry is a failed transaction with "
    "reason EXPIRED, review is PROCESSING",
    "lipaykripto": "no payment lifetime and no expiry word, so no expiry or late cases; a "
    "webhook names no deposit, so several deposits look like a duplicate",
}


def _payment_cases(provider: str) -> list[PaymentCase]:
    price = PRICES[provider]
    if provider == "lipaykripto":
        return [PaymentCase(provider, s, price) for s in ("full", "partial", "over", "duplicate",
                                                          "fail")]  # fmt: skip
    cases = [PaymentCase(provider, s, price) for s in PAYMENT_SCENARIOS]
    if provider == "coinpay":
        minutes = LEDGER_CLOCK_EXPIRY_MINUTES
        cases += [
            PaymentCase(provider, s, price, minutes, after_ledger_expiry=s == "late")
            for s in EXPIRY_SCENARIOS
        ]
    else:
        cases += [PaymentCase(provider, s, price) for s in EXPIRY_SCENARIOS]
    return cases


_WITHDRAWAL_TERMS = {
    # provider: (amount, currency, address, pay_currency); each well below one full payment.
    "coinpay": ("10", "USDT", "demo-bank-account-1", None),
    "cryptofuse": ("10", "USDTTRC20", "TDemoWithdrawalAddress000000001", None),
    "payment_engine": ("10", "USD", "demo-payee-account", None),
    "lipaykripto": ("10.00", "TRY", "TDemoWalletAddress0000000000001", "USDT"),
}


def _withdrawal_cases(provider: str) -> list[WithdrawalCase]:
    terms = _WITHDRAWAL_TERMS.get(provider)
    if terms is None:
        return []
    amount, currency, address, pay_currency = terms
    return [
        WithdrawalCase(provider, s, amount, currency, address, pay_currency)
        for s in WITHDRAWAL_SCENARIOS
    ]


def payment_cases(providers: tuple[str, ...]) -> list[PaymentCase]:
    return [case for provider in providers for case in _payment_cases(provider)]


def withdrawal_cases(providers: tuple[str, ...]) -> list[WithdrawalCase]:
    return [case for provider in providers for case in _withdrawal_cases(provider)]

"""Exact money: a Decimal amount in a currency whose scale the registry knows.

Amounts never pass through float. Construction from float is refused, arithmetic across currencies
is refused, and rounding happens only where a caller asks for it by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

from ledger.errors import (
    AmountMustBeFinite,
    AmountMustNotBeFloat,
    AmountPrecisionExceedsCurrencyScale,
    AmountTooLarge,
    CurrenciesMustMatch,
    CurrencyMustBeRegistered,
)

# Scales are the number of decimal places a currency's smallest unit has. Provider-specific codes
# (USDTTRC20, ...) are registered beside the plain token codes because providers price in them.
_SCALES: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "TRY": 2,
    "USDT": 6,
    "USDC": 6,
    "USDTTRC20": 6,
    "USDTERC20": 6,
    "USDTBSC": 18,
    "USDCERC20": 6,
    "TRX": 6,
    "BTC": 8,
    "ETH": 18,
    "BNB": 18,
}


# The finest scale any currency may have (register_currency refuses finer).
SCALE_MAX = 30


def register_currency(code: str, scale: int) -> None:
    """Registers (or re-registers with the same scale) a currency code."""
    if not code or code.upper() != code:
        raise ValueError(f"currency code must be upper case, got {code!r}")
    if not 0 <= scale <= SCALE_MAX:
        raise ValueError(f"scale must be between 0 and {SCALE_MAX}, got {scale}")
    existing = _SCALES.get(code)
    if existing is not None and existing != scale:
        raise ValueError(f"currency {code} is already registered with scale {existing}")
    _SCALES[code] = scale


def currency_scale(code: str) -> int:
    try:
        return _SCALES[code]
    except KeyError:
        raise CurrencyMustBeRegistered(f"currency {code!r} is not registered") from None


def is_registered(code: str) -> bool:
    return code in _SCALES


def to_decimal(value: Any) -> Decimal:
    """Turns a JSON-ish amount (str, int, Decimal) into a finite Decimal; refuses float."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not an amount")
    if isinstance(value, float):
        raise AmountMustNotBeFloat(f"amount {value!r} is a float; pass a str or Decimal")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal amount") from None
    else:
        raise TypeError(f"{type(value).__name__} is not an amount")
    if not result.is_finite():
        raise AmountMustBeFinite(f"amount {value!r} is not finite")
    return result


# The rule of money for size: no amount the ledger keeps (asked, reported by a provider, derived)
# has more than 24 integer digits. API.md states it for requests; provider reports beyond it are
# refused as broken facts instead of overflowing the arithmetic below.
INTEGER_DIGITS_MAX = 24
# Enough digits for the largest amount at the finest scale (24 + 18 for ETH), so quantizing never
# rounds or overflows the default 28-digit context.
_EXACT = Context(prec=INTEGER_DIGITS_MAX + 40)


def computable(amount: Decimal) -> bool:
    """Whether an amount read from outside can be worked with at all: finite, at most
    INTEGER_DIGITS_MAX integer digits and at most SCALE_MAX places. An exponent like 1e999999999
    is a valid Decimal, but exact arithmetic on it (a difference, a comparison after quantizing)
    would build a billion-digit number: such input is refused where it enters, not computed."""
    if not amount.is_finite():
        return False
    places = -int(amount.as_tuple().exponent)
    if amount.is_zero():
        return places <= SCALE_MAX
    return amount.adjusted() < INTEGER_DIGITS_MAX and places <= SCALE_MAX


def quantize_exact(amount: Decimal, currency: str) -> Decimal:
    """Puts `amount` on the currency's scale, refusing to drop non-zero digits."""
    if not amount.is_finite():
        raise AmountMustBeFinite(f"{amount} is not a finite amount")
    if not amount.is_zero() and amount.adjusted() >= INTEGER_DIGITS_MAX:
        raise AmountTooLarge(f"amount has more than {INTEGER_DIGITS_MAX} integer digits")
    exponent = Decimal(1).scaleb(-currency_scale(currency))
    quantized = amount.quantize(exponent, context=_EXACT)
    if quantized != amount:
        raise AmountPrecisionExceedsCurrencyScale(
            f"{amount} has more precision than {currency} allows "
            f"({currency_scale(currency)} places)"
        )
    return quantized


_ZEROS: dict[str, Money] = {}


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency, always held at that currency's scale."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        amount = to_decimal(self.amount)
        object.__setattr__(self, "amount", quantize_exact(amount, self.currency))

    @classmethod
    def of(cls, amount: Any, currency: str) -> Money:
        return cls(to_decimal(amount), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        zero = _ZEROS.get(currency)
        if zero is None:  # Money is immutable: one zero per currency serves every caller
            zero = _ZEROS[currency] = cls(Decimal(0), currency)
        return zero

    @classmethod
    def rounded(cls, amount: Any, currency: str, rounding: str = ROUND_HALF_EVEN) -> Money:
        """Rounds explicitly to the currency's scale (banker's rounding unless told otherwise)."""
        exponent = Decimal(1).scaleb(-currency_scale(currency))
        return cls(to_decimal(amount).quantize(exponent, rounding=rounding), currency)

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrenciesMustMatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount >= other.amount

    def is_zero(self) -> bool:
        return self.amount == 0

    def is_positive(self) -> bool:
        return self.amount > 0

    def max_zero(self) -> Money:
        return self if self.amount > 0 else Money.zero(self.currency)

    def to_str(self) -> str:
        """The amount as the exact decimal string the API and events carry."""
        return format(self.amount, "f")

    def to_json(self) -> dict[str, str]:
        return {"amount": self.to_str(), "currency": self.currency}

    def __str__(self) -> str:
        return f"{self.to_str()} {self.currency}"


def loads_exact(body: bytes | str) -> Any:
    """Parses JSON with every non-integer number as Decimal, so no amount touches a float.

    NaN and Infinity are refused: they are not amounts and json accepts them by default.
    """

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"JSON constant {name} is not allowed")

    return json.loads(body, parse_float=Decimal, parse_constant=refuse_constant)

"""Amounts in requests: a JSON string holding a plain decimal (API.md "Amounts in requests").

ASCII digits, optionally a point and more digits; no sign, exponent, whitespace, thousands
separator or non-ASCII digit (Python's `Decimal` and `str.isdigit` take Arabic-Indic and other
Unicode digits, and `Decimal` takes "1e2", " 10 " and "-0"). The digits are counted before a
Decimal is built, so a thousand-digit string costs a regular expression and nothing more.
"""

from __future__ import annotations

import re
from decimal import Decimal

from adapters.http.rules import json_kind, shown
from ledger.money import INTEGER_DIGITS_MAX

# Explicit [0-9]: \d would match every Unicode decimal digit.
_PLAIN_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
# No registered currency may have more (ledger.money.register_currency); the currency's own
# scale, which is smaller, is checked once the currency is known.
FRACTION_DIGITS_MAX = 30


class AmountRefused(ValueError):
    def __init__(self, problem_type: str, detail: str) -> None:
        super().__init__(detail)
        self.problem_type = problem_type
        self.detail = detail


def read_plain_amount(value: object) -> Decimal:
    """The amount a request's `amount` holds, exactly as written, or AmountRefused naming the
    rule it breaks (`amount-must-be-a-string`, `amount-not-a-plain-decimal`,
    `amount-too-many-integer-digits`, `amount-too-many-fraction-digits`,
    `amount-must-be-positive`)."""
    if not isinstance(value, str):
        detail = f'amount must be a JSON string such as "10.50", not {json_kind(value)}'
        raise AmountRefused("amount-must-be-a-string", detail)
    match = _PLAIN_DECIMAL.fullmatch(value)
    if match is None:
        detail = (
            f"amount {shown(value)} is not a plain decimal: ASCII digits, optionally a point "
            "and more digits; no sign, exponent or whitespace"
        )
        raise AmountRefused("amount-not-a-plain-decimal", detail)
    integer, fraction = match.group(1), match.group(2) or ""
    if len(integer) > INTEGER_DIGITS_MAX:
        detail = f"amount has {len(integer)} integer digits; at most {INTEGER_DIGITS_MAX}"
        raise AmountRefused("amount-too-many-integer-digits", detail)
    if len(fraction) > FRACTION_DIGITS_MAX:
        detail = f"amount has {len(fraction)} fraction digits; at most {FRACTION_DIGITS_MAX}"
        raise AmountRefused("amount-too-many-fraction-digits", detail)
    amount = Decimal(value)
    if amount == 0:
        raise AmountRefused("amount-must-be-positive", f"amount {shown(value)} is zero")
    return amount


def fraction_digits(amount: Decimal) -> int:
    """The fraction digits written ("1.50" has 2): a plain decimal's exponent says it."""
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int), "a plain decimal is finite"
    return max(0, -exponent)

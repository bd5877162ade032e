"""The two amount readers fuzzed against Decimal's own reading (issue 14, item 3).

- `ledger.money` (`to_decimal`, `Money.of`, `quantize_exact`, `loads_exact`) reads what providers
  report: any string either becomes exactly `Decimal(string)` on the currency's scale, or is
  refused by one of the named rules (`ValueError` for text Decimal cannot read,
  `AmountMustBeFinite`, `AmountTooLarge`, `AmountPrecisionExceedsCurrencyScale`); never a float,
  never any other exception, never a rounded amount.
- The internal API's amount (`adapters.http.amounts.read_plain_amount`, then the request reader
  that knows the currency's scale) reads what callers send: a string is either a plain decimal
  within 24 integer digits and the currency's scale, and then exactly `Decimal(string)`, or a 422
  whose problem type names the rule it breaks (API.md "Amounts in requests").

Edge cases drawn on purpose: huge and tiny exponents, NaN/sNaN/Infinity in every spelling,
Unicode digits (which `Decimal` reads and the API must not), whitespace, signs, underscores,
leading zeros, and amounts around 10^24. `LEDGER_TEST_LONG=1` draws ten times as many examples.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from decimal import MAX_EMAX, MIN_EMIN, Decimal, InvalidOperation, localcontext
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.config import Settings
from adapters.http.amounts import FRACTION_DIGITS_MAX, AmountRefused, read_plain_amount
from adapters.http.problems import ProblemError
from adapters.http.requests import read_payment_request
from adapters.providers.registry import build_adapters
from ledger.errors import (
    AmountMustBeFinite,
    AmountMustNotBeFloat,
    AmountPrecisionExceedsCurrencyScale,
    AmountTooLarge,
)
from ledger.money import INTEGER_DIGITS_MAX, Money, currency_scale, loads_exact, to_decimal

EXAMPLES = 3000 if os.environ.get("LEDGER_TEST_LONG") else 300
# The rules `ledger.money` may refuse a provider's amount by; anything else is a bug.
MONEY_REFUSALS = (AmountMustBeFinite, AmountTooLarge, AmountPrecisionExceedsCurrencyScale)
REQUEST_RULES = {
    "amount-must-be-a-string",
    "amount-not-a-plain-decimal",
    "amount-too-many-integer-digits",
    "amount-too-many-fraction-digits",
    "amount-must-be-positive",
}
PLAIN = re.compile(r"([0-9]+)(?:\.([0-9]+))?", re.ASCII)
# Currencies of every scale the registry has: 0 digits is not among them, 2, 6, 8 and 18 are.
CURRENCIES = ("USD", "TRY", "USDT", "USDTTRC20", "BTC", "ETH", "USDTBSC")
# Payment Engine prices in USD, EUR (2), USDT, USDC (6) and ETH (18).
PRICED = ("USD", "EUR", "USDT", "USDC", "ETH")

UNICODE_DIGITS = "\u0661\u0662\u06f3\u07c4\u0966\u09e7\u0e51\uff11\uff10\U0001d7ce\u00b2\u2460"
WHITESPACE = " \t\n\r\x0b\x0c\u00a0\u2003\u3000"

amount_text = st.one_of(
    # Plain decimals around every limit: leading zeros, 24/25 integer digits, long fractions.
    st.from_regex(r"\A0{0,3}[0-9]{0,27}(\.[0-9]{0,22})?\Z"),
    # What a lax reader takes: signs, exponents, spaces, underscores, commas.
    st.from_regex(r"\A[ \t+\-]{0,2}[0-9_]{1,6}([.,][0-9]{0,4})?([eE][+\-]?[0-9]{1,10})?\s?\Z"),
    st.sampled_from(
        [
            "NaN", "nan", "-NaN", "sNaN", "+sNaN123", "Infinity", "-Infinity", "inf", "-Inf",
            "1e999999999", "1E+999999999", "-1e999999999", "1e-999999999", "0e999999999",
            "0E-1000000000", "9" * 24, "9" * 25, "1" + "0" * 24, "0" * 30 + "1", "1e24",
            "1e23", "9.99999999999999999999999e23", "-0", "+0", "0.000", "1_000",
            "\u0661\u0662", "\u0660.\u0665",
        ]
    ),
    st.text(alphabet=st.sampled_from("0123456789.eE+-_" + UNICODE_DIGITS + WHITESPACE)),
    st.text(max_size=10),
)
big_integers = st.one_of(
    st.integers(min_value=10**INTEGER_DIGITS_MAX - 3, max_value=10**INTEGER_DIGITS_MAX + 3),
    st.integers(min_value=-(10**30), max_value=10**30),
)


def decimal_reading(text: str) -> Decimal | None:
    """What Decimal itself makes of `text`, or None when it cannot read it."""
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def money_reading(value: Any, currency: str) -> Money | Exception:
    try:
        return Money.of(value, currency)
    except MONEY_REFUSALS as refused:
        return refused
    except ValueError as unreadable:
        # to_decimal's refusal of text Decimal cannot read: a plain ValueError, nothing else.
        if type(unreadable) is not ValueError:
            raise
        return unreadable


# ---------------------------------------------------------------- ledger.money


@settings(max_examples=EXAMPLES, deadline=None)
@given(amount_text, st.sampled_from(CURRENCIES))
@example("1e999999999", "USD")
@example("0e999999999", "ETH")
@example("1e-999999999", "BTC")
@example("999999999999999999999999.999999999999999999", "ETH")
@example("\u0661\u0662", "USD")
@example("  12.5\n", "USD")
def test_money_reads_a_string_exactly_as_decimal_does_or_names_the_rule_it_breaks(
    text, currency
):
    reading = money_reading(text, currency)
    exact = decimal_reading(text)
    scale = currency_scale(currency)
    if isinstance(reading, Money):
        assert exact is not None, text
        assert isinstance(reading.amount, Decimal)
        assert exact == reading.amount  # nothing rounded, nothing lost
        assert -scale == reading.amount.as_tuple().exponent  # on the currency's scale
        assert exact == Decimal(reading.to_str())  # the string the API and events carry
        assert "e" not in reading.to_str().lower()
        assert reading.amount.copy_abs() < 10**INTEGER_DIGITS_MAX
        return
    # Refused: and for the reason the text gives.
    if exact is None:
        assert type(reading) is ValueError, (text, reading)
    elif not exact.is_finite():
        assert isinstance(reading, AmountMustBeFinite), (text, reading)
    elif not exact.is_zero() and exact.adjusted() >= INTEGER_DIGITS_MAX:
        assert isinstance(reading, AmountTooLarge), (text, reading)
    else:
        assert isinstance(reading, AmountPrecisionExceedsCurrencyScale), (text, reading)
        # A non-zero digit beyond the scale (in a context wide enough for any exponent).
        with localcontext(prec=100, Emin=MIN_EMIN, Emax=MAX_EMAX):
            assert 0 != exact % Decimal(1).scaleb(-scale), text


@settings(max_examples=EXAMPLES, deadline=None)
@given(big_integers, st.sampled_from(CURRENCIES))
def test_integer_amounts_are_exact_up_to_24_digits_and_refused_beyond(value, currency):
    reading = money_reading(value, currency)
    if abs(value) < 10**INTEGER_DIGITS_MAX:
        assert isinstance(reading, Money), reading
        assert Decimal(value) == reading.amount
    else:
        assert isinstance(reading, AmountTooLarge), reading


@pytest.mark.parametrize("value", [0.1, 1.0, float("nan"), float("inf"), -0.0, 1e300])
def test_a_float_is_never_an_amount_whatever_it_holds(value):
    with pytest.raises(AmountMustNotBeFloat):
        Money.of(value, "USD")
    with pytest.raises(AmountMustNotBeFloat):
        to_decimal(value)


@pytest.mark.parametrize("value", [True, False, None, [], {}, b"1", object()])
def test_a_value_that_is_neither_text_nor_a_number_is_a_type_error(value):
    with pytest.raises(TypeError):
        Money.of(value, "USD")


json_number = st.from_regex(r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+\-]?[0-9]{1,10})?\Z")


@settings(max_examples=EXAMPLES, deadline=None)
@given(json_number)
@example("1e999999999")
@example("-0.0")
@example("0.1000000000000000055511151231257827")
def test_provider_json_numbers_are_read_as_their_exact_decimal_never_a_float(number):
    parsed = loads_exact(f'{{"amount": {number}}}')["amount"]
    assert not isinstance(parsed, float)
    assert isinstance(parsed, int | Decimal)
    assert Decimal(number) == parsed
    if isinstance(parsed, Decimal):
        assert Decimal(number).as_tuple() == parsed.as_tuple()  # the very digits written


@pytest.mark.parametrize(
    "document",
    ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', "[NaN]", '{"a": [1, -Infinity]}'],
)
def test_provider_json_constants_that_are_not_numbers_are_refused(document):
    with pytest.raises(ValueError, match="not allowed"):
        loads_exact(document)


# ---------------------------------------------------------------- the internal API's amount


@pytest.fixture(scope="module")
def adapters():
    tables = {
        "payment_engine": {
            "base_url": "http://127.0.0.1:9",
            "username": "u",
            "password": "p",
            "webhook_secret": "s",
        }
    }
    settings_ = Settings(data_dir=tempfile.mkdtemp(prefix="ledger-test-"), providers=tables)
    return build_adapters(settings_.providers)


def request_reading(adapters, amount: Any, currency: str) -> Decimal | ProblemError:
    body = {"provider": "payment_engine", "order_id": "ORD_fuzz", "amount": amount}
    # ASCII JSON: Unicode digits, NUL and lone surrogates arrive as escapes, as valid JSON.
    raw = json.dumps({**body, "currency": currency}).encode()
    try:
        return read_payment_request(raw, adapters).amount
    except ProblemError as refused:
        return refused


def expected_rule(text: str, currency: str) -> str | None:
    """The rule API.md says `text` breaks as an amount in `currency`, or None."""
    match = PLAIN.fullmatch(text)
    if match is None:
        return "amount-not-a-plain-decimal"
    integer, fraction = match.group(1), match.group(2) or ""
    if len(integer) > INTEGER_DIGITS_MAX:
        return "amount-too-many-integer-digits"
    # The currency's scale is checked once the currency is known, after the amount's own rules.
    if len(fraction) > FRACTION_DIGITS_MAX:
        return "amount-too-many-fraction-digits"
    if Decimal(text) == 0:
        return "amount-must-be-positive"
    if len(fraction) > currency_scale(currency):
        return "amount-too-many-fraction-digits"
    return None


@settings(max_examples=EXAMPLES, deadline=None)
@given(amount_text, st.sampled_from(PRICED))
@example("9" * 24 + ".99", "USD")
@example("9" * 25, "USD")
@example("0" * 25 + "1", "USD")
@example("1." + "0" * 19, "ETH")
@example("1." + "0" * 18, "ETH")
@example("0.00", "USD")
@example("\u0661", "USD")
@example("1\u00a0000", "USD")
@example("10\x00", "USD")
@example("\ud800", "USD")
def test_a_request_amount_is_exactly_decimal_at_the_currency_scale_or_a_named_422(
    adapters, text, currency
):
    reading = request_reading(adapters, text, currency)
    rule = expected_rule(text, currency)
    if isinstance(reading, ProblemError):
        assert (422, rule) == (reading.status, reading.problem_type), text
        assert reading.problem_type in REQUEST_RULES
        return
    assert rule is None, text
    assert Decimal(text) == reading
    assert Decimal(text).as_tuple() == reading.as_tuple()  # the very digits written
    # And the ledger's Money takes it as it is, on the currency's scale.
    assert Decimal(text) == Money.of(reading, currency).amount


@pytest.mark.parametrize(
    "value", [10, 10.5, -1, True, None, ["10"], {"amount": "10"}], ids=repr
)
def test_a_request_amount_that_is_not_a_json_string_is_a_422_whatever_it_holds(adapters, value):
    reading = request_reading(adapters, value, "USD")
    assert isinstance(reading, ProblemError)
    assert (422, "amount-must-be-a-string") == (reading.status, reading.problem_type)


def test_the_plain_reader_alone_refuses_only_by_its_documented_rules():
    """Every refusal of `read_plain_amount` is an AmountRefused with a documented type; the
    currency's scale is the request reader's (checked above)."""
    for text in ("", ".", "1.", ".1", "1..2", "1.2.3", "0x1", "1e2", "\x00", "9" * 1000):
        with pytest.raises(AmountRefused) as refused:
            read_plain_amount(text)
        assert refused.value.problem_type in REQUEST_RULES

from decimal import Decimal

import pytest

from ledger.errors import (
    AmountMustBeFinite,
    AmountMustNotBeFloat,
    AmountPrecisionExceedsCurrencyScale,
    CurrenciesMustMatch,
    CurrencyMustBeRegistered,
)
from ledger.money import Money, loads_exact, register_currency


def test_float_amounts_are_refused():
    with pytest.raises(AmountMustNotBeFloat):
        Money.of(0.1, "USD")


def test_currencies_are_never_mixed():
    with pytest.raises(CurrenciesMustMatch):
        Money.of("1", "USDT") + Money.of("1", "USDC")
    with pytest.raises(CurrenciesMustMatch):
        _ = Money.of("1", "USDT") < Money.of("1", "USD")


def test_eighteen_decimal_eth_amounts_are_exact():
    total = Money.of("0.000000000000000001", "ETH") + Money.of("1.999999999999999999", "ETH")
    assert Decimal("2.000000000000000000") == total.amount
    assert "2.000000000000000000" == total.to_str()


def test_amounts_sit_at_the_currency_scale():
    assert "10.50" == Money.of("10.5", "USD").to_str()
    assert "100.000000" == Money.of("100.00000000", "USDT").to_str()


def test_precision_beyond_the_scale_is_refused_not_rounded():
    with pytest.raises(AmountPrecisionExceedsCurrencyScale):
        Money.of("0.001", "USD")


def test_rounding_happens_only_when_asked_and_is_bankers():
    assert "0.12" == Money.rounded("0.125", "USD").to_str()
    assert "0.14" == Money.rounded("0.135", "USD").to_str()


def test_unknown_currency_is_refused_until_registered():
    with pytest.raises(CurrencyMustBeRegistered):
        Money.of("1", "XYZ")
    register_currency("XYZ", 3)
    assert "1.000" == Money.of("1", "XYZ").to_str()


def test_non_finite_amounts_are_refused():
    with pytest.raises(AmountMustBeFinite):
        Money.of("NaN", "USD")
    with pytest.raises(AmountMustBeFinite):
        Money.of("Infinity", "USD")


def test_provider_json_numbers_parse_without_a_float_round_trip():
    parsed = loads_exact(
        b'{"amount": 0.1000000000000000055511151231257827, "eth": 1.000000000000000001}'
    )
    assert Decimal("0.1000000000000000055511151231257827") == parsed["amount"]
    assert Decimal("1.000000000000000001") == parsed["eth"]
    with pytest.raises(ValueError):
        loads_exact(b'{"amount": NaN}')

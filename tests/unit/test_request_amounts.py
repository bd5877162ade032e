"""The amount rule of the internal API (API.md "Amounts in requests") and the strict JSON reader
of request bodies, checked against Python's own readings."""

import json
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.http.amounts import (
    FRACTION_DIGITS_MAX,
    INTEGER_DIGITS_MAX,
    AmountRefused,
    fraction_digits,
    read_plain_amount,
)
from adapters.http.json_body import parse_object
from adapters.http.problems import ProblemError

AMOUNT_RULES = {
    "amount-must-be-a-string",
    "amount-not-a-plain-decimal",
    "amount-too-many-integer-digits",
    "amount-too-many-fraction-digits",
    "amount-must-be-positive",
}
PLAIN = re.compile(r"[0-9]+(\.[0-9]+)?", re.ASCII)

# Strings that look like amounts: the near misses are where a lax reader goes wrong.
amount_like = st.one_of(
    st.from_regex(r"\A[0-9]{0,30}(\.[0-9]{0,34})?\Z"),
    st.from_regex(r"\A[ +\-]?[0-9]{1,5}([.,][0-9]{1,3})?([eE][+\-]?[0-9]{1,3})?[ \n]?\Z"),
    st.text(
        alphabet=st.sampled_from(
            "0123456789.\u0661\u0662\u0663\u06f4\u06f5\u0666\u07c0\u0966\uff11\uff12e_ -+"
        ),
        max_size=12,
    ),
    st.text(max_size=12),
)


def read(value: object) -> tuple[Decimal | None, AmountRefused | None]:
    try:
        return read_plain_amount(value), None
    except AmountRefused as refused:
        return None, refused


def refusal(value: object) -> str:
    with pytest.raises(AmountRefused) as refused:
        read_plain_amount(value)
    return refused.value.problem_type


@settings(max_examples=500, deadline=None)
@given(amount_like)
def test_an_accepted_amount_is_exactly_what_decimal_reads_and_a_plain_positive_decimal(text):
    value, refused = read(text)
    if refused is not None:
        assert refused.problem_type in AMOUNT_RULES
        assert len(refused.detail) < 300
        return
    assert value is not None
    assert PLAIN.fullmatch(text), text
    assert Decimal(text) == value
    assert Decimal(text).as_tuple() == value.as_tuple()  # the very digits and exponent
    assert value > 0
    integer, _, fraction = text.partition(".")
    assert len(integer) <= INTEGER_DIGITS_MAX
    assert len(fraction) == fraction_digits(value) <= FRACTION_DIGITS_MAX


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**30),
    st.one_of(st.none(), st.from_regex(r"\A[0-9]{1,34}\Z")),
)
def test_a_plain_decimal_is_refused_only_by_the_rule_it_breaks(integer, fraction):
    text = str(integer) + ("" if fraction is None else "." + fraction)
    digits = len(str(integer))
    if digits > INTEGER_DIGITS_MAX:
        expected = "amount-too-many-integer-digits"
    elif fraction is not None and len(fraction) > FRACTION_DIGITS_MAX:
        expected = "amount-too-many-fraction-digits"
    elif Decimal(text) == 0:
        expected = "amount-must-be-positive"
    else:
        expected = None
    actual = None if expected is None else refusal(text)
    if expected is None:
        assert Decimal(text) == read_plain_amount(text)
    assert expected == actual


@pytest.mark.parametrize(
    "text",
    [
        "1e2",
        "1E2",
        " 10",
        "10 ",
        "-5",
        "+5",
        "-0",
        "10.",
        ".5",
        "1,000",
        "1_000",
        "0x10",
        "NaN",
        "Infinity",
        "",
        "\u0661\u0662",  # Arabic-Indic digits, which Decimal and str.isdigit take
        "\u06f1\u06f2",  # Extended Arabic-Indic
        "\u0967\u0968",  # Devanagari
        "\uff11\uff12",  # fullwidth
        "1\u00a0000",
        "10\x00",
    ],
)
def test_anything_but_ascii_digits_and_one_point_is_not_a_plain_decimal(text):
    assert "amount-not-a-plain-decimal" == refusal(text)


@pytest.mark.parametrize("value", [10, Decimal("10.5"), True, None, {}, [], ["10"]])
def test_an_amount_that_is_not_a_json_string_is_refused_whatever_it_holds(value):
    assert "amount-must-be-a-string" == refusal(value)


def test_a_thousand_digit_amount_is_refused_by_its_digit_count():
    assert "amount-too-many-integer-digits" == refusal("9" * 1000)
    assert "amount-too-many-fraction-digits" == refusal("1." + "0" * 1000)


def test_the_detail_never_echoes_a_huge_amount():
    with pytest.raises(AmountRefused) as refused:
        read_plain_amount("1" * 10_000 + "x")
    assert len(refused.value.detail) < 300


def problem_type(raw: bytes) -> str:
    with pytest.raises(ProblemError) as refused:
        parse_object(raw)
    assert 400 == refused.value.status
    return refused.value.problem_type


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "body-not-json"),
        (b"{", "body-not-json"),
        (b"\xff\xfe{}", "body-not-json"),
        ("{}".encode("utf-16"), "body-not-json"),
        (b"\xef\xbb\xbf{}", "body-not-json"),  # a UTF-8 byte order mark
        (b'{"a": NaN}', "body-not-json"),
        (b'{"a": -Infinity}', "body-not-json"),
        (b"[]", "body-must-be-an-object"),
        (b'"x"', "body-must-be-an-object"),
        (b"null", "body-must-be-an-object"),
        (b'{"a": 1, "a": 1}', "duplicate-key"),
        (b'{"m": {"k": 1, "k": 2}}', "duplicate-key"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "body-nested-too-deep"),
        (b"[" * 100_000, "body-nested-too-deep"),
    ],
)
def test_a_body_that_is_not_one_json_object_is_a_400_naming_why(raw, expected):
    assert expected == problem_type(raw)


def test_numbers_are_exact_and_integers_past_pythons_limit_are_kept_as_decimals():
    parsed = parse_object(b'{"a": 0.1, "b": 1e400, "c": ' + b"9" * 5000 + b"}")
    assert {"a": Decimal("0.1"), "b": Decimal("1e400"), "c": Decimal("9" * 5000)} == parsed


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=5),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=8,
        ),
        max_size=4,
    )
)
def test_a_json_object_without_repeated_keys_reads_as_json_loads_reads_it(document):
    assert json.loads(json.dumps(document)) == parse_object(json.dumps(document).encode())

"""The codec's decoder: exact (Decimals never pass through float) and equal to the domain."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from ledger.codec import (
    _converters,
    _resolve_topic,
    decode,
    encode_pending,
    loads_exact,
    rebuild,
    topic_of,
)
from ledger.money import Money
from ledger.payment import Payment
from ledger.ports import RecordedEvent
from ledger.withdrawal import Withdrawal

START = datetime(2026, 1, 1, tzinfo=UTC)


def recorded(payment: Payment) -> list[RecordedEvent]:
    return [
        RecordedEvent(0, n, e.stream_id, e.version, e.type, e.payload, e.metadata, START, b"", b"")
        for n, e in enumerate(encode_pending(payment, "Payment"), start=1)
    ]


def test_numbers_with_a_fraction_or_exponent_decode_to_exact_decimals():
    document = loads_exact(b'{"a": 0.1, "b": [1e-30, 2.50], "c": {"d": -3.000000000000000001}}')
    assert {"a": Decimal("0.1"), "b": [Decimal("1e-30"), Decimal("2.50")]} == {
        k: document[k] for k in ("a", "b")
    }
    assert Decimal("-3.000000000000000001") == document["c"]["d"]
    assert not any(isinstance(v, float) for v in (document["a"], *document["b"]))


def test_integers_of_any_size_and_text_that_looks_like_numbers_decode_exactly():
    big = 2**80 + 1
    assert {"n": big, "s": '{"x":1.5}'} == loads_exact(
        json.dumps({"n": big, "s": '{"x":1.5}'}).encode()
    )


@given(st.decimals(min_value=Decimal("0.000000000000000001"), max_value=Decimal(10**12), places=18))
def test_a_created_payment_keeps_its_exact_amount(amount):
    payment = Payment.create(
        provider="coinpay",
        provider_ref="ref",
        order_id=uuid.uuid4().hex,
        expected=Money.of(amount, "ETH"),
        price=Money.of("1", "USD"),
        expires_at=START,
    )
    created = decode(recorded(payment)[0])
    assert isinstance(created.expected_amount, Decimal)
    assert amount == created.expected_amount
    assert format(amount, "f") == format(created.expected_amount, "f")
    assert START == created.expires_at


def test_a_replayed_payment_equals_the_one_that_made_the_events():
    payment = Payment.create(
        provider="coinpay",
        provider_ref="ref",
        order_id="order",
        expected=Money.of("12.345678", "USDT"),
        price=Money.of("12.35", "USD"),
        expires_at=None,
        metadata={"note": "a:1.5", "nested": {"k": [1, 2]}},
    )
    payment.record_delivery({"dedupe_key": "k1", "outcome": "verified", "body": '{"a":1.25}'})
    events = recorded(payment)
    replayed = rebuild(events)
    original = {k: v for k, v in payment.__dict__.items() if k != "_pending_events"}
    assert original == {k: v for k, v in replayed.__dict__.items() if k != "_pending_events"}


# ---------------------------------------------------------------------------------------------
# msgspec in place of orjson (issue 13): the same documents as the decoder before it, to the digit.


def loads_before_issue_13(payload: bytes) -> Any:
    """The codec's parse before msgspec: orjson, and the stdlib with parse_float=Decimal when orjson
    made a float or refused. The reference the new parse must equal."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload, parse_float=Decimal)
    if any(type(v) is float for v in walk(document)):
        return json.loads(payload, parse_float=Decimal)
    return document


def walk(value: Any) -> Iterator[Any]:
    yield value
    if type(value) is dict:
        for item in value.values():
            yield from walk(item)
    elif type(value) is list:
        for item in value:
            yield from walk(item)


def exact_form(value: Any) -> Any:
    """A value with every scalar's type beside it and Decimals as their text, so that 1.10 and 1.1,
    1E+2 and 100, -0 and 0 differ, and a float never equals a Decimal or an int."""
    kind = type(value)
    if kind is dict:
        return ("dict", [(exact_form(k), exact_form(v)) for k, v in value.items()])
    if kind is list:
        return ("list", [exact_form(v) for v in value])
    if kind in {Decimal, float}:
        return (kind.__name__, str(value))
    return (kind.__name__, value)


def outcome(loads: Callable[[bytes], Any], payload: bytes) -> Any:
    try:
        return ("parsed", exact_form(loads(payload)))
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, the 4,300-digit limit
        return ("refused", type(error).__name__)


NUMBERS = st.from_regex(
    r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?", fullmatch=True
) | st.sampled_from(
    [
        "1.10", "1E+2", "1e2", "-0", "-0.0", "-0.00e-0", "0.0", "1e-400", "1.7976931348623157e309",
        str(2**63 - 1), str(2**63), str(2**64 - 1), str(2**64), str(-(2**63)), str(-(2**63) - 1),
        str(-(2**64)), str(10**60 + 1), "1" + "0" * 4299, "NaN", "Infinity", "-Infinity",
    ]
)  # fmt: skip
SPACE = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])
LONE_SURROGATES = st.sampled_from([r'"\ud800"', r'"a\udc00b"', r'"\udc00\ud800"'])
STRINGS = (
    st.builds(
        lambda text, ascii_only: json.dumps(text, ensure_ascii=ascii_only), st.text(), st.booleans()
    )
    | LONE_SURROGATES
)
SCALARS = NUMBERS | STRINGS | st.sampled_from(["true", "false", "null"])


def _containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    arrays = st.builds(
        lambda items, space: "[" + space + f",{space}".join(items) + space + "]",
        st.lists(children, max_size=5),
        SPACE,
    )
    objects = st.builds(
        lambda pairs, space: "{" + ",".join(f"{k}{space}:{space}{v}" for k, v in pairs) + "}",
        st.lists(st.tuples(STRINGS, children), max_size=5),
        SPACE,
    )
    return arrays | objects


DOCUMENTS = st.recursive(SCALARS, _containers, max_leaves=30)


@given(DOCUMENTS, SPACE, SPACE)
def test_the_parse_equals_the_one_before_msgspec_number_for_number(document, before, after):
    payload = (before + document + after).encode("utf-8", "surrogatepass")
    assert outcome(loads_before_issue_13, payload) == outcome(loads_exact, payload)


@given(DOCUMENTS, st.integers(min_value=0), st.sampled_from(["", "\ufeff", "x", "]", ",", "'"]))
def test_a_damaged_document_is_refused_or_taken_as_before_msgspec(document, cut, junk):
    """Truncated, prefixed (a byte order mark) or followed by junk: refused alike, taken alike."""
    text = document[: cut % (len(document) + 1)] + junk
    for payload in (text.encode("utf-8", "surrogatepass"), (junk + document).encode("utf-8")):
        assert outcome(loads_before_issue_13, payload) == outcome(loads_exact, payload)


def test_other_encodings_and_deep_nesting_are_taken_as_before_msgspec():
    for payload in (
        '{"a": 1.50}'.encode("utf-16"),
        '{"a": 1.50}'.encode("utf-8-sig"),
        b'{"a": "\xed\xa0\x80"}',  # a surrogate written out as UTF-8: the stdlib lets it pass
        b"[" * 400 + b"1.5" + b"]" * 400,
        b"{}",
        b"[]",
    ):
        assert outcome(loads_before_issue_13, payload) == outcome(loads_exact, payload)


def test_integers_past_the_interpreters_digit_limit_are_refused_as_before_msgspec():
    """Whoever formats such a number next would fail, as `int()` did on the confirmation count
    the webhook fuzz test sent."""
    for digits in (4_300, 4_301, 11_516):
        for payload in (b"1" * digits, b'{"amount": ' + b"9" * digits + b"}"):
            assert outcome(loads_before_issue_13, payload) == outcome(loads_exact, payload)


def test_amounts_keep_their_scale_sign_and_exponent():
    document = loads_exact(b'{"a": 1.10, "b": 1E+2, "c": -0.0, "d": -0, "e": 18446744073709551617}')
    assert ("1.10", "1E+2", "-0.0") == tuple(str(document[k]) for k in "abc")
    assert [int, int] == [type(document["d"]), type(document["e"])]
    assert (0, 2**64 + 1) == (document["d"], document["e"])


EVENT_CLASSES = [
    Payment.Created,
    Payment.DepositDetected,
    Payment.ProviderStatusReported,
    Payment.Submitted,
    Withdrawal.Requested,
    Withdrawal.Submitted,
    Withdrawal.Completed,
]
AMOUNT_TEXTS = st.decimals(allow_nan=False, allow_infinity=False).map(str) | st.sampled_from(
    ["1.10", "1E+2", "-0", "-0.00", "0E-18", "123456789012345678901234567890.123456789012345678"]
)
AMOUNTS = AMOUNT_TEXTS.map(json.dumps) | NUMBERS
INSTANTS = st.datetimes(timezones=st.just(UTC) | st.none()).map(lambda t: json.dumps(t.isoformat()))


@st.composite
def stored_events(draw: st.DrawFn) -> RecordedEvent:
    """A stored payload of an event class with amounts and instants, whatever the other fields."""
    event_class = draw(st.sampled_from(EVENT_CLASSES))
    pairs = []
    for name, convert in _converters(event_class):
        value = draw((AMOUNTS if convert is Decimal else INSTANTS) | st.just("null"))
        pairs.append(f'"{name}":{value}')
    pairs.extend(f"{draw(STRINGS)}:{draw(DOCUMENTS)}" for _ in range(draw(st.integers(0, 3))))
    payload = ("{" + ",".join(pairs) + "}").encode("utf-8", "surrogatepass")
    return RecordedEvent(
        0, 1, str(uuid.uuid4()), 1, "Bench.Event", payload, {"topic": topic_of(event_class)},
        START, b"", b"",
    )  # fmt: skip


def decode_before_issue_13(recorded: RecordedEvent) -> dict[str, Any]:
    event_class = _resolve_topic(recorded.metadata["topic"])
    fields = loads_before_issue_13(recorded.payload)
    for name, convert in _converters(event_class):
        if fields.get(name) is not None:
            fields[name] = convert(fields[name])
    return fields


@given(stored_events())
def test_a_decoded_event_equals_the_one_before_msgspec_amount_for_amount(recorded_event):
    expected = decode_before_issue_13(recorded_event)
    expected["originator_id"] = uuid.UUID(recorded_event.stream_id)
    expected["originator_version"] = recorded_event.version
    actual = decode(recorded_event).__dict__
    assert exact_form(expected) == exact_form(actual)
    event_class = _resolve_topic(recorded_event.metadata["topic"])
    amounts = [actual[name] for name, convert in _converters(event_class) if convert is Decimal]
    assert all(type(amount) is Decimal for amount in amounts if amount is not None)

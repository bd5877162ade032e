"""The codec's decoder: exact (Decimals never pass through float) and equal to the domain."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ledger.codec import decode, encode_pending, loads_exact, rebuild
from ledger.money import Money
from ledger.payment import Payment
from ledger.ports import RecordedEvent

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

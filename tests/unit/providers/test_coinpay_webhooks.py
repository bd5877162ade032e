"""CoinPay webhooks: the JSON.stringify signature, and translation of the document's events."""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal

import pytest

from adapters.providers.coinpay import PROVIDER_ID, build_adapter
from adapters.providers.coinpay.javascript_json import parse_as_javascript, stringify
from adapters.providers.coinpay.webhooks import CoinPayWebhooks, signature_for
from adapters.providers.contract import TokenScope, WebhookBodyInvalid, WebhookDelivery
from ledger.commands import (
    PaymentUpdate,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    WithdrawalUpdate,
)
from ledger.deliveries import VerificationOutcome

SECRET = "whsec_coinpay_test"
ADAPTER = CoinPayWebhooks(SECRET)

# The document's `transaction.completed` data: transactionId, amount, currency, metadata.
COMPLETED_BODY = (
    b'{"event":"transaction.completed","data":{"transactionId":"tx_123","amount":100.5,'
    b'"currency":"USDC","metadata":{"orderId":"order-42","customerId":"cust-7"}}}'
)
FAILED_BODY = (
    b'{"event":"transaction.failed","data":{"transactionId":"tx_123",'
    b'"error":"Insufficient gas"}}'
)
PAYOUT_BODY = (
    b'{"event":"payout.completed","data":{"payoutId":"po_9","amount":250,"currency":"USDC"}}'
)


def node_signature(signed_text: str, secret: str = SECRET) -> str:
    """What CoinPay computes: HMAC-SHA256 hex over the JSON.stringify text (given literally)."""
    return hmac.new(secret.encode(), signed_text.encode(), hashlib.sha256).hexdigest()


def delivery(body: bytes, signature: str | None = None) -> WebhookDelivery:
    headers = {} if signature is None else {"x-signature": signature}
    return WebhookDelivery(provider=PROVIDER_ID, body=body, headers=headers)


def signed(body: bytes) -> WebhookDelivery:
    return delivery(body, node_signature(body.decode()))


# --- JSON.stringify(JSON.parse(body)), checked against outputs of Node's own JSON.stringify ------


@pytest.mark.parametrize(
    ("body", "node_output"),
    [
        (
            (
                '{"amount":100.50,"n":1.0,"big":12345678901234567890,"e":1e21,"f":1e20,'
                '"s":0.000001,"t":1e-7,"u":1.5e-7,"z":-0,"x":123456789012345678901234,'
                '"y":0.30000000000000004,"w":5e-324}'
            ),
            (
                '{"amount":100.5,"n":1,"big":12345678901234567000,"e":1e+21,'
                '"f":100000000000000000000,"s":0.000001,"t":1e-7,"u":1.5e-7,"z":0,'
                '"x":1.2345678901234569e+23,"y":0.30000000000000004,"w":5e-324}'
            ),
        ),
        ('{"b":1,"2":0,"1":0,"b":2,"01":3}', '{"1":0,"2":0,"b":2,"01":3}'),
        (
            '{"s":"\\u00e9\\u2028\\u0001\\ud800\\ud83d\\ude00\\/\\"\\\\"}',
            '{"s":"\u00e9\u2028\\u0001\\ud800\U0001f600/\\"\\\\"}',
        ),
        ('{"amount":10.123456789012345678}', '{"amount":10.123456789012346}'),
        ('{ "a" : [ 1 , true , null , { } , [ ] ] }', '{"a":[1,true,null,{},[]]}'),
    ],
)
def test_reserialization_matches_node(body: str, node_output: str) -> None:
    assert stringify(parse_as_javascript(body)) == node_output


def test_javascript_parse_refuses_what_json_parse_refuses() -> None:
    with pytest.raises(ValueError, match="NaN"):
        parse_as_javascript('{"a":NaN}')


# --- authenticate ---------------------------------------------------------------------------------


def test_token_scope_is_none_because_coinpay_signs() -> None:
    assert ADAPTER.token_scope is TokenScope.NONE


def test_good_signature_is_verified() -> None:
    verification = ADAPTER.authenticate(signed(COMPLETED_BODY))
    assert verification.outcome is VerificationOutcome.VERIFIED
    assert verification.reason == ""


def test_signature_is_over_reserialized_json_not_raw_bytes() -> None:
    # The same payload pretty-printed, with 100.50 for 100.5: JSON.stringify gives the compact
    # text, so CoinPay's signature over that text verifies this body too.
    pretty = json.dumps(json.loads(COMPLETED_BODY), indent=2).replace("100.5", "100.50").encode()
    assert pretty != COMPLETED_BODY
    verification = ADAPTER.authenticate(delivery(pretty, node_signature(COMPLETED_BODY.decode())))
    assert verification.outcome is VerificationOutcome.VERIFIED
    # A raw-body HMAC of the pretty text is not what CoinPay sends, and is refused.
    raw_body_signature = node_signature(pretty.decode())
    assert ADAPTER.authenticate(delivery(pretty, raw_body_signature)).reason == "signature_mismatch"


def test_non_ascii_is_signed_unescaped() -> None:
    body = '{"event":"transaction.failed","data":{"transactionId":"t1","error":"Geçersiz"}}'
    escaped_body = body.replace("ç", "\\u00e7").encode()
    verification = ADAPTER.authenticate(delivery(escaped_body, node_signature(body)))
    assert verification.outcome is VerificationOutcome.VERIFIED


def test_key_order_is_part_of_the_signature() -> None:
    reordered = (
        b'{"data":{"transactionId":"tx_123","amount":100.5,"currency":"USDC",'
        b'"metadata":{"orderId":"order-42","customerId":"cust-7"}},"event":"transaction.completed"}'
    )
    signature = node_signature(COMPLETED_BODY.decode())
    verification = ADAPTER.authenticate(delivery(reordered, signature))
    assert verification.outcome is VerificationOutcome.REJECTED
    assert verification.reason == "signature_mismatch"


def test_tampered_amount_is_rejected() -> None:
    signature = node_signature(COMPLETED_BODY.decode())
    tampered = COMPLETED_BODY.replace(b"100.5", b"1000.5")
    verification = ADAPTER.authenticate(delivery(tampered, signature))
    assert verification.outcome is VerificationOutcome.REJECTED
    assert verification.reason == "signature_mismatch"


def test_wrong_secret_is_rejected() -> None:
    signature = node_signature(COMPLETED_BODY.decode(), secret="another-secret")
    verification = ADAPTER.authenticate(delivery(COMPLETED_BODY, signature))
    assert verification.outcome is VerificationOutcome.REJECTED
    assert verification.reason == "signature_mismatch"


def test_upper_case_hex_is_rejected_as_node_compares_with_triple_equals() -> None:
    signature = node_signature(COMPLETED_BODY.decode()).upper()
    assert ADAPTER.authenticate(delivery(COMPLETED_BODY, signature)).reason == "signature_mismatch"


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature_is_rejected(signature: str | None) -> None:
    verification = ADAPTER.authenticate(delivery(COMPLETED_BODY, signature))
    assert verification.outcome is VerificationOutcome.REJECTED
    assert verification.reason == "signature_missing"


def test_authenticate_needs_json_because_the_signature_is_over_parsed_json() -> None:
    with pytest.raises(WebhookBodyInvalid) as raised:
        ADAPTER.authenticate(delivery(b"event=transaction.completed", "ab" * 32))
    assert raised.value.reason == "not_json"


def test_signature_for_matches_node_text() -> None:
    assert signature_for(COMPLETED_BODY, SECRET) == node_signature(COMPLETED_BODY.decode())


# --- translate ------------------------------------------------------------------------------------


def test_transaction_completed_reports_the_total_paid_and_the_word() -> None:
    translation = ADAPTER.translate(signed(COMPLETED_BODY))
    assert translation.event_type == "transaction.completed"
    (fact,) = translation.facts
    assert isinstance(fact, PaymentUpdate)
    assert fact.reference.provider == "coinpay"
    assert fact.reference.provider_ref == "tx_123"
    assert fact.reference.order_id == "order-42"
    assert fact.deposits == ()
    assert fact.cumulative is not None
    assert fact.cumulative.total == Decimal("100.5")
    assert fact.cumulative.currency == "USDC"
    assert fact.cumulative.confirmed is True
    assert fact.status is not None
    assert fact.status.status_word == "transaction.completed"
    assert fact.status.outcome is ProviderPaymentOutcome.PAID
    assert fact.status.amount_paid_reported == Decimal("100.5")


def test_amounts_are_exact_decimals_from_the_raw_body() -> None:
    body = COMPLETED_BODY.replace(b"100.5", b"0.123456789012345678901")
    (fact,) = ADAPTER.translate(delivery(body)).facts
    assert isinstance(fact, PaymentUpdate)
    assert fact.cumulative is not None
    total = fact.cumulative.total
    assert isinstance(total, Decimal)
    assert total == Decimal("0.123456789012345678901")


def test_string_amount_is_accepted_exactly() -> None:
    body = COMPLETED_BODY.replace(b"100.5", b'"100.50"')
    (fact,) = ADAPTER.translate(delivery(body)).facts
    assert isinstance(fact, PaymentUpdate)
    assert fact.cumulative is not None
    assert fact.cumulative.total == Decimal("100.50")


def test_transaction_failed_maps_to_failed() -> None:
    (fact,) = ADAPTER.translate(signed(FAILED_BODY)).facts
    assert isinstance(fact, PaymentUpdate)
    assert fact.reference.provider_ref == "tx_123"
    assert fact.cumulative is None
    assert fact.status is not None
    assert fact.status.outcome is ProviderPaymentOutcome.FAILED
    assert fact.status.status_word == "transaction.failed"


def test_payout_completed_completes_the_withdrawal() -> None:
    (fact,) = ADAPTER.translate(signed(PAYOUT_BODY)).facts
    assert isinstance(fact, WithdrawalUpdate)
    assert fact.reference.provider_ref == "po_9"
    assert fact.outcome is ProviderWithdrawalOutcome.COMPLETED
    assert fact.amount_sent == Decimal(250)
    assert fact.currency == "USDC"


def test_payout_completed_with_id_field_is_accepted() -> None:
    body = PAYOUT_BODY.replace(b'"payoutId"', b'"id"')
    (fact,) = ADAPTER.translate(delivery(body)).facts
    assert isinstance(fact, WithdrawalUpdate)
    assert fact.reference.provider_ref == "po_9"


def test_undocumented_payout_failed_fails_the_withdrawal() -> None:
    body = b'{"event":"payout.failed","data":{"payoutId":"po_9","error":"Account closed"}}'
    (fact,) = ADAPTER.translate(delivery(body)).facts
    assert isinstance(fact, WithdrawalUpdate)
    assert fact.outcome is ProviderWithdrawalOutcome.FAILED
    assert fact.failure_reason == "Account closed"
    assert fact.amount_sent is None


@pytest.mark.parametrize("event", ["transaction.pending", "wallet.updated", "swap.completed"])
def test_other_events_are_recorded_without_facts(event: str) -> None:
    body = json.dumps({"event": event, "data": {"transactionId": "tx_1"}}).encode()
    translation = ADAPTER.translate(delivery(body))
    assert translation.facts == ()
    assert translation.event_type == event
    assert translation.dedupe_key.startswith("coinpay:")


@pytest.mark.parametrize("body", [b"not json", b"{", b'{"a":NaN}', b"\xff\xfe"])
def test_not_json_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookBodyInvalid) as raised:
        ADAPTER.translate(delivery(body))
    assert raised.value.reason == "not_json"


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"transaction.completed"',
        b'{"data":{"transactionId":"t"}}',
        b'{"event":"transaction.completed"}',
        b'{"event":"transaction.completed","data":[]}',
        b'{"event":"transaction.completed","data":{"amount":1,"currency":"USDC"}}',
        b'{"event":"transaction.completed","data":{"transactionId":"t","currency":"USDC"}}',
        (
            b'{"event":"transaction.completed","data":{"transactionId":"t","amount":true,'
            b'"currency":"USDC"}}'
        ),
        (
            b'{"event":"transaction.completed","data":{"transactionId":"t","amount":"ten",'
            b'"currency":"USDC"}}'
        ),
        (
            b'{"event":"transaction.completed","data":{"transactionId":"t","amount":-1,'
            b'"currency":"USDC"}}'
        ),
        b'{"event":"transaction.completed","data":{"transactionId":"t","amount":1}}',
        b'{"event":"transaction.failed","data":{"error":"x"}}',
        b'{"event":"payout.completed","data":{"amount":1}}',
    ],
)
def test_wrong_shape_is_refused(body: bytes) -> None:
    with pytest.raises(WebhookBodyInvalid) as raised:
        ADAPTER.translate(delivery(body))
    assert raised.value.reason == "wrong_shape"


def test_dedupe_key_is_stable_and_ignores_formatting() -> None:
    first = ADAPTER.translate(delivery(COMPLETED_BODY)).dedupe_key
    again = ADAPTER.translate(delivery(COMPLETED_BODY)).dedupe_key
    pretty = json.dumps(json.loads(COMPLETED_BODY), indent=2).encode()
    assert first == again == ADAPTER.translate(delivery(pretty)).dedupe_key
    assert first.startswith("coinpay:")
    assert len(first) == len("coinpay:") + 64


def test_dedupe_key_differs_when_the_total_differs() -> None:
    other = COMPLETED_BODY.replace(b"100.5", b"50.25")
    assert (
        ADAPTER.translate(delivery(COMPLETED_BODY)).dedupe_key
        != ADAPTER.translate(delivery(other)).dedupe_key
    )


def test_build_adapter_wires_the_secret_and_refuses_missing_settings() -> None:
    adapter = build_adapter(
        {"base_url": "http://127.0.0.1:1", "username": "u", "password": "p",
         "webhook_secret": SECRET}
    )
    assert adapter.name == "coinpay"
    assert adapter.webhooks.authenticate(signed(COMPLETED_BODY)).outcome is (
        VerificationOutcome.VERIFIED
    )
    with pytest.raises(ValueError, match="webhook_secret"):
        build_adapter({"base_url": "http://x", "username": "u", "password": "p"})

"""Cryptofuse webhooks: raw-body HMAC-SHA256 signatures and the translation of every example the
integration document shows (its `// comments` removed, otherwise verbatim)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.providers.contract import TokenScope, WebhookBodyInvalid, WebhookDelivery
from adapters.providers.cryptofuse import PROVIDER_ID, build_adapter
from adapters.providers.cryptofuse.translate import PayloadTranslator
from adapters.providers.cryptofuse.webhooks import CryptofuseWebhooks
from ledger.commands import (
    PaymentUpdate,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    Translation,
    WithdrawalUpdate,
)
from ledger.deliveries import VerificationOutcome

SECRET = "whsec-test"

CONFIRMING = b"""{
"transaction_id": "550e8400-e29b-41d4-a716-446655440000",
"event": "payment_status_update",
"status": "confirming",
"timestamp": "2024-12-27T10:05:00Z",
"data": {
"transaction_id": "550e8400-e29b-41d4-a456-426614174000",
"status": "confirming",
"amount_usd": "100.00",
"amount_crypto": "100.00000000",
"blockchain": "TRX",
"token": "USDT",
"currency": "USDTTRC20",
"address": "TXYZabc123...",
"transaction_hash": "0xabc123...",
"confirmations": 1,
"payment_history": [
{
"deposit_id": "dep_123",
"amount": "100.00000000",
"transaction_hash": "0xabc123...",
"confirmations": 1,
"timestamp": "2024-12-27T10:05:00Z"
}
],
"total_paid_amount": "100.00000000"
}
}"""

COMPLETED = b"""{
"transaction_id": "550e8400-e29b-41d4-a456-426614174000",
"event": "payment_status_update",
"status": "completed",
"timestamp": "2024-12-27T10:10:00Z",
"data": {
"transaction_id": "550e8400-e29b-41d4-a456-426614174000",
"status": "completed",
"amount_usd": "100.00",
"amount_crypto": "100.00000000",
"payment_type": "full",
"final_usd_value": 99.50,
"transaction_hash": "0xabc123...",
"confirmations": 20,
"payment_history": [
{
"deposit_id": "dep_123",
"amount": "100.00000000",
"transaction_hash": "0xabc123...",
"confirmations": 20,
"timestamp": "2024-12-27T10:05:00Z"
}
],
"total_paid_amount": "100.00000000"
}
}"""

OVERPAYMENT = b"""{
"status": "completed",
"payment_type": "overpayment",
"total_paid_amount": "150.00000000",
"overpayment_amount": "50.00000000",
"overpayment_usd_value": "49.75",
"amount_limited": true,
"rejected_amount": "30.00000000"
}"""

PARTIAL = b"""{
"status": "partially_paid",
"payment_type": "partial",
"total_paid_amount": "50.00000000"
}"""

EXPIRED = b"""{
"status": "expired",
"timestamp": "2024-12-27T10:30:00Z"
}"""

WITHDRAWAL_PROCESSING = b"""{
"withdrawal_id": "660e8400-e29b-12d3-a456-426614174000",
"event": "withdrawal_status_update",
"status": "processing",
"timestamp": "2024-12-27T11:05:00Z",
"data": {
"withdrawal_id": "660e8400-e29b-12d3-a456-426614174000",
"status": "processing",
"amount": "98.50000000",
"currency": "USDTTRC20"
}
}"""

WITHDRAWAL_COMPLETED = b"""{
"withdrawal_id": "660e8400-e29b-12d3-a456-426614174000",
"event": "withdrawal_status_update",
"status": "completed",
"timestamp": "2024-12-27T11:10:00Z",
"data": {
"withdrawal_id": "660e8400-e29b-12d3-a456-426614174000",
"status": "completed",
"transaction_hash": "0xdef456...",
"confirmations": 20,
"completed_at": "2024-12-27T11:10:00Z"
}
}"""


def adapter(confirmations_required: int = 20, secret: str = SECRET) -> CryptofuseWebhooks:
    return CryptofuseWebhooks(secret, PayloadTranslator("USDTTRC20", confirmations_required))


def delivery(body: bytes, signature: str | None = None) -> WebhookDelivery:
    headers = {} if signature is None else {"x-webhook-signature": signature}
    return WebhookDelivery(provider=PROVIDER_ID, body=body, headers=headers)


def signed(body: bytes, secret: str = SECRET) -> WebhookDelivery:
    return delivery(body, hmac.new(secret.encode(), body, hashlib.sha256).hexdigest())


def translate(body: bytes, confirmations_required: int = 20) -> Translation:
    return adapter(confirmations_required).translate(delivery(body))


def payment(body: bytes, confirmations_required: int = 20) -> PaymentUpdate:
    facts = translate(body, confirmations_required).facts
    assert len(facts) == 1
    fact = facts[0]
    assert isinstance(fact, PaymentUpdate)
    return fact


def withdrawal(body: bytes) -> WithdrawalUpdate:
    facts = translate(body).facts
    assert len(facts) == 1
    fact = facts[0]
    assert isinstance(fact, WithdrawalUpdate)
    return fact


def with_status(status: str, payment_type: str | None = None) -> bytes:
    document = json.loads(COMPLETED)
    document["status"] = document["data"]["status"] = status
    if payment_type is None:
        del document["data"]["payment_type"]
    else:
        document["data"]["payment_type"] = payment_type
    return json.dumps(document).encode()


# ---------------------------------------------------------------------------- authentication


def test_signed_with_the_webhook_secret_is_verified() -> None:
    verification = adapter().authenticate(signed(CONFIRMING))
    assert verification.outcome is VerificationOutcome.VERIFIED
    assert verification.scheme == "hmac-sha256-raw-body"
    assert adapter().token_scope is TokenScope.NONE


def test_the_signature_is_over_the_raw_bytes_not_reserialized_json() -> None:
    compact = json.dumps(json.loads(CONFIRMING), separators=(",", ":")).encode()
    good = signed(CONFIRMING)
    moved = delivery(compact, good.headers["x-webhook-signature"])
    assert adapter().authenticate(moved).reason == "signature_mismatch"


def test_tampered_body_is_rejected() -> None:
    good = signed(COMPLETED)
    tampered = delivery(COMPLETED.replace(b"100.00000000", b"900.00000000"),
                        good.headers["x-webhook-signature"])
    verification = adapter().authenticate(tampered)
    assert verification.outcome is VerificationOutcome.REJECTED
    assert verification.reason == "signature_mismatch"


def test_wrong_secret_is_rejected() -> None:
    verification = adapter().authenticate(signed(COMPLETED, secret="another-secret"))
    assert verification.outcome is VerificationOutcome.REJECTED
    assert verification.reason == "signature_mismatch"


@pytest.mark.parametrize("signature", [None, "", "   "])
def test_missing_signature_is_rejected(signature: str | None) -> None:
    verification = adapter().authenticate(delivery(COMPLETED, signature))
    assert verification.outcome is VerificationOutcome.REJECTED
    assert verification.reason == "signature_missing"


def test_upper_case_hex_signature_is_accepted() -> None:
    good = signed(COMPLETED)
    upper = delivery(COMPLETED, good.headers["x-webhook-signature"].upper())
    assert adapter().authenticate(upper).outcome is VerificationOutcome.VERIFIED


def test_non_ascii_signature_is_a_mismatch_not_a_crash() -> None:
    assert adapter().authenticate(delivery(COMPLETED, "é" * 64)).reason == "signature_mismatch"


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="webhook_secret"):
        adapter(secret="")
    with pytest.raises(ValueError, match="webhook_secret"):
        build_adapter({"base_url": "http://x", "client_id": "a", "client_secret": "b"})


# ---------------------------------------------------------------------------- payment examples


def test_confirming_example() -> None:
    update = payment(CONFIRMING)
    # The envelope's id, not the different one the example has inside `data`.
    assert update.reference.provider_ref == "550e8400-e29b-41d4-a716-446655440000"
    assert update.reference.pay_address == "TXYZabc123..."
    (deposit,) = update.deposits
    assert deposit.deposit_id == "dep_123"
    assert deposit.amount == Decimal("100.00000000")
    assert str(deposit.amount) == "100.00000000"
    assert deposit.currency == "USDTTRC20"
    assert deposit.confirmations == 1
    assert deposit.confirmed is False
    assert deposit.tx_hash == "0xabc123..."
    assert deposit.observed_at == datetime(2024, 12, 27, 10, 5, tzinfo=UTC)
    assert update.status is not None
    assert update.status.status_word == "confirming"
    assert update.status.outcome is ProviderPaymentOutcome.CONFIRMING
    assert update.status.amount_paid_reported == Decimal("100.00000000")
    assert update.status.reported_at == datetime(2024, 12, 27, 10, 5, tzinfo=UTC)
    assert update.cumulative is None


def test_completed_example() -> None:
    translation = translate(COMPLETED)
    assert translation.event_type == "payment_status_update"
    update = payment(COMPLETED)
    assert update.reference.provider_ref == "550e8400-e29b-41d4-a456-426614174000"
    (deposit,) = update.deposits
    assert deposit.deposit_id == "dep_123"  # the same deposit as in "confirming": counted once
    assert deposit.amount == Decimal("100.00000000")
    # The example names no currency: the adapter's default pay currency is assumed.
    assert deposit.currency == "USDTTRC20"
    assert deposit.confirmed is True
    assert deposit.confirmations == 20
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.PAID
    assert update.status.reported_at == datetime(2024, 12, 27, 10, 10, tzinfo=UTC)


def test_overpayment_example_counts_no_funds_and_not_the_rejected_amount() -> None:
    update = payment(OVERPAYMENT)
    assert update.status is not None
    assert update.status.status_word == "completed"
    assert update.status.outcome is ProviderPaymentOutcome.OVERPAID
    # What the provider says was paid, as given: 150, not 150 - 30 nor 150 + 30.
    assert update.status.amount_paid_reported == Decimal("150.00000000")
    assert update.deposits == ()
    assert update.cumulative is None
    assert update.reference.provider_ref is None


def test_partial_example() -> None:
    update = payment(PARTIAL)
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.PARTIALLY_PAID
    assert update.status.amount_paid_reported == Decimal("50.00000000")
    assert update.deposits == ()


def test_expired_example_without_data() -> None:
    update = payment(EXPIRED)
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.EXPIRED
    assert update.status.reported_at == datetime(2024, 12, 27, 10, 30, tzinfo=UTC)
    assert update.reference.provider_ref is None  # nothing to match it by: unmatched
    assert update.deposits == ()


def test_expired_with_a_top_level_transaction_id_names_its_payment() -> None:
    body = b'{"transaction_id": "tx-1", "status": "expired", "timestamp": "2024-12-27T10:30:00Z"}'
    assert payment(body).reference.provider_ref == "tx-1"


def test_data_transaction_id_is_the_fallback_reference() -> None:
    document = json.loads(CONFIRMING)
    del document["transaction_id"]
    update = payment(json.dumps(document).encode())
    assert update.reference.provider_ref == "550e8400-e29b-41d4-a456-426614174000"


def test_partially_paid_deposits_are_final_even_with_few_confirmations() -> None:
    document = json.loads(CONFIRMING)
    document["status"] = document["data"]["status"] = "partially_paid"
    document["data"]["payment_type"] = "partial"
    (deposit,) = payment(json.dumps(document).encode()).deposits
    assert deposit.confirmations == 1
    assert deposit.confirmed is True


def test_confirming_deposit_is_confirmed_at_the_threshold() -> None:
    document = json.loads(CONFIRMING)
    document["data"]["payment_history"][0]["confirmations"] = 19
    assert payment(json.dumps(document).encode()).deposits[0].confirmed is False
    document["data"]["payment_history"][0]["confirmations"] = 20
    assert payment(json.dumps(document).encode()).deposits[0].confirmed is True
    document["data"]["payment_history"][0]["confirmations"] = 3
    assert payment(json.dumps(document).encode(), confirmations_required=3).deposits[0].confirmed


def test_numbers_in_history_are_exact() -> None:
    body = CONFIRMING.replace(b'"amount": "100.00000000"', b'"amount": 0.1000000000000000055511')
    assert payment(body).deposits[0].amount == Decimal("0.1000000000000000055511")


@pytest.mark.parametrize(
    ("status", "payment_type", "outcome"),
    [
        ("waiting", None, ProviderPaymentOutcome.PENDING),
        ("confirming", None, ProviderPaymentOutcome.CONFIRMING),
        ("completed", None, ProviderPaymentOutcome.PAID),
        ("completed", "full", ProviderPaymentOutcome.PAID),
        ("completed", "overpayment", ProviderPaymentOutcome.OVERPAID),
        ("completed", "partial", ProviderPaymentOutcome.PARTIALLY_PAID),
        ("completed", "something_new", ProviderPaymentOutcome.UNKNOWN),
        ("partially_paid", "partial", ProviderPaymentOutcome.PARTIALLY_PAID),
        ("expired", None, ProviderPaymentOutcome.EXPIRED),
        ("failed", None, ProviderPaymentOutcome.FAILED),
        ("refunded", None, ProviderPaymentOutcome.UNKNOWN),
    ],
)
def test_every_payment_status_word(
    status: str, payment_type: str | None, outcome: ProviderPaymentOutcome
) -> None:
    update = payment(with_status(status, payment_type))
    assert update.status is not None
    assert update.status.status_word == status
    assert update.status.outcome is outcome


# ---------------------------------------------------------------------------- withdrawals


def test_withdrawal_processing_example() -> None:
    update = withdrawal(WITHDRAWAL_PROCESSING)
    assert update.reference.provider_ref == "660e8400-e29b-12d3-a456-426614174000"
    assert update.status_word == "processing"
    assert update.outcome is ProviderWithdrawalOutcome.PROCESSING
    assert update.amount_sent == Decimal("98.50000000")
    assert update.currency == "USDTTRC20"
    assert update.tx_hash is None
    assert update.reported_at == datetime(2024, 12, 27, 11, 5, tzinfo=UTC)


def test_withdrawal_completed_example() -> None:
    translation = translate(WITHDRAWAL_COMPLETED)
    assert translation.event_type == "withdrawal_status_update"
    update = withdrawal(WITHDRAWAL_COMPLETED)
    assert update.outcome is ProviderWithdrawalOutcome.COMPLETED
    assert update.tx_hash == "0xdef456..."
    assert update.amount_sent is None  # the example gives none: the domain uses requested - fee
    assert update.reported_at == datetime(2024, 12, 27, 11, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("pending", ProviderWithdrawalOutcome.SUBMITTED),
        ("processing", ProviderWithdrawalOutcome.PROCESSING),
        ("completed", ProviderWithdrawalOutcome.COMPLETED),
        ("failed", ProviderWithdrawalOutcome.FAILED),
        ("on_hold", ProviderWithdrawalOutcome.UNKNOWN),
    ],
)
def test_every_withdrawal_status_word(status: str, outcome: ProviderWithdrawalOutcome) -> None:
    document = json.loads(WITHDRAWAL_PROCESSING)
    document["status"] = document["data"]["status"] = status
    update = withdrawal(json.dumps(document).encode())
    assert update.outcome is outcome
    assert update.status_word == status


def test_withdrawal_without_event_word_is_recognised_by_its_id() -> None:
    update = withdrawal(b'{"withdrawal_id": "w-1", "status": "failed"}')
    assert update.outcome is ProviderWithdrawalOutcome.FAILED
    assert update.reference.provider_ref == "w-1"


def test_unknown_event_is_recorded_without_facts() -> None:
    translation = translate(b'{"event": "balance_update", "status": "ok"}')
    assert translation.facts == ()
    assert translation.event_type == "balance_update"


# ---------------------------------------------------------------------------- bad bodies


@pytest.mark.parametrize(
    "body", [b"not json", b"", b"\xff\xfe", b'{"status": NaN}', b'{"status": "x"'],
)
def test_not_json(body: bytes) -> None:
    with pytest.raises(WebhookBodyInvalid) as raised:
        translate(body)
    assert raised.value.reason == "not_json"


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"completed"',
        b"{}",
        b'{"event": "payment_status_update", "data": {}}',
        b'{"status": "confirming", "data": []}',
        b'{"status": 7}',
        b'{"status": "confirming", "transaction_id": {"id": 1}}',
        b'{"status": "confirming", "data": {"payment_history": {}}}',
        b'{"status": "confirming", "data": {"payment_history": ["dep"]}}',
        b'{"status": "confirming", "data": {"payment_history": [{"deposit_id": "d"}]}}',
        b'{"status": "confirming", "data": {"payment_history": [{"amount": "abc"}]}}',
        b'{"status": "confirming", "data": {"payment_history": [{"amount": "-1"}]}}',
        b'{"status": "confirming", "data": {"payment_history": [{"amount": "0"}]}}',
        (b'{"status": "confirming", "data": {"payment_history": [{"amount": 1.5, '
        b'"confirmations": -1}]}}'),
        (b'{"status": "confirming", "data": {"payment_history": [{"amount": "1", '
        b'"timestamp": "yesterday"}]}}'),
        b'{"status": "completed", "total_paid_amount": true}',
        b'{"event": "withdrawal_status_update", "withdrawal_id": "w"}',
        (b'{"event": "withdrawal_status_update", "status": "completed", '
        b'"data": {"amount": "lots"}}'),
    ],
)
def test_wrong_shape(body: bytes) -> None:
    with pytest.raises(WebhookBodyInvalid) as raised:
        translate(body)
    assert raised.value.reason == "wrong_shape"


@pytest.mark.parametrize("confirmations", ["1" * 11_516, "1" * 19, "\u00b2", -1, 10**30])
def test_a_confirmation_count_that_is_no_count_is_the_wrong_shape(confirmations: object) -> None:
    """11,516 digits made `int` raise past the interpreter's limit: a 500 until the webhook
    fuzz test found it."""
    document = json.loads(CONFIRMING)
    document["data"]["payment_history"][0]["confirmations"] = confirmations
    with pytest.raises(WebhookBodyInvalid) as raised:
        translate(json.dumps(document).encode())
    assert raised.value.reason == "wrong_shape"


# ---------------------------------------------------------------------------- dedupe and ids


def test_dedupe_key_is_stable_and_ignores_formatting() -> None:
    first = translate(CONFIRMING).dedupe_key
    assert first == translate(CONFIRMING).dedupe_key
    assert first.startswith("cryptofuse:")
    reordered = json.dumps(json.loads(CONFIRMING), sort_keys=True, indent=4).encode()
    assert translate(reordered).dedupe_key == first
    canonical = json.dumps(json.loads(CONFIRMING), sort_keys=True, separators=(",", ":"))
    assert first == "cryptofuse:" + hashlib.sha256(canonical.encode()).hexdigest()


def test_dedupe_key_differs_between_status_updates() -> None:
    keys = {translate(body).dedupe_key for body in (CONFIRMING, COMPLETED, PARTIAL, EXPIRED)}
    assert len(keys) == 4


def test_dedupe_key_keeps_decimal_digits() -> None:
    one = b'{"status": "completed", "total_paid_amount": 1.0}'
    other = b'{"status": "completed", "total_paid_amount": 1.00}'
    assert translate(one).dedupe_key != translate(other).dedupe_key
    assert translate(one).dedupe_key.endswith(
        hashlib.sha256(b'{"status":"completed","total_paid_amount":1.0}').hexdigest()
    )


def _history_body(entries: list[dict[str, object]], confirmations: int = 1) -> bytes:
    for entry in entries:
        entry["confirmations"] = confirmations
    return json.dumps(
        {"transaction_id": "tx-9", "status": "confirming", "data": {"payment_history": entries}}
    ).encode()


def test_deposit_without_id_uses_its_transaction_hash() -> None:
    body = _history_body([{"amount": "5", "transaction_hash": "0xfeed"}])
    assert payment(body).deposits[0].deposit_id == "0xfeed"


def test_deposit_without_id_or_hash_gets_a_stable_derived_id() -> None:
    def entries() -> list[dict[str, object]]:
        return [
            {"amount": "5", "timestamp": "2024-12-27T10:05:00Z"},
            {"amount": "5", "timestamp": "2024-12-27T10:05:00Z"},
            {"amount": "7", "timestamp": "2024-12-27T10:06:00Z"},
        ]

    early = [d.deposit_id for d in payment(_history_body(entries(), confirmations=1)).deposits]
    later = [d.deposit_id for d in payment(_history_body(entries(), confirmations=25)).deposits]
    assert early == later  # more confirmations: still the same deposits
    assert len(set(early)) == 3  # two equal-looking entries are two deposits
    assert all(deposit_id.startswith("cryptofuse-deposit:") for deposit_id in early)


# ---------------------------------------------------------------------------- status answers


def test_status_answer_has_the_shape_of_webhook_data() -> None:
    data = json.dumps(json.loads(COMPLETED)["data"]).encode()
    translator = PayloadTranslator("USDTTRC20", 20)
    translation = translator.translate_status(data, "fallback-ref")
    assert translation.event_type == "payment_status_query"
    assert translation.dedupe_key.startswith("cryptofuse:status:")
    (update,) = translation.facts
    assert isinstance(update, PaymentUpdate)
    assert update.reference.provider_ref == "550e8400-e29b-41d4-a456-426614174000"
    assert update.deposits[0].confirmed is True
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.PAID

    bare = translator.translate_status(b'{"status": "waiting"}', "fallback-ref")
    assert isinstance(bare.facts[0], PaymentUpdate)
    assert bare.facts[0].reference.provider_ref == "fallback-ref"

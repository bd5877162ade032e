"""Payment Engine webhooks: the signature over the raw body, and what each event means."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.providers.contract import TokenScope, WebhookBodyInvalid, WebhookDelivery
from adapters.providers.payment_engine import PROVIDER_ID, build_adapter
from adapters.providers.payment_engine.webhooks import PaymentEngineWebhooks
from ledger.commands import (
    DepositReport,
    PaymentUpdate,
    ProviderBalanceReport,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    WithdrawalUpdate,
)
from ledger.deliveries import VerificationOutcome

SECRET = "whsec_test"
MERCHANT = "acc_merchant"


@pytest.fixture
def webhooks() -> PaymentEngineWebhooks:
    return PaymentEngineWebhooks(SECRET, MERCHANT)


def signed(body: str, secret: str = SECRET) -> WebhookDelivery:
    """Signs the way the guide's Node.js and Python examples do, independently of the adapter."""
    digest = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return WebhookDelivery(
        provider=PROVIDER_ID,
        body=body.encode(),
        headers={"x-webhook-signature": f"sha256={digest}", "content-type": "application/json"},
    )


def unsigned(body: str) -> WebhookDelivery:
    return WebhookDelivery(provider=PROVIDER_ID, body=body.encode(), headers={})


# Shapes from the guide: its handler reads data.transactionId and data.transactionReference,
# its e-commerce example data.externalReference and data.failureReason, its balance handler
# data.accountId; amounts as the guide writes them (1000.00).
COMPLETED = """{"eventId": "evt_001", "eventType": "transaction.completed",
 "timestamp": "2024-01-15T10:30:00Z",
 "data": {"transactionId": "txn_123", "transactionReference": "ORDER-1",
          "amount": 1000.00, "currencyCode": "USD"}}"""
COMPLETED_ECOMMERCE = """{"eventId": "evt_002", "eventType": "transaction.completed",
 "data": {"transactionId": "txn_124", "externalReference": "ORDER-2",
          "amount": 99.99, "currencyCode": "USD"}}"""
CREATED = """{"eventId": "evt_003", "eventType": "transaction.created",
 "data": {"transactionId": "txn_125", "externalReference": "ORDER-3", "status": "PENDING",
          "amount": 100.00, "currencyCode": "USD"}}"""
FAILED = """{"eventId": "evt_004", "eventType": "transaction.failed",
 "data": {"transactionId": "txn_126", "externalReference": "ORDER-4",
          "failureReason": "INSUFFICIENT_FUNDS"}}"""
BALANCE = """{"eventId": "evt_005", "eventType": "account.balance.updated",
 "timestamp": "2024-01-15T10:30:00Z",
 "data": {"accountId": "acc_123", "availableBalance": 500.00, "currencyCode": "USD"}}"""


def only_fact(webhooks: PaymentEngineWebhooks, body: str) -> object:
    translation = webhooks.translate(signed(body))
    assert len(translation.facts) == 1
    return translation.facts[0]


# ---------------------------------------------------------------- authentication


def test_a_correct_signature_verifies(webhooks: PaymentEngineWebhooks) -> None:
    verification = webhooks.authenticate(signed(COMPLETED))
    assert verification.outcome is VerificationOutcome.VERIFIED
    assert verification.scheme == "hmac-sha256-raw-body"
    assert webhooks.token_scope is TokenScope.NONE


def test_a_tampered_body_is_rejected(webhooks: PaymentEngineWebhooks) -> None:
    delivery = signed(COMPLETED)
    tampered = WebhookDelivery(
        provider=PROVIDER_ID,
        body=delivery.body.replace(b"1000.00", b"9000.00"),
        headers=delivery.headers,
    )
    verification = webhooks.authenticate(tampered)
    assert (VerificationOutcome.REJECTED, "signature_mismatch") == (
        verification.outcome, verification.reason
    )


def test_a_signature_made_with_another_secret_is_rejected(
    webhooks: PaymentEngineWebhooks,
) -> None:
    verification = webhooks.authenticate(signed(COMPLETED, secret="someone-else"))
    assert (VerificationOutcome.REJECTED, "signature_mismatch") == (
        verification.outcome, verification.reason
    )


def test_a_missing_signature_header_is_rejected(webhooks: PaymentEngineWebhooks) -> None:
    verification = webhooks.authenticate(unsigned(COMPLETED))
    assert (VerificationOutcome.REJECTED, "signature_missing") == (
        verification.outcome, verification.reason
    )


def test_a_signature_without_the_sha256_prefix_is_rejected(
    webhooks: PaymentEngineWebhooks,
) -> None:
    bare = signed(COMPLETED).headers["x-webhook-signature"].removeprefix("sha256=")
    delivery = WebhookDelivery(
        provider=PROVIDER_ID, body=COMPLETED.encode(), headers={"x-webhook-signature": bare}
    )
    verification = webhooks.authenticate(delivery)
    assert (VerificationOutcome.REJECTED, "signature_malformed") == (
        verification.outcome, verification.reason
    )


def test_a_non_ascii_signature_is_rejected_not_raised(webhooks: PaymentEngineWebhooks) -> None:
    delivery = WebhookDelivery(
        provider=PROVIDER_ID, body=b"{}", headers={"x-webhook-signature": "sha256=\u00e9\u00e9"}
    )
    assert webhooks.authenticate(delivery).outcome is VerificationOutcome.REJECTED


def test_the_signature_covers_the_raw_bytes_not_reserialized_json(
    webhooks: PaymentEngineWebhooks,
) -> None:
    """Re-serializing would turn 1000.00 into 1000.0 and break the guide's scheme."""
    reserialized = json.dumps(json.loads(COMPLETED))
    delivery = signed(COMPLETED)
    moved = WebhookDelivery(PROVIDER_ID, reserialized.encode(), delivery.headers)
    assert webhooks.authenticate(moved).outcome is VerificationOutcome.REJECTED


def test_a_webhook_secret_is_required() -> None:
    with pytest.raises(ValueError, match="webhook_secret"):
        PaymentEngineWebhooks("", MERCHANT)


# ---------------------------------------------------------------- payments


def test_a_completed_transaction_is_one_confirmed_deposit_with_its_exact_amount(
    webhooks: PaymentEngineWebhooks,
) -> None:
    fact = only_fact(webhooks, COMPLETED)
    assert isinstance(fact, PaymentUpdate)
    assert ("txn_123", "ORDER-1") == (fact.reference.provider_ref, fact.reference.order_id)
    observed_at = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    assert (
        DepositReport(
            deposit_id="txn_123",
            amount=Decimal("1000.00"),
            currency="USD",
            confirmed=True,
            observed_at=observed_at,
        ),
    ) == fact.deposits
    assert str(fact.deposits[0].amount) == "1000.00"
    assert fact.status is not None
    assert ("COMPLETED", ProviderPaymentOutcome.PAID) == (
        fact.status.status_word, fact.status.outcome
    )


def test_the_external_reference_names_the_order(webhooks: PaymentEngineWebhooks) -> None:
    fact = only_fact(webhooks, COMPLETED_ECOMMERCE)
    assert isinstance(fact, PaymentUpdate)
    assert fact.reference.order_id == "ORDER-2"
    assert fact.deposits[0].amount == Decimal("99.99")
    assert fact.deposits[0].observed_at is None


def test_a_created_transaction_is_pending_and_moves_no_money(
    webhooks: PaymentEngineWebhooks,
) -> None:
    fact = only_fact(webhooks, CREATED)
    assert isinstance(fact, PaymentUpdate)
    assert fact.deposits == ()
    assert fact.status is not None
    assert ("PENDING", ProviderPaymentOutcome.PENDING) == (
        fact.status.status_word, fact.status.outcome
    )


def test_a_created_transaction_without_status_is_pending(webhooks: PaymentEngineWebhooks) -> None:
    body = '{"eventId": "e", "eventType": "transaction.created", "data": {"transactionId": "t"}}'
    fact = only_fact(webhooks, body)
    assert isinstance(fact, PaymentUpdate)
    assert fact.status is not None
    assert fact.status.outcome is ProviderPaymentOutcome.PENDING


@pytest.mark.parametrize(
    ("word", "outcome"),
    [
        ("PENDING", ProviderPaymentOutcome.PENDING),
        ("PROCESSING", ProviderPaymentOutcome.CONFIRMING),
        ("COMPLETED", ProviderPaymentOutcome.PAID),
        ("FAILED", ProviderPaymentOutcome.FAILED),
        ("ON_HOLD", ProviderPaymentOutcome.UNKNOWN),
    ],
)
def test_every_status_word_maps_to_a_payment_outcome(
    webhooks: PaymentEngineWebhooks, word: str, outcome: ProviderPaymentOutcome
) -> None:
    data = {"transactionId": "t", "status": word, "amount": 1, "currencyCode": "USD"}
    body = json.dumps({"eventId": "e", "eventType": "transaction.created", "data": data})
    fact = only_fact(webhooks, body)
    assert isinstance(fact, PaymentUpdate)
    assert fact.status is not None
    assert (word, outcome) == (fact.status.status_word, fact.status.outcome)


def test_a_failed_transaction_fails_the_payment(webhooks: PaymentEngineWebhooks) -> None:
    fact = only_fact(webhooks, FAILED)
    assert isinstance(fact, PaymentUpdate)
    assert fact.deposits == ()
    assert fact.status is not None
    assert ("FAILED", ProviderPaymentOutcome.FAILED) == (
        fact.status.status_word, fact.status.outcome
    )


def test_failure_reason_expired_is_read_as_expiry(webhooks: PaymentEngineWebhooks) -> None:
    fact = only_fact(webhooks, FAILED.replace("INSUFFICIENT_FUNDS", "EXPIRED"))
    assert isinstance(fact, PaymentUpdate)
    assert fact.status is not None
    assert fact.status.outcome is ProviderPaymentOutcome.EXPIRED


def test_an_unknown_event_type_is_recorded_without_facts(webhooks: PaymentEngineWebhooks) -> None:
    body = '{"eventId": "evt_9", "eventType": "payout.scheduled", "data": {"x": 1}}'
    translation = webhooks.translate(signed(body))
    assert ("payment_engine:evt_9", (), "payout.scheduled") == (
        translation.dedupe_key, translation.facts, translation.event_type
    )


# ---------------------------------------------------------------- withdrawals


def withdrawal_body(event_type: str, **extra: object) -> str:
    data = {
        "transactionId": "txn_w1",
        "externalReference": "REQ-1",
        "fromAccountId": MERCHANT,
        "toAccountId": "TXyzAddress",
        "amount": Decimal("25.50"),
        "currencyCode": "USDT",
        **extra,
    }
    return json.dumps(
        {"eventId": f"evt_{event_type}", "eventType": event_type, "data": data},
        default=str,
    ).replace('"25.50"', "25.50")


@pytest.mark.parametrize(
    ("event_type", "extra", "word", "outcome"),
    [
        ("transaction.created", {}, "PENDING", ProviderWithdrawalOutcome.SUBMITTED),
        ("transaction.created", {"status": "PROCESSING"}, "PROCESSING",
         ProviderWithdrawalOutcome.PROCESSING),
        ("transaction.completed", {}, "COMPLETED", ProviderWithdrawalOutcome.COMPLETED),
        ("transaction.failed", {"failureReason": "INVALID_ACCOUNT_STATUS"}, "FAILED",
         ProviderWithdrawalOutcome.FAILED),
        ("transaction.created", {"status": "QUEUED"}, "QUEUED", ProviderWithdrawalOutcome.UNKNOWN),
    ],
)
def test_money_leaving_the_merchant_account_is_a_withdrawal(
    webhooks: PaymentEngineWebhooks,
    event_type: str,
    extra: dict[str, object],
    word: str,
    outcome: ProviderWithdrawalOutcome,
) -> None:
    fact = only_fact(webhooks, withdrawal_body(event_type, **extra))
    assert isinstance(fact, WithdrawalUpdate)
    assert ("txn_w1", "REQ-1") == (fact.reference.provider_ref, fact.reference.request_id)
    assert (word, outcome) == (fact.status_word, fact.outcome)


def test_a_completed_withdrawal_reports_the_exact_amount_sent(
    webhooks: PaymentEngineWebhooks,
) -> None:
    fact = only_fact(webhooks, withdrawal_body("transaction.completed"))
    assert isinstance(fact, WithdrawalUpdate)
    assert (Decimal("25.50"), "USDT") == (fact.amount_sent, fact.currency)
    assert str(fact.amount_sent) == "25.50"


def test_a_failed_withdrawal_keeps_its_failure_reason(webhooks: PaymentEngineWebhooks) -> None:
    fact = only_fact(
        webhooks, withdrawal_body("transaction.failed", failureReason="INVALID_ACCOUNT_STATUS")
    )
    assert isinstance(fact, WithdrawalUpdate)
    assert (None, "INVALID_ACCOUNT_STATUS") == (fact.amount_sent, fact.failure_reason)


def test_the_merchant_account_comes_from_settings() -> None:
    adapter = build_adapter(
        {"base_url": "http://x", "api_key": "k", "webhook_secret": SECRET,
         "merchant_account_id": MERCHANT}
    )
    fact = adapter.webhooks.translate(signed(withdrawal_body("transaction.completed"))).facts[0]
    assert isinstance(fact, WithdrawalUpdate)
    default = build_adapter({"base_url": "http://x", "api_key": "k", "webhook_secret": SECRET})
    fact = default.webhooks.translate(signed(withdrawal_body("transaction.completed"))).facts[0]
    assert isinstance(fact, PaymentUpdate)  # not the default "merchant" account: incoming


# ---------------------------------------------------------------- balances


def test_a_balance_update_is_a_provider_balance_report(webhooks: PaymentEngineWebhooks) -> None:
    fact = only_fact(webhooks, BALANCE)
    assert (
        ProviderBalanceReport(
            provider="payment_engine",
            account="acc_123",
            currency="USD",
            available=Decimal("500.00"),
            reported_at=datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
        )
        == fact
    )
    assert isinstance(fact, ProviderBalanceReport)
    assert str(fact.available) == "500.00"


def test_a_balance_update_may_name_the_amount_balance(webhooks: PaymentEngineWebhooks) -> None:
    fact = only_fact(webhooks, BALANCE.replace("availableBalance", "balance"))
    assert isinstance(fact, ProviderBalanceReport)
    assert fact.available == Decimal("500.00")


# ---------------------------------------------------------------- bad bodies


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"{", b'{"amount": NaN}'])
def test_a_body_that_is_not_json_is_invalid(webhooks: PaymentEngineWebhooks, body: bytes) -> None:
    delivery = WebhookDelivery(PROVIDER_ID, body, {})
    with pytest.raises(WebhookBodyInvalid) as raised:
        webhooks.translate(delivery)
    assert raised.value.reason == "not_json"


@pytest.mark.parametrize(
    "body",
    [
        "[]",
        '"text"',
        '{"eventId": "e"}',
        '{"eventId": "e", "eventType": 7, "data": {}}',
        '{"eventId": 5, "eventType": "transaction.completed", "data": {}}',
        '{"eventId": "e", "eventType": "transaction.completed"}',
        '{"eventId": "e", "eventType": "transaction.completed", "data": []}',
        '{"eventId": "e", "eventType": "transaction.completed", "data": {"amount": 1}}',
        (
            '{"eventType": "transaction.completed", "data": {"transactionId": "t",'
            ' "currencyCode": "USD"}}'
        ),
        ('{"eventType": "transaction.completed", "data": {"transactionId": "t",'
        ' "amount": true, "currencyCode": "USD"}}'),
        (
            '{"eventType": "transaction.completed", "data": {"transactionId": "t",'
            ' "amount": "lots", "currencyCode": "USD"}}'
        ),
        ('{"eventType": "transaction.completed", "data": {"transactionId": "t",'
        ' "amount": 0, "currencyCode": "USD"}}'),
        (
            '{"eventType": "transaction.completed", "timestamp": "yesterday",'
            ' "data": {"transactionId": "t", "amount": 1, "currencyCode": "USD"}}'
        ),
        ('{"eventType": "account.balance.updated", "data": {"accountId": "a",'
        ' "currencyCode": "USD"}}'),
        (
            '{"eventType": "account.balance.updated", "data": {"availableBalance": 1,'
            ' "currencyCode": "USD"}}'
        ),
    ],
)
def test_a_body_of_the_wrong_shape_is_invalid(webhooks: PaymentEngineWebhooks, body: str) -> None:
    with pytest.raises(WebhookBodyInvalid) as raised:
        webhooks.translate(signed(body))
    assert raised.value.reason == "wrong_shape"


# ---------------------------------------------------------------- dedupe keys


def test_the_event_id_is_the_dedupe_key(webhooks: PaymentEngineWebhooks) -> None:
    assert webhooks.translate(signed(COMPLETED)).dedupe_key == "payment_engine:evt_001"


def test_redelivery_of_the_same_event_has_the_same_key(webhooks: PaymentEngineWebhooks) -> None:
    first = webhooks.translate(signed(COMPLETED))
    again = webhooks.translate(signed(COMPLETED))
    assert first == again


def test_without_event_id_the_key_is_a_hash_of_the_canonical_payload(
    webhooks: PaymentEngineWebhooks,
) -> None:
    body = '{"eventType": "transaction.completed", "data": {"transactionId": "t", "amount": 1.10,'
    body += ' "currencyCode": "USD"}}'
    reordered = '{"data": {"currencyCode": "USD", "amount": 1.10, "transactionId": "t"},'
    reordered += '   "eventType": "transaction.completed"}'
    canonical = (
        '{"data":{"amount":1.10,"currencyCode":"USD","transactionId":"t"},'
        '"eventType":"transaction.completed"}'
    )
    expected = "payment_engine:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert expected == webhooks.translate(signed(body)).dedupe_key
    assert expected == webhooks.translate(signed(reordered)).dedupe_key
    other = webhooks.translate(signed(body.replace("1.10", "1.1"))).dedupe_key
    assert other != expected  # 1.1 and 1.10 are different texts of the payload


def test_the_same_deposit_reported_twice_has_the_same_deposit_id(
    webhooks: PaymentEngineWebhooks,
) -> None:
    """A redelivery under a new event id still names the same deposit (its transaction id)."""
    first = only_fact(webhooks, COMPLETED)
    second = only_fact(webhooks, COMPLETED.replace("evt_001", "evt_777"))
    assert isinstance(first, PaymentUpdate)
    assert isinstance(second, PaymentUpdate)
    assert first.deposits == second.deposits

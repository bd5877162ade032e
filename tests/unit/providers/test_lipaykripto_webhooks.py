
"""LiPayKripto webhooks: client-id and callback-token authentication, translation, dedupe keys.

Payload examples are the document's own (docs: /work/shared/providers/lipaykripto.md).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from adapters.providers.contract import TokenScope, WebhookBodyInvalid, WebhookDelivery
from adapters.providers.lipaykripto import PROVIDER_ID, build_adapter
from adapters.providers.lipaykripto.signing import (
    WithdrawalSigningFields,
    format_created_at,
    format_try_amount,
    sign_withdrawal,
)
from adapters.providers.lipaykripto.webhooks import LiPayKriptoWebhooks
from ledger.commands import (
    PaymentUpdate,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    WithdrawalUpdate,
)
from ledger.deliveries import VerificationOutcome
from ledger.errors import AmountPrecisionExceedsCurrencyScale

CLIENT_ID = "YOUR_CLIENT_ID"  # the id the document's examples carry

DOC_PAYMENT_CONFIRMED = b"""{
  "try_amount": 100.00,
  "client_id": "YOUR_CLIENT_ID",
  "payment_id": "ORDER_123",
  "status": "confirmed"
}"""
DOC_WITHDRAWAL_CONFIRMED = b"""{
  "success": true,
  "clientId": "YOUR_CLIENT_ID",
  "status": "confirmed",
  "tryAmount": 100.00,
  "requestId": "WITHDRAW_123"
}"""


def payment_body(status: str = "confirmed", amount: str = "100.00", client: str = CLIENT_ID,
                 payment_id: str = "ORDER_123") -> bytes:
    return (
        f'{{"try_amount": {amount}, "client_id": "{client}", "payment_id": "{payment_id}", '
        f'"status": "{status}"}}'
    ).encode()


def withdrawal_body(status: str = "confirmed", amount: str = "100.00", client: str = CLIENT_ID,
                    success: str = "true") -> bytes:
    return (
        f'{{"success": {success}, "clientId": "{client}", "status": "{status}", '
        f'"tryAmount": {amount}, "requestId": "WITHDRAW_123"}}'
    ).encode()


def delivery(body: bytes, token: str | None = "t0k3n") -> WebhookDelivery:
    return WebhookDelivery(
        provider=PROVIDER_ID,
        body=body,
        headers={"content-type": "application/json"},
        path_token=token,
    )


@pytest.fixture
def adapter() -> LiPayKriptoWebhooks:
    return LiPayKriptoWebhooks(client_id=CLIENT_ID)


# --- authentication -----------------------------------------------------------------------------


def test_token_scope_is_per_subject(adapter: LiPayKriptoWebhooks) -> None:
    assert adapter.token_scope is TokenScope.PER_SUBJECT


@pytest.mark.parametrize("body", [DOC_PAYMENT_CONFIRMED, DOC_WITHDRAWAL_CONFIRMED])
def test_right_client_id_with_token_is_verified_pending_token_match(
    adapter: LiPayKriptoWebhooks, body: bytes
) -> None:
    verification = adapter.authenticate(delivery(body))
    assert verification.outcome is VerificationOutcome.VERIFIED
    assert verification.scheme == "callback-token-per-subject"
    assert verification.reason == "token_to_be_matched"


@pytest.mark.parametrize("token", [None, ""])
@pytest.mark.parametrize("body", [DOC_PAYMENT_CONFIRMED, DOC_WITHDRAWAL_CONFIRMED])
def test_without_path_token_is_unverified(
    adapter: LiPayKriptoWebhooks, body: bytes, token: str | None
) -> None:
    verification = adapter.authenticate(delivery(body, token=token))
    assert verification.outcome is VerificationOutcome.UNVERIFIED
    assert verification.reason == "token_missing"


@pytest.mark.parametrize(
    "body",
    [
        payment_body(client="SOMEONE_ELSE"),
        payment_body(client="YOUR_CLIENT_I"),  # a prefix is not the id
        payment_body(client="YOUR_CLIENT_IDX"),
        withdrawal_body(client="SOMEONE_ELSE"),
    ],
)
def test_wrong_client_id_is_rejected_even_with_token(
    adapter: LiPayKriptoWebhooks, body: bytes
) -> None:
    verification = adapter.authenticate(delivery(body))
    assert verification.outcome is VerificationOutcome.REJECTED
    assert verification.reason == "client_id_mismatch"


def test_wrong_configured_client_id_rejects_the_document_example() -> None:
    other = LiPayKriptoWebhooks(client_id="test12345")
    verification = other.authenticate(delivery(DOC_PAYMENT_CONFIRMED))
    assert verification.outcome is VerificationOutcome.REJECTED


@pytest.mark.parametrize(
    "body",
    [
        b'{"try_amount": 100.00, "payment_id": "ORDER_123", "status": "confirmed"}',
        b'{"try_amount": 100.00, "client_id": 7, "payment_id": "ORDER_123", "status": "confirmed"}',
        b'{"success": true, "status": "confirmed", "tryAmount": 1.00, "requestId": "W"}',
    ],
)
def test_missing_client_id_is_rejected(adapter: LiPayKriptoWebhooks, body: bytes) -> None:
    verification = adapter.authenticate(delivery(body))
    assert verification.outcome is VerificationOutcome.REJECTED
    assert verification.reason == "client_id_missing"


def test_each_shape_is_checked_by_its_own_client_id_key(adapter: LiPayKriptoWebhooks) -> None:
    # A withdrawal body smuggling a correct `client_id` beside a wrong `clientId` is refused.
    body = (
        b'{"success": true, "client_id": "YOUR_CLIENT_ID", "clientId": "EVIL", '
        b'"status": "confirmed", "tryAmount": 100.00, "requestId": "WITHDRAW_123"}'
    )
    assert adapter.authenticate(delivery(body)).outcome is VerificationOutcome.REJECTED


@pytest.mark.parametrize("body", [b"not json", b"", b"\xff\xfe", b'{"try_amount": NaN}'])
def test_authenticate_needs_json(adapter: LiPayKriptoWebhooks, body: bytes) -> None:
    with pytest.raises(WebhookBodyInvalid) as caught:
        adapter.authenticate(delivery(body))
    assert caught.value.reason == "not_json"


# --- translation: payments ----------------------------------------------------------------------


def test_document_payment_confirmed_is_one_confirmed_deposit(
    adapter: LiPayKriptoWebhooks,
) -> None:
    translation = adapter.translate(delivery(DOC_PAYMENT_CONFIRMED))
    (update,) = translation.facts
    assert isinstance(update, PaymentUpdate)
    assert update.reference.provider == "lipaykripto"
    assert update.reference.order_id == "ORDER_123"  # our paymentId, not paymentRequestId
    assert update.reference.provider_ref is None
    (deposit,) = update.deposits
    assert deposit.deposit_id == "lipaykripto:ORDER_123:confirmed"
    assert deposit.amount == Decimal("100.00")
    assert isinstance(deposit.amount, Decimal)
    assert deposit.currency == "TRY"
    assert deposit.confirmed is True
    assert update.status is not None
    assert update.status.status_word == "confirmed"
    assert update.status.outcome is ProviderPaymentOutcome.PAID
    assert update.status.amount_paid_reported == Decimal("100.00")
    assert translation.event_type == "payment.confirmed"


def test_payment_failed_moves_no_money(adapter: LiPayKriptoWebhooks) -> None:
    (update,) = adapter.translate(delivery(payment_body(status="failed"))).facts
    assert isinstance(update, PaymentUpdate)
    assert update.deposits == ()
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.FAILED
    assert update.status.amount_paid_reported is None


@pytest.mark.parametrize("word", ["pending", "expired", "CONFIRMED", "pending_coin_selection"])
def test_unknown_payment_word_is_recorded_as_unknown(
    adapter: LiPayKriptoWebhooks, word: str
) -> None:
    (update,) = adapter.translate(delivery(payment_body(status=word))).facts
    assert isinstance(update, PaymentUpdate)
    assert update.deposits == ()
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.UNKNOWN
    assert update.status.status_word == word


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("0.10", Decimal("0.10")),
        ("1234567890123.45", Decimal("1234567890123.45")),
        ("100", Decimal("100.00")),
        ("49.9", Decimal("49.90")),
        ("100.000", Decimal("100.00")),  # more digits, same value: still a TRY amount
    ],
)
def test_amounts_are_exact(adapter: LiPayKriptoWebhooks, written: str, expected: Decimal) -> None:
    (update,) = adapter.translate(delivery(payment_body(amount=written))).facts
    assert isinstance(update, PaymentUpdate)
    assert update.deposits[0].amount == expected
    assert str(update.deposits[0].amount) == format(expected, "f")


def test_same_deposit_reported_twice_keeps_its_id(adapter: LiPayKriptoWebhooks) -> None:
    first = adapter.translate(delivery(DOC_PAYMENT_CONFIRMED))
    second = adapter.translate(delivery(payment_body()))
    assert isinstance(first.facts[0], PaymentUpdate)
    assert isinstance(second.facts[0], PaymentUpdate)
    assert first.facts[0].deposits[0].deposit_id == second.facts[0].deposits[0].deposit_id


# --- translation: withdrawals -------------------------------------------------------------------


def test_document_withdrawal_confirmed_is_completed(adapter: LiPayKriptoWebhooks) -> None:
    translation = adapter.translate(delivery(DOC_WITHDRAWAL_CONFIRMED))
    (update,) = translation.facts
    assert isinstance(update, WithdrawalUpdate)
    assert update.reference.provider == "lipaykripto"
    assert update.reference.request_id == "WITHDRAW_123"
    assert update.outcome is ProviderWithdrawalOutcome.COMPLETED
    assert update.status_word == "confirmed"
    assert update.amount_sent == Decimal("100.00")
    assert update.currency == "TRY"
    assert translation.event_type == "withdrawal.confirmed"


@pytest.mark.parametrize(
    ("word", "success", "outcome"),
    [
        ("failed", "false", ProviderWithdrawalOutcome.FAILED),
        ("failed", "true", ProviderWithdrawalOutcome.FAILED),
        ("manual_process", "true", ProviderWithdrawalOutcome.MANUAL_REVIEW),
        ("processing", "true", ProviderWithdrawalOutcome.UNKNOWN),
    ],
)
def test_withdrawal_words(
    adapter: LiPayKriptoWebhooks, word: str, success: str, outcome: ProviderWithdrawalOutcome
) -> None:
    (update,) = adapter.translate(delivery(withdrawal_body(status=word, success=success))).facts
    assert isinstance(update, WithdrawalUpdate)
    assert update.outcome is outcome
    assert update.status_word == word
    assert update.amount_sent is None  # nothing was sent unless confirmed


# --- bad bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"not json", b"{", b"\xff"])
def test_not_json(adapter: LiPayKriptoWebhooks, body: bytes) -> None:
    with pytest.raises(WebhookBodyInvalid) as caught:
        adapter.translate(delivery(body))
    assert caught.value.reason == "not_json"


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"confirmed"',
        b"{}",
        b'{"client_id": "YOUR_CLIENT_ID", "status": "confirmed"}',  # neither shape
        # both shapes at once
        (
            b'{"try_amount": 1.00, "client_id": "YOUR_CLIENT_ID", "payment_id": "P", '
            b'"status": "confirmed", "requestId": "W"}'
        ),
        payment_body(amount='"100.00"'),  # amount as a string
        payment_body(amount="true"),
        payment_body(amount="-1.00"),
        payment_body(amount="100.001"),  # finer than kuruş
        payment_body(amount="1e400"),
        payment_body(payment_id=""),
        b'{"try_amount": 1.00, "client_id": "YOUR_CLIENT_ID", "payment_id": "P"}',  # no status
        (
            b'{"try_amount": 1.00, "client_id": "YOUR_CLIENT_ID", "payment_id": 5, '
            b'"status": "confirmed"}'
        ),
        withdrawal_body(amount="null"),
        withdrawal_body(success='"yes"'),
        b'{"success": true, "clientId": "YOUR_CLIENT_ID", "tryAmount": 1.00, "requestId": "W"}',
    ],
)
def test_wrong_shape(adapter: LiPayKriptoWebhooks, body: bytes) -> None:
    with pytest.raises(WebhookBodyInvalid) as caught:
        adapter.translate(delivery(body))
    assert caught.value.reason == "wrong_shape"


# --- dedupe keys --------------------------------------------------------------------------------


def test_dedupe_key_is_the_hash_of_the_canonical_payload(adapter: LiPayKriptoWebhooks) -> None:
    canonical = (
        '{"client_id":"YOUR_CLIENT_ID","payment_id":"ORDER_123","status":"confirmed",'
        '"try_amount":100.00}'
    )
    expected = "lipaykripto:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert adapter.translate(delivery(DOC_PAYMENT_CONFIRMED)).dedupe_key == expected


def test_dedupe_key_is_stable_across_layout_and_token(adapter: LiPayKriptoWebhooks) -> None:
    reordered = (
        b'{"status":"confirmed","payment_id":"ORDER_123",'
        b'"client_id":"YOUR_CLIENT_ID","try_amount":100.00}'
    )
    keys = {
        adapter.translate(delivery(DOC_PAYMENT_CONFIRMED)).dedupe_key,
        adapter.translate(delivery(DOC_PAYMENT_CONFIRMED, token=None)).dedupe_key,
        adapter.translate(delivery(payment_body())).dedupe_key,
        adapter.translate(delivery(reordered)).dedupe_key,
    }
    assert len(keys) == 1


@pytest.mark.parametrize(
    "other",
    [
        payment_body(status="failed"),
        payment_body(amount="50.00"),
        payment_body(payment_id="ORDER_124"),
        withdrawal_body(),
    ],
)
def test_different_payloads_have_different_keys(
    adapter: LiPayKriptoWebhooks, other: bytes
) -> None:
    assert (
        adapter.translate(delivery(other)).dedupe_key
        != adapter.translate(delivery(payment_body())).dedupe_key
    )


# --- withdrawal signature (document section 8) --------------------------------------------------


DOC_FIELDS = WithdrawalSigningFields(
    try_amount=format_try_amount(Decimal(100)),
    client_id="test12345",
    request_id="WITHDRAW_123",
    wallet_address="TXBCD12345...",
    coin_type="TRX",
    webhook_url="https://example.com/webhook",
    created_at=format_created_at(datetime(2025, 4, 20, 14, 30, tzinfo=UTC)),
)


def test_signing_input_is_the_document_example() -> None:
    assert DOC_FIELDS.signing_input() == (
        "100.00test12345WITHDRAW_123TXBCD12345...TRXhttps://example.com/webhook"
        "2025-04-20T14:30:00Z"
    )


def test_signature_is_hex_hmac_sha256_of_the_signing_input() -> None:
    expected = hmac.new(
        b"hmac-secret",
        b"100.00test12345WITHDRAW_123TXBCD12345...TRXhttps://example.com/webhook"
        b"2025-04-20T14:30:00Z",
        hashlib.sha256,
    ).hexdigest()
    assert sign_withdrawal(DOC_FIELDS, "hmac-secret") == expected
    assert sign_withdrawal(DOC_FIELDS, "other-secret") != expected


def test_amount_and_time_formats() -> None:
    assert format_try_amount(Decimal("100.5")) == "100.50"
    assert format_try_amount(Decimal("0.1")) == "0.10"
    with pytest.raises(AmountPrecisionExceedsCurrencyScale):
        format_try_amount(Decimal("1.005"))
    istanbul = timezone(timedelta(hours=3))
    assert format_created_at(datetime(2025, 4, 20, 17, 30, 0, 999, tzinfo=istanbul)) == (
        "2025-04-20T14:30:00Z"
    )
    with pytest.raises(ValueError, match="timezone"):
        format_created_at(datetime(2025, 4, 20, 14, 30))  # noqa: DTZ001 - the point of the test


# --- adapter wiring -----------------------------------------------------------------------------


def test_build_adapter_needs_every_setting() -> None:
    settings = {"base_url": "http://x", "client_id": "c", "client_secret": "s", "hmac_secret": "h"}
    adapter = build_adapter(settings)
    assert adapter.name == "lipaykripto"
    assert adapter.webhooks.token_scope is TokenScope.PER_SUBJECT
    for key in settings:
        with pytest.raises(ValueError, match=key):
            build_adapter({k: v for k, v in settings.items() if k != key})

"""CoinCoin: token authentication, translation of the documented payloads, and the wire rules."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.providers.coincoin import PROVIDER_ID, build_adapter
from adapters.providers.coincoin.client import _created_payment
from adapters.providers.coincoin.protocol import (
    expiry_hours,
    payment_id_for_order,
    sign,
    signed_headers,
)
from adapters.providers.coincoin.webhooks import CoinCoinWebhooks
from adapters.providers.contract import TokenScope, WebhookBodyInvalid, WebhookDelivery
from adapters.providers.http_client import dumps_exact
from ledger.commands import PaymentUpdate, ProviderPaymentOutcome
from ledger.deliveries import VerificationOutcome

TOKEN = "portal-token-3f9a1c"

# The document's webhook example, without its // comments (which JSON does not allow).
DOCUMENT_WEBHOOK = b"""{
"payment": {
"address": "coincoinresponseexample",
"payment_id": "merchant's order ID",
"network": "tron",
"coin": "usdt",
"amount": 100.0
},
"collected": {
"usdt": 50
},
"state": 1
}"""

# The document's create-order response example.
DOCUMENT_CREATE_RESPONSE = {
    "payment_id": "EX100100100",
    "address": "coincoinresponseexample",
    "amount": 100,
    "create_time": 1609434000000,
    "expired_time": 1609520400000,
    "expired": 8,
    "network": "tron",
    "coin": "usdt",
    "state": 0,
}


def delivery(body: bytes | str, token: str | None = TOKEN, **headers: str) -> WebhookDelivery:
    raw = body.encode() if isinstance(body, str) else body
    return WebhookDelivery(provider=PROVIDER_ID, body=raw, headers=headers, path_token=token)


def body(collected: dict[str, object] | None = None, state: object = 0, **payment: object) -> str:
    """A delivery shaped as the document's example; Decimals are written as exact numbers."""
    document = {
        "payment": {
            "address": "TXaddress1",
            "payment_id": "order_00000001",
            "network": "tron",
            "coin": "usdt",
            "amount": Decimal("100.0"),
            **payment,
        },
        "collected": {"usdt": 0} if collected is None else collected,
        "state": state,
    }
    return dumps_exact(document)


def only_update(webhooks: CoinCoinWebhooks, raw: bytes | str) -> PaymentUpdate:
    translation = webhooks.translate(delivery(raw))
    assert len(translation.facts) == 1
    fact = translation.facts[0]
    assert isinstance(fact, PaymentUpdate)
    return fact


@pytest.fixture
def webhooks() -> CoinCoinWebhooks:
    return CoinCoinWebhooks(TOKEN)


# --- authentication ------------------------------------------------------------------------------


def test_token_scope_is_the_provider_wide_portal_token(webhooks: CoinCoinWebhooks) -> None:
    assert webhooks.token_scope is TokenScope.PROVIDER


def test_the_configured_token_verifies(webhooks: CoinCoinWebhooks) -> None:
    verification = webhooks.authenticate(delivery(DOCUMENT_WEBHOOK))
    assert verification.outcome is VerificationOutcome.VERIFIED
    assert verification.reason == ""


@pytest.mark.parametrize(
    "token", ["wrong-token", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), " " + TOKEN]
)
def test_a_wrong_token_is_unverified_not_rejected(webhooks: CoinCoinWebhooks, token: str) -> None:
    verification = webhooks.authenticate(delivery(DOCUMENT_WEBHOOK, token=token))
    assert verification.outcome is VerificationOutcome.UNVERIFIED
    assert verification.reason == "token_mismatch"


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_token_is_unverified(webhooks: CoinCoinWebhooks, token: str | None) -> None:
    verification = webhooks.authenticate(delivery(DOCUMENT_WEBHOOK, token=token))
    assert verification.outcome is VerificationOutcome.UNVERIFIED
    assert verification.reason == "token_missing"


def test_signature_like_headers_neither_help_nor_hurt(webhooks: CoinCoinWebhooks) -> None:
    """CoinCoin signs nothing: only the path token counts, whatever headers come along."""
    with_token = delivery(DOCUMENT_WEBHOOK, **{"cc-sign": "forged", "x-signature": "x"})
    without = delivery(DOCUMENT_WEBHOOK, token=None, **{"cc-sign": sign("a", "b", "1")})
    assert webhooks.authenticate(with_token).outcome is VerificationOutcome.VERIFIED
    assert webhooks.authenticate(without).outcome is VerificationOutcome.UNVERIFIED


def test_an_empty_configured_token_is_refused() -> None:
    with pytest.raises(ValueError, match="webhook_token"):
        CoinCoinWebhooks("")


# --- translation ---------------------------------------------------------------------------------


def test_the_documented_example_translates_exactly(webhooks: CoinCoinWebhooks) -> None:
    translation = webhooks.translate(delivery(DOCUMENT_WEBHOOK))
    update = translation.facts[0]
    assert isinstance(update, PaymentUpdate)
    assert update.reference.provider == "coincoin"
    assert update.reference.provider_ref == "merchant's order ID"
    assert update.reference.pay_address == "coincoinresponseexample"
    assert update.deposits == ()
    assert update.cumulative is not None
    assert update.cumulative.total == Decimal(50)
    assert update.cumulative.currency == "USDT"
    assert update.cumulative.confirmed is True
    assert update.status is not None
    assert update.status.status_word == "state=1"
    assert update.status.outcome is ProviderPaymentOutcome.SETTLING
    assert update.status.amount_paid_reported == Decimal(50)
    assert translation.event_type == "state=1"


@pytest.mark.parametrize(
    ("state", "collected", "outcome"),
    [
        (0, 0, ProviderPaymentOutcome.PENDING),
        (0, Decimal("0.000001"), ProviderPaymentOutcome.CONFIRMING),
        (1, 50, ProviderPaymentOutcome.SETTLING),
        (1, 100, ProviderPaymentOutcome.SETTLING),
        (2, 50, ProviderPaymentOutcome.SETTLING),
        (2, 150, ProviderPaymentOutcome.SETTLING),
        (-1, 0, ProviderPaymentOutcome.EXPIRED),
        (-1, Decimal("0.5"), ProviderPaymentOutcome.EXPIRED),
        (3, 0, ProviderPaymentOutcome.UNKNOWN),
        (-2, 10, ProviderPaymentOutcome.UNKNOWN),
    ],
)
def test_every_documented_state_code_maps(
    webhooks: CoinCoinWebhooks, state: int, collected: Decimal, outcome: ProviderPaymentOutcome
) -> None:
    update = only_update(webhooks, body({"usdt": collected}, state=state))
    assert update.status is not None
    assert update.status.outcome is outcome
    assert update.status.status_word == f"state={state}"


def test_a_state_sent_as_a_string_is_recorded_as_unknown(webhooks: CoinCoinWebhooks) -> None:
    update = only_update(webhooks, body({"usdt": 50}, state="1"))
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.UNKNOWN
    assert update.status.status_word == 'state="1"'


@pytest.mark.parametrize(
    ("raw_amount", "expected"),
    [
        ("12.345678", Decimal("12.345678")),
        ("0.30000000000000004", Decimal("0.30000000000000004")),
        ("100", Decimal(100)),
        ("1e2", Decimal(100)),
        ("99.999999999999999999", Decimal("99.999999999999999999")),
    ],
)
def test_collected_amounts_stay_exact(
    webhooks: CoinCoinWebhooks, raw_amount: str, expected: Decimal
) -> None:
    raw = DOCUMENT_WEBHOOK.replace(b'"usdt": 50', b'"usdt": ' + raw_amount.encode())
    update = only_update(webhooks, raw)
    assert update.cumulative is not None
    assert isinstance(update.cumulative.total, Decimal)
    assert update.cumulative.total == expected
    assert update.status is not None
    assert update.status.amount_paid_reported == expected


def test_collected_key_matches_the_coin_whatever_its_case(webhooks: CoinCoinWebhooks) -> None:
    update = only_update(webhooks, body({"USDT": 40}, coin="usdt"))
    assert update.cumulative is not None
    assert update.cumulative.total == Decimal(40)
    assert update.cumulative.currency == "USDT"


def test_other_coins_in_collected_produce_no_fact(webhooks: CoinCoinWebhooks) -> None:
    update = only_update(webhooks, body({"trx": 3, "usdt": 20}))
    assert update.cumulative is not None
    assert update.cumulative.total == Decimal(20)
    assert update.cumulative.currency == "USDT"


def test_no_total_for_the_payment_coin_means_no_cumulative_report(
    webhooks: CoinCoinWebhooks,
) -> None:
    update = only_update(webhooks, body({"trx": 3}, state=0))
    assert update.cumulative is None
    assert update.status is not None
    assert update.status.outcome is ProviderPaymentOutcome.PENDING
    assert update.status.amount_paid_reported is None


def test_the_coin_of_the_payment_names_the_currency(webhooks: CoinCoinWebhooks) -> None:
    update = only_update(webhooks, body({"trx": 7}, coin="trx"))
    assert update.cumulative is not None
    assert (update.cumulative.total, update.cumulative.currency) == (Decimal(7), "TRX")


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b"", b"{", b'{"state": NaN}'])
def test_not_json_is_refused(webhooks: CoinCoinWebhooks, raw: bytes) -> None:
    with pytest.raises(WebhookBodyInvalid) as caught:
        webhooks.translate(delivery(raw))
    assert caught.value.reason == "not_json"


def _mutated(change: str) -> str:
    document = json.loads(DOCUMENT_WEBHOOK)
    exec(change, {"d": document})  # small, local mutations of the documented example
    return json.dumps(document)


@pytest.mark.parametrize(
    "raw",
    [
        "[]",
        "{}",
        '"payment"',
        _mutated("del d['payment']"),
        _mutated("d['payment'] = 'x'"),
        _mutated("del d['payment']['payment_id']"),
        _mutated("d['payment']['payment_id'] = ''"),
        _mutated("d['payment']['payment_id'] = 12345678"),
        _mutated("del d['payment']['address']"),
        _mutated("del d['payment']['coin']"),
        _mutated("d['payment']['amount'] = '100'"),
        _mutated("del d['collected']"),
        _mutated("d['collected'] = [50]"),
        _mutated("d['collected'] = {'usdt': '50'}"),
        _mutated("d['collected'] = {'usdt': -1}"),
        _mutated("d['collected'] = {'usdt': True}"),
        _mutated("d['collected'] = {'usdt': None}"),
        _mutated("d['collected'] = {'usdt': 1, 'trx': 'x'}"),
        _mutated("d['collected'] = {'usdt': 1, 'USDT': 2}"),
        _mutated("del d['state']"),
        _mutated("d['state'] = None"),
        _mutated("d['state'] = True"),
        _mutated("d['state'] = 1.5"),
        _mutated("d['state'] = ''"),
    ],
)
def test_wrong_shapes_are_refused(webhooks: CoinCoinWebhooks, raw: str) -> None:
    with pytest.raises(WebhookBodyInvalid) as caught:
        webhooks.translate(delivery(raw))
    assert caught.value.reason == "wrong_shape"


# --- dedupe --------------------------------------------------------------------------------------


def test_dedupe_key_is_stable_and_canonical(webhooks: CoinCoinWebhooks) -> None:
    first = webhooks.translate(delivery(DOCUMENT_WEBHOOK)).dedupe_key
    again = webhooks.translate(delivery(DOCUMENT_WEBHOOK)).dedupe_key
    # Same content, other key order and spacing: still the same delivery.
    reordered = dumps_exact(
        {
            "state": 1,
            "collected": {"usdt": 50},
            "payment": {
                "amount": Decimal("100.0"),
                "coin": "usdt",
                "network": "tron",
                "payment_id": "merchant's order ID",
                "address": "coincoinresponseexample",
            },
        }
    )
    assert first == again
    assert re.fullmatch(r"coincoin:[0-9a-f]{64}", first)
    assert webhooks.translate(delivery(reordered)).dedupe_key == first


def test_dedupe_key_changes_with_the_content(webhooks: CoinCoinWebhooks) -> None:
    base = webhooks.translate(delivery(body({"usdt": 30}))).dedupe_key
    more = webhooks.translate(delivery(body({"usdt": 60}))).dedupe_key
    other_state = webhooks.translate(delivery(body({"usdt": 30}, state=2))).dedupe_key
    exact = webhooks.translate(delivery(body({"usdt": Decimal("30.000001")}))).dedupe_key
    assert len({base, more, other_state, exact}) == 4


# --- wire rules ----------------------------------------------------------------------------------


def test_sign_is_hex_hmac_sha1_of_app_id_and_timespan() -> None:
    # The document's example key pair; the value was computed independently with
    # `printf 'asd:1672106570565' | openssl dgst -sha1 -hmac qwe`.
    assert sign("asd", "qwe", "1672106570565") == "2cdf07d1a5c2517d36dd5a14f8491ca5437c0a0f"
    headers = signed_headers("asd", "qwe", 1672106570565)
    assert headers == {
        "CC-APP-ID": "asd",
        "CC-TIMESPAN": "1672106570565",
        "CC-SIGN": "2cdf07d1a5c2517d36dd5a14f8491ca5437c0a0f",
    }


@pytest.mark.parametrize("order_id", ["EX100100100", "order_0001", "A" * 32, "a1b2c3d4"])
def test_order_ids_that_fit_are_sent_unchanged(order_id: str) -> None:
    assert payment_id_for_order(order_id) == order_id


@pytest.mark.parametrize(
    "order_id", ["short", "order-2024-0001", "A" * 33, "ord:1", "ünïcode-order", "a b c d e f"]
)
def test_other_order_ids_get_a_derived_valid_id(order_id: str) -> None:
    derived = payment_id_for_order(order_id)
    assert re.fullmatch(r"[A-Za-z0-9_]{8,32}", derived)
    assert derived == payment_id_for_order(order_id)
    assert derived.startswith("oh_")


def test_derived_ids_do_not_collide_on_replaced_characters() -> None:
    assert payment_id_for_order("order-0001") != payment_id_for_order("order.0001")


@pytest.mark.parametrize(
    ("minutes", "hours"),
    [(None, 48), (1, 1), (60, 1), (61, 2), (0, 1), (-5, 1), (720, 12), (2880, 48), (10_000, 48)],
)
def test_expiry_is_rounded_up_to_hours_and_capped(minutes: int | None, hours: int) -> None:
    assert expiry_hours(minutes) == hours


def test_the_documented_create_response_maps() -> None:
    created = _created_payment(DOCUMENT_CREATE_RESPONSE)
    assert created.provider_ref == "EX100100100"
    assert created.expected_amount == Decimal(100)
    assert created.expected_currency == "USDT"
    assert created.expires_at == datetime(2021, 1, 1, 17, 0, tzinfo=UTC)
    assert created.pay_address == "coincoinresponseexample"
    assert created.provider_status == "state=0"


def test_build_adapter_needs_every_setting() -> None:
    settings = {
        "base_url": "http://127.0.0.1:1/v1",
        "app_id": "app",
        "secret_key": "secret",
        "webhook_token": TOKEN,
    }
    adapter = build_adapter(settings)
    assert adapter.name == "coincoin"
    assert adapter.webhooks.token_scope is TokenScope.PROVIDER
    for key in settings:
        with pytest.raises(ValueError, match=key):
            build_adapter({**settings, key: ""})

"""Outbound calls at the ledger level: POST /v1/payments against each sandbox, with the sandbox's
`/_sandbox/expire_tokens` and `/_sandbox/faults`, and every attempt read back as a
ProviderExchangeRecorded event of the payment (recorded before its provider call, so a refused
create keeps its attempts too).

The clients' own tests (tests/integration/providers/test_*_client.py) already cover token reuse,
renewal, 503 retries and 400 refusals against a recorder in memory; what they cannot show is that
the ledger keeps those attempts, in order and with their attempt numbers, in the payment's
stream, and that the sandbox saw exactly the calls recorded.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from ledger.codec import decode_document
from tests.e2e.webhook_kit import PRICES, PROVIDERS, SECRETS, Rig, order_id, rig

Exchange = tuple[str, int, int | None]  # (operation, attempt, status)


async def recorded_exchanges(bench: Rig, stream: str) -> list[dict[str, Any]]:
    events = await bench.ledger.store.read_stream(stream)
    return [
        decode_document(e.payload)["exchange"]
        for e in events
        if e.type.endswith("ProviderExchangeRecorded")
    ]


def summary(exchanges: list[dict[str, Any]]) -> list[Exchange]:
    return [(x["operation"], x["attempt"], x["status"]) for x in exchanges]


async def sandbox_calls(bench: Rig, provider: str) -> int:
    async with bench.ledger.http.get(bench.sandbox_urls[provider] + "/_sandbox/requests") as reply:
        requests = (await reply.json(content_type=None))["requests"]
    # The provider API's calls only (LiPayKripto's sandbox lists its own controls too).
    return sum(1 for r in requests if not r["path"].startswith("/_sandbox/"))


async def create_and_read(bench: Rig, provider: str) -> tuple[list[Exchange], int]:
    """Creates a payment; returns its recorded exchanges and how many calls the sandbox saw."""
    before = await sandbox_calls(bench, provider)
    payment = await bench.create_payment(provider)
    exchanges = await recorded_exchanges(bench, payment["payment_id"])
    config = dataclasses.asdict(SECRETS[provider])
    secrets = [str(v) for k, v in config.items() if "secret" in k or k == "password"]
    assert not [s for s in secrets if s in json.dumps(exchanges)], "a secret was recorded"
    types = await bench.event_types(payment["payment_id"])
    assert len(exchanges) == types.count("Payment.ProviderExchangeRecorded")
    return summary(exchanges), await sandbox_calls(bench, provider) - before


RENEWALS = [
    pytest.param(
        "coinpay",
        {},
        [("create_payment", 1, 401), ("login", 1, 200), ("create_payment", 1, 201)],
        id="coinpay-jwt-login-again",
    ),
    pytest.param(
        "cryptofuse",
        {},
        [("create_payment", 1, 401), ("login", 1, 200), ("create_payment", 1, 201)],
        id="cryptofuse-oauth2-token-again",
    ),
    pytest.param(
        "payment_engine",
        {"keep_refresh_tokens": True},
        [("create_payment", 1, 401), ("login_refresh", 1, 200), ("create_payment", 1, 201)],
        id="payment_engine-refresh",
    ),
    pytest.param(
        "payment_engine",
        {},
        [
            ("create_payment", 1, 401),
            ("login_refresh", 1, 401),
            ("login", 1, 200),
            ("create_payment", 1, 201),
        ],
        id="payment_engine-refresh-refused-login-again",
    ),
    # LiPayKripto wants a new token for every payment request: expiry changes nothing.
    pytest.param(
        "lipaykripto",
        {},
        [("login", 1, 200), ("create_payment", 1, 200)],
        id="lipaykripto-token-per-request",
    ),
    # CoinCoin signs every request on its own (CC-SIGN): there is no token to expire.
    pytest.param("coincoin", {}, [("create_payment", 1, 200)], id="coincoin-no-token"),
]


@pytest.mark.parametrize(("provider", "expire", "expected"), RENEWALS)
async def test_an_expired_token_is_renewed_and_each_exchange_is_a_payment_event(
    store, provider, expire, expected
):
    async with rig(store, (provider,)) as bench:
        first, _ = await create_and_read(bench, provider)  # the first payment logs in
        status, _ = await bench.sandbox(provider, "/_sandbox/expire_tokens", expire)
        assert 200 == status
        after_expiry, calls = await create_and_read(bench, provider)
    assert expected == after_expiry
    assert len(after_expiry) == calls  # every call the sandbox saw is recorded, no more
    if provider in {"coinpay", "cryptofuse", "payment_engine"}:
        assert [("login", 1, 200)] == [x for x in first if x[0] == "login"]


CREATED = {"coinpay": 201, "coincoin": 200, "cryptofuse": 201, "payment_engine": 201}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_503_is_retried_until_success_and_every_attempt_is_recorded(store, provider):
    async with rig(store, (provider,)) as bench:
        await create_and_read(bench, provider)  # tokens in hand, so only the faults differ
        faults = {"operation": "create_payment", "statuses": [503, 503]}
        assert 200 == (await bench.sandbox(provider, "/_sandbox/faults", faults))[0]
        exchanges, calls = await create_and_read(bench, provider)
    created = CREATED.get(provider, 200)
    creations = [x for x in exchanges if x[0] == "create_payment"]
    assert [
        ("create_payment", 1, 503),
        ("create_payment", 2, 503),
        ("create_payment", 3, created),
    ] == creations
    assert len(exchanges) == calls


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_400_is_not_retried_and_the_attempt_is_recorded(store, provider):
    async with rig(store, (provider,)) as bench:
        await create_and_read(bench, provider)
        faults = {"operation": "create_payment", "statuses": [400]}
        assert 200 == (await bench.sandbox(provider, "/_sandbox/faults", faults))[0]
        refused = order_id("REFUSED")
        amount, currency = PRICES[provider]
        request = {
            "provider": provider,
            "order_id": refused,
            "amount": amount,
            "currency": currency,
        }
        before = await sandbox_calls(bench, provider)
        status, problem = await bench.ledger.call("POST", "/v1/payments", json=request)
        calls = await sandbox_calls(bench, provider) - before
        assert (502, 502) == (status, problem["status"]), problem
        assert problem["type"].endswith("/provider-refused"), problem
        # The payment was recorded before the call (intent first) and ended failed, with the
        # refused attempt in its own stream.
        assert "failed" == problem["payment_status"]
        exchanges = summary(await recorded_exchanges(bench, problem["payment_id"]))
        creations = [x for x in exchanges if x[0] == "create_payment"]
        assert [("create_payment", 1, 400)] == creations
        assert len(exchanges) == calls
        # The provider holds nothing for it: the same order id goes through once it takes it.
        status, payment = await bench.ledger.call("POST", "/v1/payments", json=request)
        assert 201 == status, payment
        assert problem["payment_id"] != payment["payment_id"]

"""Logs: JSON lines through structlog, one access line per request carrying the request id it
answered with, and no configured secret in any line whatever happened."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import fields
from urllib.parse import urlsplit

import pytest

from adapters.observability.logs import ACCESS_LOGGER, configure_logging
from tests.e2e.harness import TOKEN
from tests.e2e.webhook_kit import COINCOIN_WEBHOOK_TOKEN, PROVIDERS, SECRETS, Captured, rig


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every logger at DEBUG, rendered as the service renders them, into a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    quiet = {name: logging.getLogger(name).level for name in (ACCESS_LOGGER, "aiohttp.access")}
    buffer = io.StringIO()
    configure_logging(level=logging.DEBUG, access_log=True, stream=buffer, json_lines=True)
    try:
        yield buffer
    finally:
        root.handlers, root.level = saved
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


def configured_secrets(database_url: str) -> set[str]:
    """The API token, the webhook token in CoinCoin's callback URL, every provider's password,
    client secret, secret key, webhook or HMAC secret, and the database password if any."""
    secrets = {TOKEN, COINCOIN_WEBHOOK_TOKEN}
    for config in SECRETS.values():
        for field in fields(config):
            value = getattr(config, field.name)
            named = any(word in field.name for word in ("password", "secret", "key", "token"))
            if named and isinstance(value, str):
                secrets.add(value)
    if password := urlsplit(database_url).password:
        secrets.add(password)
    return secrets


def forged(delivery: Captured) -> Captured:
    """The same body under a signature that is wrong (every header value flipped)."""
    headers = {k: (v[::-1] if "sign" in k.lower() else v) for k, v in delivery.headers.items()}
    return Captured(delivery.path, headers, delivery.body)


async def test_no_configured_secret_reaches_any_log_line(captured_logs, store, database_url):
    async with rig(store) as bench:
        for provider in PROVIDERS:
            payment = await bench.create_payment(provider)
            deliveries = await bench.scenario(provider, payment["provider_ref"], "full")
            for delivery in deliveries:
                assert 200 == (await bench.deliver(delivery))[0]
        coinpay = await bench.create_payment("coinpay")
        (delivery,) = await bench.scenario("coinpay", coinpay["provider_ref"], "full")
        assert 401 == (await bench.deliver(forged(delivery)))[0]
        # A provider refusing a create: the ledger answers 502 and logs what it logs.
        fault = {"operation": "create_payment", "statuses": [422]}
        assert 200 == (await bench.sandbox("payment_engine", "/_sandbox/faults", fault))[0]
        status, _ = await bench.ledger.call(
            "POST",
            "/v1/payments",
            json={"provider": "payment_engine", "order_id": "ORD_failing_call",
                  "amount": "100.00", "currency": "USD"},
        )
        assert 502 == status
    lines = captured_logs.getvalue().splitlines()
    # The coincoin deliveries' path carries its token: their access lines must be there, clean.
    assert any("/v1/webhooks/{provider}/{token}" in line for line in lines)
    leaked = {s for s in configured_secrets(database_url) for line in lines if s in line}
    assert set() == leaked


async def test_every_request_gets_one_access_line_with_the_request_id_it_answered(
    captured_logs, store
):
    async with rig(store, ("payment_engine",)) as bench:
        async with bench.ledger.http.get(
            bench.ledger.url + "/v1/payments/not-a-payment",
            headers={"Authorization": f"Bearer {TOKEN}", "X-Request-Id": "caller-id-42"},
        ) as reply:
            assert ("caller-id-42", 404) == (reply.headers["X-Request-Id"], reply.status)
        async with bench.ledger.http.get(bench.ledger.url + "/healthz") as reply:
            minted = reply.headers["X-Request-Id"]
    records = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    access = [r for r in records if r.get("logger") == ACCESS_LOGGER]
    assert [
        ("GET", "/v1/payments/{payment_id}", 404, "caller-id-42"),
        ("GET", "/healthz", 200, minted),
    ] == [(r["method"], r["route"], r["status"], r["request_id"]) for r in access]
    assert all(r["duration_ms"] >= 0 and r["level"] == "info" for r in access)

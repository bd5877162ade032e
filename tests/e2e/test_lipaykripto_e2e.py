"""LiPayKripto end to end: ledger and sandbox on loopback, unsigned webhooks, per-payment tokens."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest

from adapters.sandbox.lipaykripto import SandboxConfig, create_sandbox_app
from ledger.codec import decode_document
from ledger.deliveries import ReceiptKind
from tests.e2e.harness import free_port, ledger_with, serve
from tests.e2e.records import receipts
from tests.e2e.webhook_kit import rig

CONFIG = SandboxConfig(client_id="lpk-client", client_secret="lpk-secret", hmac_secret="lpk-hmac")


@pytest.fixture
async def ledger(store):
    async with serve(create_sandbox_app(CONFIG)) as sandbox_url:
        tables = {
            "lipaykripto": {
                "base_url": sandbox_url,
                "client_id": CONFIG.client_id,
                "client_secret": CONFIG.client_secret,
                "hmac_secret": CONFIG.hmac_secret,
            }
        }
        async with ledger_with(store, tables, free_port()) as ledger:
            ledger.sandbox_url = sandbox_url
            yield ledger


async def create(ledger, order_id: str, amount: str = "100.00") -> dict:
    status, body = await ledger.call(
        "POST",
        "/v1/payments",
        json={"provider": "lipaykripto", "order_id": order_id, "amount": amount, "currency": "TRY"},
    )
    assert 201 == status, body
    return body


async def scenario(ledger, provider_ref: str, name: str) -> dict:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{ledger.sandbox_url}/_sandbox/payments/{provider_ref}/scenario",
            json={"scenario": name},
        ) as reply,
    ):
        assert 200 == reply.status, await reply.text()
        return await reply.json()


@pytest.mark.parametrize(
    ("name", "status", "coverage", "received"),
    [
        ("full", "completed", "exact", "100.00"),
        ("partial", "pending", "partial", "50.00"),
        ("over", "completed", "over", "150.00"),
        ("duplicate", "completed", "exact", "100.00"),
        ("fail", "failed", "unpaid", "0.00"),
    ],
)
async def test_scenario_ends_in_the_right_state(ledger, name, status, coverage, received):
    payment = await create(ledger, f"ORDER_{name}")
    sent = await scenario(ledger, payment["provider_ref"], name)
    assert all(200 == d["status"] for d in sent["deliveries"])
    code, view = await ledger.call("GET", f"/v1/payments/{payment['payment_id']}")
    assert 200 == code
    assert (status, coverage, received) == (view["status"], view["coverage"], view["received"])


async def test_a_delivery_without_the_callback_token_is_recorded_but_moves_no_money(ledger):
    payment = await create(ledger, "ORDER_untokened")
    body = {
        "try_amount": 100.00,
        "client_id": CONFIG.client_id,
        "payment_id": "ORDER_untokened",
        "status": "confirmed",
    }
    status, reply = await ledger.call("POST", "/v1/webhooks/lipaykripto", json=body)
    assert (200, "received") == (status, reply["outcome"])
    _, view = await ledger.call("GET", f"/v1/payments/{payment['payment_id']}")
    assert ("0.00", "100.00") == (view["received"], view["unverified"])
    _, events = await ledger.call("GET", f"/v1/payments/{payment['payment_id']}/events")
    assert "Payment.DeliveryRecorded" in [e["type"] for e in events["items"]]
    await ledger.applied()
    recorded = [
        decode_document(e.payload)["delivery"]
        for e in await ledger.store.read_stream(payment["payment_id"])
        if e.type == "Payment.DeliveryRecorded"
    ]
    assert ["unverified"] == [d["outcome"] for d in recorded]


async def test_a_wrong_client_id_is_401_and_recorded(ledger):
    payment = await create(ledger, "ORDER_wrongclient")
    body = {
        "try_amount": 100.00,
        "client_id": "someone-else",
        "payment_id": "ORDER_wrongclient",
        "status": "confirmed",
    }
    status, reply = await ledger.call("POST", "/v1/webhooks/lipaykripto/anytoken", json=body)
    assert 401 == status
    assert "application/problem+json" not in str(reply) or reply["status"] == 401
    _, view = await ledger.call("GET", f"/v1/payments/{payment['payment_id']}")
    assert "0.00" == view["received"]
    (rejected,) = await receipts(ledger.store, ReceiptKind.REJECTED, "lipaykripto")
    assert "someone-else" == decode_document(rejected["body"].encode())["client_id"]


async def test_malformed_bodies_are_400_and_unknown_providers_404(ledger):
    status, _ = await ledger.call("POST", "/v1/webhooks/lipaykripto/t", data=b"{not json")
    assert 400 == status
    status, _ = await ledger.call("POST", "/v1/webhooks/nosuchprovider", json={})
    assert 404 == status
    status, _ = await ledger.call(
        "POST", "/v1/webhooks/lipaykripto/t", data=b"x" * (1024 * 1024 + 10)
    )
    assert 413 == status


async def test_a_copy_to_a_made_up_token_first_takes_nothing_from_the_genuine_delivery(store):
    """Anyone can POST a payment's body to a callback URL with a made-up token. Whose token it is
    is only known once matched to the payment, so such a copy arriving first must not make
    LiPayKripto's own delivery (to the payment's own URL) a duplicate of it: the genuine one is
    received and moves the money."""
    async with rig(store, ("lipaykripto",)) as bench:
        payment = await bench.create_payment("lipaykripto")
        (genuine,) = await bench.scenario("lipaykripto", payment["provider_ref"], "full")
        copy = dataclasses.replace(genuine, path="/v1/webhooks/lipaykripto/not-the-token")
        assert copy.path != genuine.path
        status, reply = await bench.deliver(copy)
        assert (200, "received") == (status, reply["outcome"])

        status, reply = await bench.deliver(genuine)

        assert (200, "received") == (status, reply["outcome"])
        view = await bench.view(payment["payment_id"])
        assert ("completed", "exact", "100.00") == (
            view["status"],
            view["coverage"],
            view["received"],
        )

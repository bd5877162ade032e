"""Deliveries the ledger could not authenticate make it ask the provider (API.md, "Unverified
deliveries and provider queries"), against the real sandboxes of the three providers whose
clients have a status query: CoinPay, Cryptofuse and Payment Engine.

Each test has a sandbox pay (or not pay) a payment created through the ledger, captures the
sandbox's genuine webhooks, and sends the ledger only copies with a wrong signature: 401, kept
unverified in the payment's stream once the applier has applied it. The test drives
`ProviderQueries` itself (the service runs it in the background), so every query is one the test
asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from adapters.ingestion import applier as applier_module
from adapters.ingestion.applier import DeliveryApplier
from adapters.ingestion.receipt import DeliveryReceipt
from adapters.providers.http_client import dumps_exact
from adapters.providers.registry import build_adapters
from adapters.services.provider_queries import ProviderQueries
from adapters.services.query_schedule import QueryPolicy
from adapters.storage.postgres_store import PostgresEventStore
from ledger.codec import decode_document
from ledger.deliveries import ReceiptKind
from ledger.money import loads_exact
from tests.e2e.harness import FAST_RETRIES
from tests.e2e.records import receipts
from tests.e2e.webhook_kit import Captured, Rig, provider_tables, rig

ASKED = ("coinpay", "cryptofuse", "payment_engine")
# The two whose answer names the deposits; CoinPay's names only a status word (see below).
CONFIRMING = ("cryptofuse", "payment_engine")
# Tests ask at once and again after a failure at once; production spaces them (QueryPolicy).
AT_ONCE = QueryPolicy(spacing_seconds=0, retry_first_seconds=0.05, retry_max_seconds=0.1)


@dataclasses.dataclass
class Bench:
    rig: Rig
    store: PostgresEventStore
    queries: ProviderQueries
    provider: str

    async def paid(self, scenario: str = "full") -> tuple[dict[str, Any], list[Captured]]:
        """A payment created through the ledger, and the sandbox's genuine webhooks for it,
        captured on their way: none of them reached the ledger."""
        payment = await self.rig.create_payment(self.provider)
        return payment, await self.rig.scenario(self.provider, payment["provider_ref"], scenario)

    async def forge(self, delivery: Captured) -> None:
        status, reply = await self.rig.deliver(wrong_signature(delivery))
        assert 401 == status, reply
        await self.applied()

    async def applied(self) -> None:
        """Everything received so far applied (a refused delivery naming a known payment is
        kept there by the applier). The service's applier does it in the background; another
        applier over the same log, as here, applies each delivery once all the same."""
        await DeliveryApplier(self.store, self.queries.adapters).catch_up()

    async def view(self, payment: dict[str, Any]) -> dict[str, Any]:
        return await self.rig.view(payment["payment_id"])

    async def query_calls(self) -> int:
        return sum(query_route(self.provider, r) for r in await sandbox_requests(self))

    async def deliveries(self, payment: dict[str, Any]) -> list[dict[str, Any]]:
        """The deliveries kept in the payment's stream, as recorded."""
        return [
            decode_document(e.payload)["delivery"]
            for e in await self.store.read_stream(payment["payment_id"])
            if e.type == "Payment.DeliveryRecorded"
        ]

    async def open_reasons(self, payment: dict[str, Any]) -> set[str]:
        status, body = await self.rig.ledger.call(
            "GET", "/v1/reconciliation/items", params={"provider": self.provider, "limit": "100"}
        )
        assert 200 == status, body
        return {i["reason"] for i in body["items"] if i["subject_id"] == payment["payment_id"]}


@asynccontextmanager
async def bench_for(
    store: PostgresEventStore, provider: str, policy: QueryPolicy = AT_ONCE
) -> AsyncIterator[Bench]:
    async with rig(store, (provider,)) as built:
        adapters = build_adapters(provider_tables(built.sandbox_urls))
        for adapter in adapters.values():
            http = getattr(adapter.client, "_http", None) or getattr(adapter.client, "http", None)
            if http is not None and hasattr(http, "policy"):
                http.policy = FAST_RETRIES
        try:
            yield Bench(built, store, ProviderQueries(store, adapters, policy=policy), provider)
        finally:
            for adapter in adapters.values():
                await adapter.client.close()


async def sandbox_requests(bench: Bench) -> list[dict[str, Any]]:
    """The sandbox's log of API requests (`GET /_sandbox/requests`), read in this one place."""
    url = bench.rig.sandbox_urls[bench.provider] + "/_sandbox/requests"
    async with aiohttp.ClientSession() as http, http.get(url) as reply:
        assert 200 == reply.status
        return list((await reply.json())["requests"])


def query_route(provider: str, request: dict[str, Any]) -> bool:
    method, path = request["method"], request["path"]
    if provider == "coinpay":
        return method == "GET" and path.startswith("/api/transactions/")
    if provider == "cryptofuse":
        return method == "POST" and path == "/payments/status/"
    return method == "GET" and path.startswith("/api/v1/transactions/")


def wrong_signature(delivery: Captured) -> Captured:
    """The same bytes with a signature made with another secret (the `sha256=` prefix of
    Payment Engine kept, so that it is a mismatch rather than a malformed header)."""
    headers = dict(delivery.headers)
    for name, value in headers.items():
        if "signature" in name.lower():
            prefix = "sha256=" if value.startswith("sha256=") else ""
            headers[name] = prefix + "0f" * 32
    return dataclasses.replace(delivery, headers=headers)


def naming(delivery: Captured, source: dict[str, Any], target: dict[str, Any]) -> Captured:
    """A delivery of `source`'s payment rewritten to name `target`'s."""
    body = delivery.body.decode()
    for field in ("provider_ref", "order_id"):
        body = body.replace(source[field], target[field])
    return dataclasses.replace(delivery, body=body.encode())


def variant(delivery: Captured, number: int) -> Captured:
    """The same delivery with another dedupe key (a new event id, or an extra field)."""
    body = loads_exact(delivery.body)
    if "eventId" in body:
        body["eventId"] = f"{body['eventId']}-{number}"
    else:
        body["forged"] = number
    return dataclasses.replace(delivery, body=dumps_exact(body).encode())


async def forged_events(bench: Bench, payment: dict[str, Any]) -> list[Any]:
    return [
        e
        for e in await bench.store.read_stream(payment["payment_id"])
        if e.type == "Payment.DeliveryRecorded"
        and json.loads(e.payload)["delivery"].get("outcome") == "unverified"
    ]


def answers(deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in deliveries if d.get("source") == "provider_query" and "translation" in d]


def unverified(deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in deliveries if d["outcome"] == "unverified"]


# ---------------------------------------------------------------- confirmed by the answer


@pytest.mark.parametrize("provider", CONFIRMING)
async def test_a_forged_copy_of_a_genuine_payment_is_confirmed_by_the_providers_answer(
    store, provider
):
    async with bench_for(store, provider) as bench:
        payment, genuine = await bench.paid()
        for delivery in genuine:
            await bench.forge(delivery)
        before = await bench.view(payment)
        assert 0 == Decimal(before["received"])
        assert Decimal(before["unverified"]) > 0

        result = await bench.queries.run_pending()

        assert (1, 0) == (result.asked, result.failed)
        after = await bench.view(payment)
        assert ("completed", "exact", Decimal(0)) == (
            after["status"],
            after["coverage"],
            Decimal(after["unverified"]),
        )
        assert after["received"] == after["expected"]["amount"]
        assert all(d["verified"] for d in after["deposits"])
        deliveries = await bench.deliveries(payment)
        kept = unverified(deliveries)
        assert kept
        assert {"rejected"} == {d["verification"]["outcome"] for d in kept}
        (answer,) = answers(deliveries)
        assert ("verified", max(e.position for e in await forged_events(bench, payment))) == (
            answer["outcome"],
            answer["covers_through"],
        )
        confirmations = [d for d in deliveries if d.get("confirmed_by") == answer["dedupe_key"]]
        assert confirmations
        status, events = await bench.rig.ledger.call(
            "GET", f"/v1/payments/{payment['payment_id']}/events"
        )
        assert 200 == status
        types = [e["type"] for e in events["items"]]
        assert len(deliveries) == types.count("Payment.DeliveryRecorded")
        assert "Payment.ProviderExchangeRecorded" in types
        assert 1 == await bench.query_calls()

        # The genuine webhooks arriving now move nothing more, and the last one (its facts all
        # confirmed by the answer) is a plain duplicate rather than a second report.
        replies = [await bench.rig.deliver(delivery) for delivery in genuine]
        assert [(200, "received")] * len(genuine) == [(s, r["outcome"]) for s, r in replies]
        assert after["received"] == (await bench.view(payment))["received"]
        applied = (await bench.deliveries(payment))[len(deliveries) :]
        assert len(genuine) == len(applied)
        assert ("duplicate", "verified") == (
            applied[-1]["outcome"],
            applied[-1]["verification"]["outcome"],
        )
        assert set() == await bench.open_reasons(payment)


async def test_a_coinpay_answer_confirms_its_status_word_but_never_the_funds(store):
    """CoinPay's `GET /api/transactions/{id}` says `Completed` with the amount ASKED, for a full
    and a partial payment alike (its sandbox completes both), so no amount a delivery claims can
    be confirmed by it: a forged 'paid in full' for a half-paid payment stays unverified."""
    async with bench_for(store, "coinpay") as bench:
        payment, (genuine,) = await bench.paid("partial")
        claimed_full = genuine.body.replace(b'"amount":50', b'"amount":100')
        assert claimed_full != genuine.body
        await bench.forge(dataclasses.replace(genuine, body=claimed_full))

        result = await bench.queries.run_pending()

        assert (1, 0) == (result.asked, result.failed)
        after = await bench.view(payment)
        assert ("0.000000", "100.000000") == (after["received"], after["unverified"])
        (answer,) = answers(await bench.deliveries(payment))
        assert "Completed" == answer["translation"]["facts"][0]["status"]["status_word"]
        assert "unverified" in await bench.open_reasons(payment)

        # Only the genuine delivery moves money, and only what it says.
        status, reply = await bench.rig.deliver(genuine)
        assert (200, "received") == (status, reply["outcome"])
        after = await bench.view(payment)
        assert ("50.000000", "50.000000") == (after["received"], after["unverified"])
        assert "verified" == (await bench.deliveries(payment))[-1]["outcome"]


# ---------------------------------------------------------------- contradicted by the answer


@pytest.mark.parametrize("provider", ASKED)
async def test_a_forged_paid_delivery_for_an_unpaid_payment_stays_unverified_after_the_answer(
    store, provider
):
    async with bench_for(store, provider) as bench:
        unpaid = await bench.rig.create_payment(provider)
        other, genuine = await bench.paid()
        for delivery in genuine:
            await bench.forge(naming(delivery, other, unpaid))

        result = await bench.queries.run_pending()

        assert (1, 0) == (result.asked, result.failed)
        after = await bench.view(unpaid)
        assert ("pending", "unpaid") == (after["status"], after["coverage"])
        assert 0 == Decimal(after["received"])
        assert Decimal(after["unverified"]) > 0
        deliveries = await bench.deliveries(unpaid)
        assert unverified(deliveries)
        (answer,) = answers(deliveries)
        assert "verified" == answer["outcome"]
        assert [] == [d for d in deliveries if d.get("confirmed_by")]
        assert "unverified" in await bench.open_reasons(unpaid)
        # The other payment, whose webhooks were copied, was never named: never asked about.
        assert [] == await bench.deliveries(other)


# ---------------------------------------------------------------- how often the provider is asked


@pytest.mark.parametrize("provider", ASKED)
async def test_fifty_forged_deliveries_for_one_payment_make_one_query(store, provider):
    async with bench_for(store, provider, QueryPolicy(spacing_seconds=30)) as bench:
        payment, genuine = await bench.paid()
        loop = asyncio.create_task(bench.queries.run_forever(0.01))
        try:
            for start in range(0, 50, 10):
                await asyncio.gather(
                    *(bench.forge(variant(genuine[-1], n)) for n in range(start, start + 10))
                )
            await bench.queries.run_pending()
        finally:
            await stop(loop)
        assert 50 == len(unverified(await bench.deliveries(payment)))
        assert 1 == await bench.query_calls()


async def test_queries_to_one_provider_keep_to_its_rate(store):
    policy = QueryPolicy(spacing_seconds=0, rate_per_second=20, burst=1)
    async with bench_for(store, "payment_engine", policy) as bench:
        for _ in range(5):
            _, genuine = await bench.paid()
            await bench.forge(genuine[-1])
        started = asyncio.get_running_loop().time()

        result = await bench.queries.run_pending()

        assert 5 == result.asked
        # One at once, then one per 1/20 s: four waits of 0.05 s at least.
        assert asyncio.get_running_loop().time() - started >= 0.2


async def test_a_forged_delivery_naming_no_known_payment_stays_a_rejected_attempt(store):
    async with bench_for(store, "cryptofuse") as bench:
        payment, genuine = await bench.paid()
        stranger = {"provider_ref": "tx-nobody-knows", "order_id": "ORD_nobody"}
        for delivery in genuine:
            await bench.forge(naming(delivery, payment, stranger))

        result = await bench.queries.run_pending()

        assert (0, 0, 0) == (result.asked, result.failed, result.waiting)
        assert 0 == await bench.query_calls()
        assert [] == await bench.deliveries(payment)
        rejected = await receipts(store, ReceiptKind.REJECTED, "cryptofuse")
        assert len(genuine) == len(rejected)


# ---------------------------------------------------------------- faults and restarts


async def test_a_query_the_provider_fails_is_retried_after_a_pause(store):
    policy = QueryPolicy(spacing_seconds=0, retry_first_seconds=0.5, retry_max_seconds=1)
    async with bench_for(store, "payment_engine", policy) as bench:
        payment, genuine = await bench.paid()
        await bench.forge(genuine[-1])
        # As many failures as the client's own retries: the query as a whole fails once.
        status, _ = await bench.rig.sandbox(
            "payment_engine",
            "/_sandbox/faults",
            {"operation": "query_payment", "statuses": [503] * FAST_RETRIES.attempts},
        )
        assert 200 == status

        failed = await bench.queries.run_pending()
        at_once = await bench.queries.run_pending()
        await asyncio.sleep(policy.retry_first_seconds)
        later = await bench.queries.run_pending()

        assert (0, 1, 1) == (failed.asked, failed.failed, failed.waiting)
        assert (0, 0) == (at_once.asked, at_once.failed)  # still pausing
        assert (1, 0, 0) == (later.asked, later.failed, later.waiting)
        assert "completed" == (await bench.view(payment))["status"]
        # Every attempt is kept: the failed ones as exchanges, the last with its answer.
        exchanges = [
            decode_document(e.payload)["exchange"]
            for e in await store.read_stream(payment["payment_id"])
            if e.type == "Payment.ProviderExchangeRecorded"
        ]
        queried = [x["status"] for x in exchanges if x["operation"] == "query_payment"]
        assert [503] * FAST_RETRIES.attempts + [200] == queried


async def test_what_still_needs_asking_survives_a_restart(store):
    async with bench_for(store, "cryptofuse") as bench:
        payment, genuine = await bench.paid()
        for delivery in genuine:
            await bench.forge(delivery)
        # The first process died before asking: a new one finds the work in the log.
        restarted = dataclasses.replace(bench, queries=fresh_queries(bench))
        assert 1 == (await restarted.queries.run_pending()).asked
        # Once answered, the log says so: the next process asks nothing.
        again = fresh_queries(bench)
        assert (0, 0) == ((await again.run_pending()).asked, (await again.run_pending()).waiting)
        assert 1 == await bench.query_calls()
        assert "completed" == (await bench.view(payment))["status"]


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def fresh_queries(bench: Bench) -> ProviderQueries:
    return ProviderQueries(bench.store, bench.queries.adapters, policy=AT_ONCE)


async def test_the_applier_wakes_the_query_service_when_it_keeps_a_delivery_unverified(
    store, monkeypatch
):
    """The wiring the service uses: `DeliveryReceipt(on_received=applier.wake)` and
    `DeliveryApplier(on_unverified=queries.wake)`."""
    # The app's own applier waits for its wake-ups only (it polls the log otherwise): the
    # delivery below is applied by the applier under test, not found by that one first.
    monkeypatch.setattr(applier_module, "POLL_SECONDS", 3600)
    async with bench_for(store, "coinpay", QueryPolicy(spacing_seconds=0)) as bench:
        payment, (genuine,) = await bench.paid()
        queries = bench.queries
        applier = DeliveryApplier(store, queries.adapters, on_unverified=queries.wake)
        receipt = DeliveryReceipt(
            store, queries.adapters, clock=lambda: datetime.now(UTC), on_received=applier.wake
        )
        loop = asyncio.create_task(queries.run_forever(3600))
        try:
            await asyncio.sleep(0.1)  # its first pass found nothing; it now waits an hour
            forged = wrong_signature(genuine)
            result = await receipt.receive("coinpay", forged.body, forged.headers)
            assert ReceiptKind.REJECTED == result.kind
            await applier.catch_up()
            async with asyncio.timeout(10):
                # The sandbox is another server: its request log can only be polled.
                while not await bench.query_calls():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            await stop(loop)
        assert 1 == len(unverified(await bench.deliveries(payment)))

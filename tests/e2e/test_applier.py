"""The applier: every delivery answered 200 is applied, exactly once, whatever stops it.

Receipts are recorded here by a `DeliveryReceipt` of the test's own (a process that answered the
provider and died before applying anything); the ledger's applier, or a fresh one standing for a
restarted process, applies them from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

from adapters.config import Settings
from adapters.ingestion import applier as applier_module
from adapters.ingestion.applier import POSITION_CLAIM, DeliveryApplier
from adapters.ingestion.receipt import DeliveryReceipt
from adapters.ingestion.unmatched import UNMATCHED_RECORD, index_namespace
from adapters.providers.contract import ProviderAdapter
from adapters.providers.http_client import dumps_exact
from adapters.providers.payment_engine.webhooks import sign
from adapters.providers.registry import build_adapters
from adapters.storage.postgres_store import PostgresEventStore
from ledger.codec import decode_document, dumps_canonical
from ledger.deliveries import ReceiptKind
from ledger.ports import Claim, NewEvent
from tests.e2e.records import unmatched
from tests.e2e.webhook_kit import SECRETS, Captured, Rig, provider_tables, rig

PROVIDER = "coinpay"
PAYMENT_ENGINE = "payment_engine"
SCENARIOS = ("full", "partial", "duplicate", "over")


async def received_only(world: Rig, count: int) -> tuple[list[dict[str, Any]], list[Captured]]:
    """`count` payments and their scenarios' deliveries, recorded as receipts and nothing
    else: the provider got its 200 from a process that died right after."""
    receipt = DeliveryReceipt(world.ledger.store, world.adapters, clock=lambda: datetime.now(UTC))
    payments, deliveries = [], []
    for number in range(count):
        payment = await world.create_payment(PROVIDER)
        payments.append(payment)
        sent = await world.scenario(PROVIDER, payment["provider_ref"], SCENARIOS[number % 4])
        deliveries.extend(sent)
    for delivery in deliveries:
        # CoinPay signs its bodies: no callback-URL token in the path.
        answered = await receipt.receive(PROVIDER, delivery.body, delivery.headers)
        assert answered.kind in {ReceiptKind.RECEIVED, ReceiptKind.DUPLICATE}
    return payments, deliveries


async def recorded_keys(store: PostgresEventStore, payment_id: str) -> Counter[str]:
    """How many times each delivery was recorded as verified in the payment's stream."""
    keys: Counter[str] = Counter()
    for event in await store.read_stream(payment_id):
        if event.type.endswith(".DeliveryRecorded"):
            delivery = decode_document(event.payload)["delivery"]
            if delivery["outcome"] == "verified":
                keys[delivery["dedupe_key"]] += 1
    return keys


async def assert_applied_once(world: Rig, payments: list[dict[str, Any]]) -> None:
    for number, payment in enumerate(payments):
        view = await world.view(payment["payment_id"])
        keys = await recorded_keys(world.ledger.store, payment["payment_id"])
        assert keys, payment["payment_id"]
        assert {1} == set(keys.values()), keys  # no delivery applied twice
        scenario = SCENARIOS[number % 4]
        if scenario in {"full", "duplicate"}:
            assert ("completed", view["expected"]["amount"]) == (
                view["status"],
                view["received"],
            )
        elif scenario == "partial":
            assert "partial" == view["coverage"], view
        else:
            assert "over" == view["coverage"], view


async def test_every_delivery_answered_before_a_crash_is_applied_after_it(store):
    async with rig(store, (PROVIDER,)) as world:
        payments, _ = await received_only(world, 8)
        # The restarted service's applier finds the receipts in the log (a read waits for it).
        await assert_applied_once(world, payments)


async def test_an_applier_killed_at_random_points_applies_each_delivery_exactly_once(store):
    async with rig(store, (PROVIDER,)) as world:
        payments, _ = await received_only(world, 12)
        chance = random.Random(20261206)
        for _kill in range(12):
            # A new process each time: nothing carried over but what the database holds.
            applier = DeliveryApplier(store, world.adapters)
            task = asyncio.create_task(applier.catch_up())
            await asyncio.sleep(chance.uniform(0, 0.03))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await assert_applied_once(world, payments)


async def test_two_appliers_at_once_apply_each_delivery_once(store):
    async with rig(store, (PROVIDER,)) as world:
        payments, _ = await received_only(world, 8)
        first = DeliveryApplier(store, world.adapters)
        second = DeliveryApplier(store, world.adapters)
        await asyncio.gather(first.catch_up(), second.catch_up())
        await assert_applied_once(world, payments)
        claim = await store.find_claim(POSITION_CLAIM, "applier:0")
        assert claim is not None
        assert int(claim.value) >= max(first.committed or 0, second.committed or 0)


class CountingPool:
    """The store's pool, counting the rows its reads return (the applier reads through it)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.rows = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        rows = await self._pool.fetch(*args, **kwargs)
        self.rows += len(rows)
        return rows

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        row = await self._pool.fetchrow(*args, **kwargs)
        self.rows += row is not None
        return row


async def store_unmatched(store: PostgresEventStore, count: int) -> None:
    """`count` unmatched deliveries for other orders, stored as the applier stores them."""
    for first in range(0, count, 1_000):
        numbers = range(first, min(first + 1_000, count))
        streams = [f"unmatched-earlier-{n}" for n in numbers]
        events = [
            NewEvent(stream, 1, UNMATCHED_RECORD, dumps_canonical({"dedupe_key": stream}))
            for stream in streams
        ]
        claims = [
            Claim(index_namespace(PAYMENT_ENGINE, "payment", f"earlier-{n}"), stream, stream)
            for n, stream in zip(numbers, streams, strict=True)
        ]
        await store.append(events, expected_versions=dict.fromkeys(streams, 0), claims=claims)


def payment_engine_deposit(order: str) -> tuple[bytes, dict[str, str]]:
    """A signed Payment Engine delivery of a deposit to `order` (the bench's shape)."""
    body = dumps_exact({
        "eventId": f"evt_{uuid4().hex}",
        "eventType": "transaction.completed",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "transactionId": f"tx-{uuid4().hex}",
            "externalReference": order,
            "toAccountId": "merchant",
            "paymentTypeId": "crypto_deposit",
            "amount": Decimal("1.00"),
            "currencyCode": "USD",
            "status": "COMPLETED",
        },
    }).encode()  # fmt: skip
    secret = SECRETS[PAYMENT_ENGINE].webhook_secret
    return body, {"X-Webhook-Signature": sign(secret, body), "Content-Type": "application/json"}


async def rows_read_for_one_unmatched_delivery(
    adapters: Mapping[str, ProviderAdapter], store: PostgresEventStore
) -> int:
    receipt = DeliveryReceipt(store, adapters, clock=lambda: datetime.now(UTC))
    body, headers = payment_engine_deposit(f"ORD_nobody_{uuid4().hex[:8]}")
    assert ReceiptKind.RECEIVED == (await receipt.receive(PAYMENT_ENGINE, body, headers)).kind
    counting = CountingPool(store.pool)
    store.pool = counting  # type: ignore[assignment]
    try:
        await DeliveryApplier(store, adapters).catch_up()
    finally:
        store.pool = counting._pool
    (held,) = [d for d in await unmatched(store, PAYMENT_ENGINE) if d["body"] == body.decode()]
    assert held["references"]
    return counting.rows


async def test_an_unmatched_delivery_reads_as_much_with_10000_stored_as_with_none(store):
    """The unmatched index is keyed: the rows a delivery's application reads do not grow with
    the unmatched deliveries stored before it (they were a scan of them all)."""
    # No service runs here: only this test's applier reads the store.
    tables = provider_tables({PAYMENT_ENGINE: "http://127.0.0.1:9"})
    adapters = build_adapters(Settings(providers=tables).providers)
    await rows_read_for_one_unmatched_delivery(adapters, store)  # the applier's first position
    alone = await rows_read_for_one_unmatched_delivery(adapters, store)
    await store_unmatched(store, 10_000)
    among_many = await rows_read_for_one_unmatched_delivery(adapters, store)
    assert alone == among_many, (alone, among_many)


async def test_a_withdrawal_right_after_an_acknowledged_deposit_counts_that_deposit(
    store, monkeypatch
):
    """The funds check has every delivery received so far applied before it reads the journal:
    a deposit answered 200 before the withdrawal request is available to it."""
    # The background applier runs only when something asks for it: the check must ask.
    monkeypatch.setattr(applier_module, "POLL_SECONDS", 3600)
    monkeypatch.setattr(DeliveryApplier, "wake", lambda _: None)
    async with rig(store, (PROVIDER,), background=True) as world:
        payment = await world.create_payment(PROVIDER)
        (delivery,) = await world.scenario(PROVIDER, payment["provider_ref"], "full")
        status, reply = await world.deliver(delivery)
        assert (200, "received") == (status, reply["outcome"])
        body = {
            "provider": PROVIDER,
            "request_id": "WD-after-deposit",
            "amount": "10",
            "currency": payment["expected"]["currency"],
            "address": "bank-acct-1",
        }
        status, reply = await world.ledger.call("POST", "/v1/withdrawals", json=body)
    assert 201 == status, reply

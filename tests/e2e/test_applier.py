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
from datetime import UTC, datetime
from typing import Any

from adapters.ingestion.applier import POSITION_CLAIM, DeliveryApplier
from adapters.ingestion.receipt import DeliveryReceipt
from adapters.storage.postgres_store import PostgresEventStore
from ledger.codec import decode_document
from ledger.deliveries import ReceiptKind
from tests.e2e.webhook_kit import Captured, Rig, rig

PROVIDER = "coinpay"
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

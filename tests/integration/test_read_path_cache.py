"""The aggregate cache behind AggregateRepository: a cached load equals a replay of the stream,
and a cache never lets a writer build on a stale version."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from adapters.storage.aggregate_cache import AggregateCache
from adapters.storage.repository import AggregateRepository, shared_cache
from ledger.codec import rebuild
from ledger.commands import DepositReport, PaymentReference, PaymentUpdate
from ledger.errors import ConcurrencyConflict
from ledger.money import Money
from ledger.payment import Payment
from ledger.withdrawal import Withdrawal
from tests.histories import HistoryWriter, histories

PROPERTY = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def state(aggregate: Any) -> dict[str, Any]:
    return {k: v for k, v in aggregate.__dict__.items() if k != "_pending_events"}


def new_payment() -> Payment:
    return Payment.create(
        provider="coinpay",
        provider_ref=uuid.uuid4().hex,
        order_id=uuid.uuid4().hex,
        expected=Money.of("10", "USDT"),
        price=Money.of("10", "USD"),
        expires_at=None,
    )


def deposit(payment: Payment, number: int) -> None:
    report = DepositReport(f"d{number}", Decimal("1.000001"), "USDT", confirmed=False)
    update = PaymentUpdate(PaymentReference(payment.provider), deposits=(report,))
    payment.apply_update(update, received_at=datetime.now(UTC), verified=True)


async def test_a_cached_aggregate_equals_the_replayed_one(store):
    loop = asyncio.get_running_loop()

    @given(history=histories)
    @PROPERTY
    def run(history):
        asyncio.run_coroutine_threadsafe(check(history), loop).result()

    async def check(history):
        # The writer loads through the store's shared cache before every step, so each load
        # starts from the cached state and replays only the events after it.
        writer = HistoryWriter(store)
        await writer.write(history)
        cached = AggregateRepository(store)
        cold = AggregateRepository(store, cache=AggregateCache())
        for kind, ids in ((Payment, writer.payments), (Withdrawal, writer.withdrawals)):
            for subject_id in ids:
                replayed = rebuild(await store.read_stream(str(subject_id)))
                assert state(replayed) == state(await cached.load(kind, subject_id))
                assert state(replayed) == state(await cold.load(kind, subject_id))
                assert state(replayed) == state(await cold.load(kind, subject_id))  # now cached

    await asyncio.to_thread(run)


async def test_a_cache_never_serves_a_stale_version_to_a_writer(store):
    first = AggregateRepository(store, cache=AggregateCache())
    second = AggregateRepository(store, cache=AggregateCache())
    payment = new_payment()
    await first.save(payment)
    mine = await first.load(Payment, payment.id)
    theirs = await second.load(Payment, payment.id)
    assert mine is not None
    assert theirs is not None
    assert mine.version == theirs.version == 1

    deposit(mine, 1)
    await first.save(mine)
    deposit(theirs, 2)  # built on version 1, which the first writer has moved past
    with pytest.raises(ConcurrencyConflict):
        await second.save(theirs)

    reloaded = await second.load(Payment, payment.id)
    assert reloaded is not None
    assert mine.version == reloaded.version
    assert set(reloaded.deposits) == {"d1"}
    assert state(rebuild(await store.read_stream(str(payment.id)))) == state(reloaded)


async def test_what_a_caller_changes_in_a_loaded_aggregate_never_reaches_the_cache(store):
    repository = AggregateRepository(store, cache=AggregateCache())
    payment = new_payment()
    await repository.save(payment)
    loaded = await repository.load(Payment, payment.id)
    assert loaded is not None
    deposit(loaded, 1)  # never saved
    again = await repository.load(Payment, payment.id)
    assert again is not None
    assert (1, {}) == (again.version, again.deposits)
    assert [] == list(again.collect_events())


async def test_the_cache_is_bounded_least_recently_used_first_out(store):
    cache = AggregateCache(capacity=3)
    repository = AggregateRepository(store, cache=cache)
    payments = [new_payment() for _ in range(5)]
    for payment in payments:
        await repository.save(payment)
        await repository.load(Payment, payment.id)
    assert 3 == len(cache)
    assert cache.get(str(payments[0].id)) is None
    assert cache.get(str(payments[4].id)) is not None


def test_repositories_of_one_store_share_its_cache(store):
    assert AggregateRepository(store).cache is shared_cache(store)
    assert AggregateRepository(store).cache is AggregateRepository(store).cache

"""The read path at speed: projections sharing batches (one fold for all), batches that grow while
catching up, the log read in prefetched pages; each must give what one event at a time gives."""

from __future__ import annotations

import asyncio
import gc
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings

from adapters.storage.postgres_store import create_pool
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.collector import BATCH_THRESHOLD, fewer_collections
from adapters.storage.read_models.journal import JournalProjection
from adapters.storage.read_models.runner import ProjectionFailed, ProjectionRunner
from tests.histories import HistoryWriter, histories, seeded_history
from tests.integration.test_projections import empty_schema, snapshot

pytestmark = pytest.mark.slow

PROPERTY = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def shared_runner(pool, **options) -> ProjectionRunner:
    """All projections over shared batches that start small and grow (several sizes meet)."""
    return ProjectionRunner(
        pool, all_projections(), batch_size=options.pop("batch_size", 2), **options
    )


async def rebuild_one_event_per_batch(pool) -> None:
    single = ProjectionRunner(pool, all_projections(), batch_size=1, catch_up_batch_max=1)
    for name in single.projections:
        await single.rebuild(name)


async def test_shared_growing_batches_equal_one_event_per_batch_row_for_row(pool, store):
    loop = asyncio.get_running_loop()

    @given(history=histories)
    @PROPERTY
    def run(history):
        asyncio.run_coroutine_threadsafe(check(history), loop).result()

    async def check(history):
        await empty_schema(pool)
        writer = HistoryWriter(store)
        await writer.write(history)
        await shared_runner(pool, catch_up_batch_max=64).catch_up()
        shared = await snapshot(pool)
        await rebuild_one_event_per_batch(pool)
        assert shared == await snapshot(pool)

    await asyncio.to_thread(run)


async def test_projections_at_different_positions_all_reach_the_head_and_agree(pool, store):
    writer = HistoryWriter(store)
    for seed in range(3):
        await writer.write(seeded_history(300 + seed))
    # The journal runs ahead alone, then all three go on together from where each stands.
    await ProjectionRunner(pool, [JournalProjection()], batch_size=5).catch_up()
    for seed in range(3, 5):
        await writer.write(seeded_history(300 + seed))
    runner = shared_runner(pool, batch_size=4, catch_up_batch_max=32)
    await runner.catch_up()
    assert all(0 == status.lag for status in await runner.status())
    caught_up = await snapshot(pool)
    await rebuild_one_event_per_batch(pool)
    assert caught_up == await snapshot(pool)


async def test_killing_a_runner_of_shared_growing_batches_leaves_exactly_once_effects(
    pool, store, database_url, schema
):
    writer = HistoryWriter(store)
    for seed in range(6):
        await writer.write(seeded_history(400 + seed))
    shaker = random.Random(11)
    runner_pool = await create_pool(
        database_url, schema=schema, min_size=1, max_size=4, application_name=f"kill-{schema}"
    )
    runner = shared_runner(runner_pool, batch_size=3, catch_up_batch_max=48)
    interrupted = 0
    for _ in range(25):
        task = asyncio.create_task(runner.catch_up())
        await asyncio.sleep(shaker.uniform(0, 0.02))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            interrupted += 1
    assert interrupted > 10, "the kills landed after the work: a weak test"
    await runner_pool.close()
    await shared_runner(pool, batch_size=3, catch_up_batch_max=48).catch_up()
    after_kills = await snapshot(pool)
    await rebuild_one_event_per_batch(pool)
    assert after_kills == await snapshot(pool)


class ExplodesOnSettle(JournalProjection):
    async def apply(self, connection, events):
        if any(event.type == "Payment.Settled" for event in events):
            raise RuntimeError("cannot post a settlement")
        await super().apply(connection, events)


async def test_a_failing_projection_stops_at_its_event_while_the_others_reach_the_head(pool, store):
    writer = HistoryWriter(store)
    await writer.write([("pay", "coinpay", "USDT", Decimal(10), 0, True, None, "")])
    await writer.write([("deposit", "coinpay", "USDT", Decimal(10), 1, True, None, "")])
    await writer.write([("settle", "coinpay", "USDT", Decimal(10), 0, True, None, "")])
    await writer.write([("pay", "coinpay", "USDT", Decimal(5), 0, True, None, "")])
    settled = [
        e for e in await store.read_stream(str(writer.payments[0])) if e.type.endswith("Settled")
    ]
    others = [p for p in all_projections() if p.name != "journal"]
    runner = ProjectionRunner(pool, [ExplodesOnSettle(), *others], batch_size=100)
    with pytest.raises(ProjectionFailed) as failed:
        await runner.catch_up()
    assert settled[0].position == failed.value.event.position
    positions = {status.name: status for status in await runner.status()}
    assert settled[0].position - 1 == positions["journal"].position
    assert settled[0].position == positions["journal"].failed_position
    assert all(0 == positions[p.name].lag for p in others)


async def test_a_rebuild_reports_its_rate_and_time_left(pool, store):
    writer = HistoryWriter(store)
    await writer.write(seeded_history(500))
    runner = ProjectionRunner(pool, all_projections(), batch_size=2, catch_up_batch_max=8)
    seen = []
    done = await runner.rebuild(
        "subjects", lambda d, t: seen.append((d, t, runner.rebuild_progress))
    )
    assert done == seen[-1][0] == seen[-1][1]
    assert all(p is not None and p.events_per_second > 0 for _, _, p in seen)
    assert 0 == seen[-1][2].eta_seconds
    assert [d for d, _, _ in seen] == sorted({d for d, _, _ in seen})


async def test_the_log_read_in_prefetched_pages_is_every_event_once_in_order(store):
    writer = HistoryWriter(store)
    await writer.write(seeded_history(600))
    head = (await store.head(0)).position
    for size in (1, 7, head, head + 5):
        batches = [batch async for batch in store.read_log(0, batch_size=size)]
        assert list(range(1, head + 1)) == [e.position for b in batches for e in b]
        assert all(len(b) <= size for b in batches)
    after = head // 2
    tail = [e.position async for b in store.read_log(0, after=after, batch_size=3) for e in b]
    assert list(range(after + 1, head + 1)) == tail


def test_collections_are_fewer_during_batches_and_as_before_after_them():
    before = gc.get_threshold()
    with fewer_collections():
        with fewer_collections():
            assert max(before[0], BATCH_THRESHOLD) == gc.get_threshold()[0]
        assert max(before[0], BATCH_THRESHOLD) == gc.get_threshold()[0]
    assert before == gc.get_threshold()

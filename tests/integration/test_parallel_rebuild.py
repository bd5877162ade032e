"""Every projection rebuilt at once, each in its own worker process and transaction: the result
equals the live read models, readers keep the old rows until each commits, and one that fails
rolls back alone."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from adapters.storage.read_models import all_projections
from adapters.storage.read_models.base import Projection
from adapters.storage.read_models.journal import JournalProjection
from adapters.storage.read_models.rebuild import RebuildJob, rebuild_in_parallel
from adapters.storage.read_models.reconciliation import ReconciliationProjection
from adapters.storage.read_models.runner import ProjectionRunner, RebuildProgress
from adapters.storage.read_models.subjects_view import SubjectsView
from tests.histories import HistoryWriter, seeded_history
from tests.integration.test_projections import READ_MODELS, snapshot

pytestmark = pytest.mark.slow

NAMES = ["subjects", "journal", "reconciliation"]
# One table of each projection, damaged before a rebuild: what a rebuild restores, and what a
# rolled-back one leaves as it was.
DAMAGED = {
    "subjects": "payments_view",
    "journal": "journal_entries",
    "reconciliation": "reconciliation_items",
}


class RefusingJournal(JournalProjection):
    async def apply(self, connection, events):
        raise RuntimeError("the journal refuses this log")


def with_a_failing_journal() -> list[Projection]:
    """Imported by name in the worker, which cannot be handed instances."""
    return [SubjectsView(), RefusingJournal(), ReconciliationProjection()]


def jobs_for(database_url: str, schema: str, **options) -> list[RebuildJob]:
    return [RebuildJob(name, database_url, schema, **options) for name in NAMES]


async def live_history(pool, store, seeds: range) -> dict[str, list[dict]]:
    writer = HistoryWriter(store)
    for seed in seeds:
        await writer.write(seeded_history(seed))
    await ProjectionRunner(pool, all_projections()).catch_up()
    built = await snapshot(pool)
    for table in DAMAGED.values():
        assert built[table], f"{table} is empty: a weak test"
    return built


async def damage(pool) -> dict[str, list[dict]]:
    async with pool.acquire() as connection:
        await connection.execute("SET session_replication_role = replica")  # lets DELETE pass
        for table in DAMAGED.values():
            await connection.execute(
                f"DELETE FROM {table} WHERE ctid = (SELECT min(ctid) FROM {table})"
            )
        await connection.execute("SET session_replication_role = DEFAULT")
    return await snapshot(pool)


async def test_a_parallel_rebuild_of_all_three_equals_the_live_read_models(
    pool, store, database_url, schema
):
    built_live = await live_history(pool, store, range(300, 306))
    await damage(pool)
    outcomes = await rebuild_in_parallel(jobs_for(database_url, schema), workers=2)
    assert [(name, None) for name in NAMES] == [(o.name, o.failure) for o in outcomes]
    assert all(o.events > 0 for o in outcomes)
    assert built_live == await snapshot(pool)


async def read_at_once(pool) -> tuple[dict[str, object], dict[str, list[dict]]]:
    """Every read model and when each projection's position rows last committed, all from one
    snapshot: a projection whose stamp is unchanged had not committed its rebuild in it."""
    async with pool.acquire() as connection, connection.transaction(isolation="repeatable_read"):
        stamps = await connection.fetch(
            "SELECT name, max(updated_at) AS stamp FROM projection_positions GROUP BY name"
        )
        rows = {}
        for table, key in READ_MODELS.items():
            fetched = await connection.fetch(f"SELECT * FROM {table} ORDER BY {key}")
            rows[table] = [dict(row) for row in fetched]
    return {row["name"]: row["stamp"] for row in stamps}, rows


async def test_readers_keep_the_old_rows_until_each_parallel_rebuild_commits(
    pool, store, database_url, schema
):
    await live_history(pool, store, range(310, 314))
    await damage(pool)
    stamps_before, before = await read_at_once(pool)
    tables = {projection.name: projection.tables for projection in all_projections()}
    steps: list[RebuildProgress] = []
    # One event per batch: slow enough to be read many times mid-rebuild.
    rebuilding = asyncio.create_task(
        rebuild_in_parallel(
            jobs_for(database_url, schema, batch_size=1), workers=3, progress=steps.append
        )
    )
    reads_mid_rebuild = 0
    while not rebuilding.done():
        stamps, rows = await read_at_once(pool)
        started = {step.name for step in steps}
        for name in NAMES:
            if stamps[name] == stamps_before[name]:  # not committed in this snapshot
                assert [before[t] for t in tables[name]] == [rows[t] for t in tables[name]]
                reads_mid_rebuild += name in started
    assert all(outcome.committed for outcome in await rebuilding)
    assert reads_mid_rebuild > 1, "the rebuilds were over before anyone read: a weak test"
    _, after = await read_at_once(pool)
    assert before != after, "the rebuilds did not change the damaged tables"


async def test_one_failing_projection_keeps_its_old_model_and_the_others_commit(
    pool, store, database_url, schema
):
    built_live = await live_history(pool, store, range(320, 323))
    damaged = await damage(pool)
    outcomes = await rebuild_in_parallel(
        jobs_for(database_url, schema, projections=with_a_failing_journal), workers=2
    )
    by_name = {o.name: o for o in outcomes}
    assert "the journal refuses this log" in (by_name["journal"].failure or "")
    assert by_name["subjects"].committed
    assert by_name["reconciliation"].committed
    after = await snapshot(pool)
    journal_tables = {
        "journal_entries",
        "journal_postings",
        "account_balances",
        "journal_unmatched",
    }
    for table, rows in after.items():
        expected = damaged if table in journal_tables else built_live
        assert expected[table] == rows, table
    lags = {s.name: s.lag for s in await ProjectionRunner(pool, all_projections()).status()}
    assert dict.fromkeys(NAMES, 0) == lags, "the rolled-back position rows moved"


class Slowed:
    """A projection as it is, 20 ms slower per batch: a rebuild long enough to interrupt."""

    def __init__(self, inner: Projection) -> None:
        self.inner = inner
        self.name = inner.name
        self.tables = inner.tables
        self.reads = inner.reads

    async def apply(self, connection, events):
        await asyncio.sleep(0.02)
        await self.inner.apply(connection, events)

    def forget(self) -> None:
        self.inner.forget()


def slowed_projections() -> list[Projection]:
    return [Slowed(projection) for projection in all_projections()]


async def test_cancelling_a_parallel_rebuild_stops_the_workers_and_rolls_every_one_back(
    pool, store, database_url, schema
):
    await live_history(pool, store, range(330, 334))
    before = await damage(pool)
    steps: list[RebuildProgress] = []
    all_started = asyncio.Event()

    def seen(step: RebuildProgress) -> None:
        steps.append(step)
        if {each.name for each in steps} == set(NAMES):
            all_started.set()

    jobs = jobs_for(database_url, schema, batch_size=1, projections=slowed_projections)
    rebuilding = asyncio.create_task(rebuild_in_parallel(jobs, workers=3, progress=seen))
    async with asyncio.timeout(15):
        await all_started.wait()
    assert not any(step.done == step.total for step in steps), "too late to cancel: a weak test"
    rebuilding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rebuilding
    assert [] == multiprocessing.active_children()
    assert before == await snapshot(pool)

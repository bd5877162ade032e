"""Projections on a real PostgreSQL: balanced journal, replay equals live, exactly-once under kills,
and a failing event stops its projection there."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings

from adapters.storage.postgres_store import create_pool
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.journal import JournalProjection
from adapters.storage.read_models.runner import ProjectionFailed, ProjectionRunner
from adapters.storage.repository import AggregateRepository
from ledger.payment import Payment
from ledger.withdrawal import Withdrawal
from projections.postings import Kind, payment_targets, withdrawal_targets
from tests.histories import HistoryWriter, histories, seeded_history

pytestmark = pytest.mark.slow

PROPERTY = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

READ_MODELS = {
    "payments_view": "payment_id",
    "withdrawals_view": "withdrawal_id",
    "journal_entries": "partition, position",
    "journal_postings": "partition, position, line",
    "account_balances": "account, currency",
    "journal_unmatched": "provider, dedupe_key",
    "reconciliation_items": "subject_type, subject_id, reason, detected_position",
    "reconciliation_funds": "provider, currency",
    "reconciliation_unmatched_funds": "provider, dedupe_key, currency",
}


async def snapshot(pool) -> dict[str, list[dict]]:
    """Every read-model row, in key order: what `row for row` compares."""
    rows = {}
    for table, key in READ_MODELS.items():
        fetched = await pool.fetch(f"SELECT * FROM {table} ORDER BY {key}")
        rows[table] = [dict(r) for r in fetched]
    return rows


async def empty_schema(pool) -> None:
    async with pool.acquire() as connection:
        await connection.execute("SET session_replication_role = replica")  # lets DELETE pass
        for table in ["events", "claims", "projection_positions", *READ_MODELS]:
            await connection.execute(f"DELETE FROM {table}")
        await connection.execute("UPDATE log_heads SET position = 0, hash = $1", bytes(32))
        await connection.execute("SET session_replication_role = DEFAULT")


async def test_every_entry_balances_and_balances_equal_the_final_states(pool, store):
    loop = asyncio.get_running_loop()

    @given(history=histories)
    @PROPERTY
    def run(history):
        # Hypothesis drives examples from a thread; each runs on the test's loop and pool.
        asyncio.run_coroutine_threadsafe(check(history), loop).result()

    async def check(history):
        await empty_schema(pool)
        writer = HistoryWriter(store)
        await writer.write(history)
        runner = ProjectionRunner(pool, all_projections(), batch_size=7)
        await runner.catch_up()

        sums = await pool.fetch(
            "SELECT position, currency, kind = 'posted' AS posted, sum(amount) AS total"
            " FROM journal_postings GROUP BY position, currency, kind = 'posted'"
        )
        assert [] == [dict(r) for r in sums if r["total"] != 0], "an entry does not balance"
        totals = await pool.fetch(
            "SELECT currency, sum(posted) AS posted, sum(pending) AS pending"
            " FROM account_balances GROUP BY currency"
        )
        assert all(r["posted"] == 0 and r["pending"] == 0 for r in totals)
        balances = await pool.fetch("SELECT * FROM account_balances")
        for row in balances:
            assert row["reserved"] <= 0
            assert row["posted"] + row["reserved"] <= row["posted"]  # available never exceeds

        # The journal's sums are the postings the final states stand for (the oracle computes
        # them from the aggregates, not from the journal), unmatched suspense aside.
        repository = AggregateRepository(store)
        expected: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        for payment_id in writer.payments:
            payment = await repository.load(Payment, payment_id)
            for key, amount in payment_targets(payment).items():
                expected[(key.account, key.currency, key.kind.value)] += amount
        for withdrawal_id in writer.withdrawals:
            withdrawal = await repository.load(Withdrawal, withdrawal_id)
            for key, amount in withdrawal_targets(withdrawal).items():
                expected[(key.account, key.currency, key.kind.value)] += amount
        unmatched = await pool.fetch("SELECT postings FROM journal_unmatched WHERE NOT matched")
        for row in unmatched:
            for account, currency, kind, amount in row["postings"]:
                expected[(account, currency, kind)] += Decimal(amount)
        actual: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        for row in balances:
            actual[(row["account"], row["currency"], Kind.POSTED.value)] += row["posted"]
            actual[(row["account"], row["currency"], "pending+reserved")] += row["pending"]
        folded: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
        for (account, currency, kind), amount in expected.items():
            bucket = kind if kind == Kind.POSTED.value else "pending+reserved"
            folded[(account, currency, bucket)] += amount
        assert {k: v for k, v in folded.items() if v} == {k: v for k, v in actual.items() if v}

    await asyncio.to_thread(run)


async def test_a_rebuild_equals_the_read_models_built_live_while_events_arrived(pool, store):
    writer = HistoryWriter(store)
    runner = ProjectionRunner(pool, all_projections(), batch_size=5, poll_seconds=0.05)
    live = asyncio.create_task(runner.run_forever())
    for seed in range(5):
        await writer.write(seeded_history(seed))
    await asyncio.sleep(0.3)
    await runner.catch_up()
    live.cancel()
    with pytest.raises(asyncio.CancelledError):
        await live
    built_live = await snapshot(pool)
    assert built_live["journal_entries"], "the history moved no money: a weak test"
    # One event per batch on rebuild: folding a batch's changes must equal applying them singly.
    single = ProjectionRunner(pool, all_projections(), batch_size=1)
    for name in single.projections:
        await single.rebuild(name)
    assert built_live == await snapshot(pool)


async def test_killing_the_runner_mid_batch_leaves_exactly_once_effects(
    pool, store, database_url, schema
):
    writer = HistoryWriter(store)
    for seed in range(6):
        await writer.write(seeded_history(100 + seed))
    shaker = random.Random(7)
    # The runner gets its own named pool, so the connection kill below hits only its sessions.
    runner_pool = await create_pool(
        database_url, schema=schema, min_size=1, max_size=4, application_name=f"kill-{schema}"
    )
    runner = ProjectionRunner(runner_pool, all_projections(), batch_size=3)
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
    # A dropped connection is a kill too: the server rolls the open batch back.
    async with pool.acquire() as connection:
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = $1 AND state = 'idle in transaction'",
            f"kill-{schema}",
        )
    await runner_pool.close()
    restarted = ProjectionRunner(pool, all_projections(), batch_size=3)
    await restarted.catch_up()
    after_kills = await snapshot(pool)
    for name in restarted.projections:
        await restarted.rebuild(name)
    assert after_kills == await snapshot(pool)


class ExplodesOnSecondSettle(JournalProjection):
    name = "journal"

    def __init__(self) -> None:
        super().__init__()
        self.settles = 0

    async def apply(self, connection, events):
        for event in events:
            if event.type == "Payment.Settled":
                raise RuntimeError("cannot post a settlement")
        await super().apply(connection, events)


async def test_a_projection_that_raises_stops_at_that_event_and_says_which(pool, store):
    writer = HistoryWriter(store)
    await writer.write([("pay", "coinpay", "USDT", Decimal(10), 0, True, None, "")])
    await writer.write([("deposit", "coinpay", "USDT", Decimal(10), 1, True, None, "")])
    await writer.write([("settle", "coinpay", "USDT", Decimal(10), 0, True, None, "")])
    await writer.write([("pay", "coinpay", "USDT", Decimal(5), 0, True, None, "")])
    settled = [
        e for e in await store.read_stream(str(writer.payments[0])) if e.type.endswith("Settled")
    ]
    assert 1 == len(settled)
    runner = ProjectionRunner(pool, [ExplodesOnSecondSettle()], batch_size=100)
    with pytest.raises(ProjectionFailed) as failed:
        await runner.catch_up()
    assert failed.value.event.position == settled[0].position
    (status,) = await runner.status()
    assert settled[0].position - 1 == status.position
    assert settled[0].position == status.failed_position
    assert "Payment.Settled" in status.failure
    # It does not skip: asked again, it fails again at the same event.
    with pytest.raises(ProjectionFailed):
        await runner.catch_up()
    assert settled[0].position - 1 == (await runner.status())[0].position


async def test_readers_keep_the_old_rows_while_a_rebuild_runs(pool, store):
    """A rebuild replays in one transaction: the service keeps answering from the read model as
    it was (never from a half-empty one) until the rebuilt one commits."""
    writer = HistoryWriter(store)
    for seed in range(4):
        await writer.write(seeded_history(200 + seed))
    runner = ProjectionRunner(pool, all_projections(), batch_size=1)
    await runner.catch_up()
    before = await snapshot(pool)
    assert before["journal_entries"], "the history moved no money: a weak test"
    done: list[int] = []
    rebuilding = asyncio.create_task(runner.rebuild("journal", lambda d, _: done.append(d)))
    reads = 0
    while not rebuilding.done():
        assert before == await snapshot(pool)
        reads += 1
    await rebuilding
    assert reads > 1, "the rebuild was over before anyone read: a weak test"
    assert done, "the rebuild reported no progress"
    assert before == await snapshot(pool)
    (journal,) = [s for s in await runner.status() if s.name == "journal"]
    assert 0 == journal.lag

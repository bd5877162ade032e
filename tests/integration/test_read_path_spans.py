"""Projections are sent only the events they read (`Projection.reads`): the runner fetches spans
of positions with the other events left on the server. Row for row that must give what reading
every event gives, and each position must still reach the head when the log ends in events no
projection reads."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.storage.read_models import all_projections
from adapters.storage.read_models.runner import ProjectionRunner
from ledger.ports import NewEvent
from tests.histories import HistoryWriter, histories
from tests.integration.test_projections import READ_MODELS, empty_schema, snapshot

pytestmark = pytest.mark.slow

# Types no projection reads, some of them a LIKE pattern away from one that it does.
NOISE_TYPES = ["Delivery.Received", "Delivery.Duplicate", "Paymentx.Created", "Pay_ent.Created"]
noise = st.lists(st.sampled_from(NOISE_TYPES), max_size=3)


def reading_everything(projection):
    """The same projection, sent every event of the log."""
    every = type(f"Every{type(projection).__name__}", (type(projection),), {"reads": None})
    return every()


async def test_only_the_events_read_are_sent_and_rows_equal_reading_every_event(pool, store):
    loop = asyncio.get_running_loop()
    serial = itertools.count()

    @given(history=histories, noise_between=st.lists(noise, min_size=1), trailing=noise)
    @settings(
        max_examples=10,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def run(history, noise_between, trailing):
        asyncio.run_coroutine_threadsafe(check(history, noise_between, trailing), loop).result()

    async def add_noise(types: list[str]) -> None:
        for event_type in types:
            stream = f"noise-{next(serial)}"
            await store.append(
                [NewEvent(stream, 1, event_type, b'{"body": "x"}')],
                expected_versions={stream: 0},
            )

    async def check(history, noise_between, trailing):
        await empty_schema(pool)
        writer = HistoryWriter(store)
        for step, between in zip(history, itertools.cycle(noise_between), strict=False):
            await add_noise(between)
            await writer.write_step(step)
        await add_noise([*trailing, "Delivery.Received"])  # the log ends in an unread event
        head = await pool.fetchval("SELECT position FROM log_heads WHERE partition = 0")

        sent: dict[str, set[str]] = {}
        filtered = all_projections()
        for projection in filtered:
            apply = projection.apply

            async def recording(connection, events, apply=apply, name=projection.name):
                sent.setdefault(name, set()).update(e.type for e in events)
                await apply(connection, events)

            projection.apply = recording
        await ProjectionRunner(pool, filtered, batch_size=3).catch_up()
        assert not any(t in NOISE_TYPES for types in sent.values() for t in types), sent
        positions = await pool.fetch("SELECT name, position FROM projection_positions")
        assert {r["name"]: r["position"] for r in positions} == {p.name: head for p in filtered}
        by_spans = await snapshot(pool)

        for table in ["projection_positions", *READ_MODELS]:
            await pool.execute(f"DELETE FROM {table}")  # the same log, read again from 0
        every = [reading_everything(p) for p in all_projections()]
        await ProjectionRunner(pool, every, batch_size=3).catch_up()
        assert by_spans == await snapshot(pool)

    await loop.run_in_executor(None, run)

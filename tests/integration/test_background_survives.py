"""Background work survives database faults, on a real PostgreSQL: the supervisor restarts a loop
whatever it raised and logs each restart; the in-process projection runner, its sessions killed
again and again, gets back to the log's head by itself; a projection stopped on an event it
cannot apply stays there while the others go on; and /readyz says when reads would be stale."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from adapters.config import Settings
from adapters.http.app import init_app
from adapters.http.background import Backoff, supervise
from adapters.http.keys import RUNNER
from adapters.storage.postgres_store import PostgresEventStore, create_pool
from adapters.storage.read_models.journal import JournalProjection
from adapters.storage.read_models.reconciliation import ReconciliationProjection
from adapters.storage.read_models.runner import (
    ProjectionFailed,
    ProjectionRunner,
    ProjectionStatus,
)
from adapters.storage.read_models.subjects_view import SubjectsView
from tests.e2e.harness import serve
from tests.histories import HistoryWriter, seeded_history

TOKEN = "background-token"
FAST = {"background_restart_seconds_min": 0.01, "background_restart_seconds_max": 0.2}
BACKGROUND_LOG = "adapters.http.background"
ONE_PAYMENT = [("pay", "coinpay", "USDT", Decimal(10), 0, True, None, "")]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api": {"tokens": [{"name": "tests", "token": TOKEN, "scopes": ["admin"]}]},
        "expiry_sweep_seconds": 0,
        "balance_poll_seconds": 0,
        **FAST,
    }
    return Settings(**{**values, **overrides})


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(url, headers=headers) as reply:
        return reply.status, await reply.json(content_type=None)


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    """Waits until `check()` says yes; `seconds` only turns a hang into a failure."""
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


def restarts(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "background", None) == name]


class ExplodesOnSettle(JournalProjection):
    """The journal, unable to post a settlement: a data problem, not a fault."""

    async def apply(self, connection, events):
        if any(event.type == "Payment.Settled" for event in events):
            raise RuntimeError("cannot post a settlement")
        await super().apply(connection, events)


async def a_settled_payment(writer: HistoryWriter) -> None:
    await writer.write(ONE_PAYMENT)
    await writer.write([("deposit", "coinpay", "USDT", Decimal(10), 1, True, None, "")])
    await writer.write([("settle", "coinpay", "USDT", Decimal(10), 0, True, None, "")])


async def settled_position(store: PostgresEventStore, writer: HistoryWriter) -> int:
    events = await store.read_stream(str(writer.payments[0]))
    (settled,) = [e for e in events if e.type == "Payment.Settled"]
    return settled.position


# ---------------------------------------------------------------- the supervisor


def test_the_pause_doubles_from_the_first_up_to_the_cap_drawn_from_the_upper_half():
    backoff = Backoff(first_seconds=0.1, max_seconds=5.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    for attempt, ceiling in enumerate(ceilings, start=1):
        pauses = [backoff.seconds(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= pause <= ceiling for pause in pauses), (attempt, pauses)
        assert len(set(pauses)) > 1, "no jitter"
    assert 5.0 >= backoff.seconds(10_000)  # no overflow however long an outage lasts


async def test_the_supervisor_restarts_a_loop_whatever_it_raises_and_logs_each_restart(caplog):
    caplog.set_level(logging.INFO, logger=BACKGROUND_LOG)
    runs = 0
    fifth_run = asyncio.Event()

    async def flaky(healthy):
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ConnectionResetError(f"connection lost #{runs}")
        healthy()  # a pass that went through: the count starts again
        if runs == 4:
            raise RuntimeError("a bug, after a good pass")
        fifth_run.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("flaky loop", flaky, Backoff(0.001, 0.004)))
    async with asyncio.timeout(5):
        await fifth_run.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    logged = restarts(caplog, "flaky loop")
    assert [1, 2, 3, 1] == [r.attempt for r in logged]
    assert ["connection lost #1", "connection lost #2", "connection lost #3"] == [
        str(r.exc_info[1]) for r in logged[:3]
    ]
    assert "a bug, after a good pass" in logged[3].getMessage()
    assert all("restart attempt" in r.getMessage() for r in logged)
    assert all(0.0005 <= r.pause_seconds <= 0.004 for r in logged)
    said = [r.getMessage() for r in caplog.records]
    assert any("flaky loop is running again after 3 restarts" in line for line in said)


async def test_cancelling_the_supervisor_stops_it_at_once_even_in_a_long_pause():
    async def failing(healthy):
        raise ConnectionRefusedError("the database is down")

    task = asyncio.create_task(supervise("down", failing, Backoff(60, 60)))
    await asyncio.sleep(0.05)  # now in its minute-long pause
    task.cancel()
    async with asyncio.timeout(1):  # far below the pause: cancellation did not wait for it
        with pytest.raises(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------- the projection runner


async def kill_sessions_until(pool, application_name: str, stop: asyncio.Event) -> int:
    """Terminates every session named `application_name` every few milliseconds; returns how
    many it terminated. Only those: the shared server has other people's sessions."""
    killed = 0
    while not stop.is_set():
        killed += await pool.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            application_name,
        )
        await asyncio.sleep(0.03)
    return killed


async def test_the_projections_catch_up_by_themselves_after_their_sessions_are_killed_repeatedly(
    database_url, schema, pool, store, caplog
):
    caplog.set_level(logging.INFO, logger=BACKGROUND_LOG)
    application_name = f"survives-{schema}"
    # The app gets its own named pool, so the kills hit only its sessions; the test writes
    # through the fixture's pool, which nobody kills, so events keep arriving meanwhile.
    app_pool = await create_pool(
        database_url, schema=schema, min_size=1, max_size=10, application_name=application_name
    )
    try:
        app = init_app(
            settings(expiry_sweep_seconds=0.05),
            store=PostgresEventStore(app_pool),
            adapters={},
        )
        async with serve(app) as url, aiohttp.ClientSession() as http:
            writer = HistoryWriter(store)
            stop = asyncio.Event()
            killer = asyncio.create_task(kill_sessions_until(pool, application_name, stop))
            answers: set[int] = set()
            clock = asyncio.get_running_loop()
            storm_ends = clock.time() + 2.5
            seed = 0
            while clock.time() < storm_ends:
                await writer.write(seeded_history(400 + seed, length=10))
                seed += 1
                answers.add((await get(http, f"{url}/readyz"))[0])
            stop.set()
            killed = await killer
            head = (await store.head()).position

            positions: dict[str, int] = {}

            async def ready_at_head() -> bool:
                status, ready = await get(http, f"{url}/readyz")
                positions.update({p["name"]: p["position"] for p in ready["projections"]})
                return 200 == status and min(positions.values()) >= head

            # Nothing is restarted and nobody calls catch_up: the service gets there alone
            # (past `head`, even: the sweeper's expiries append more).
            await eventually(ready_at_head, seconds=20)
            running = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    finally:
        await app_pool.close()

    assert killed > 20, "the kills did not land: a weak test"
    assert answers <= {200, 503}, answers  # never a 500 while the database drops sessions
    assert restarts(caplog, "projection runner"), "the runner was never interrupted"
    assert {"projection runner", "clock sweeper"} <= running
    assert {"journal", "reconciliation", "subjects"} == set(positions)


async def test_the_runner_listens_again_on_a_new_connection_after_its_listener_is_killed(
    database_url, schema, pool, store, caplog
):
    caplog.set_level(logging.INFO, logger=BACKGROUND_LOG)
    application_name = f"listener-{schema}"
    runner_pool = await create_pool(
        database_url, schema=schema, min_size=1, max_size=4, application_name=application_name
    )
    # Polls an hour apart: only a notification on a live LISTEN can wake it in this test.
    runner = ProjectionRunner(runner_pool, [SubjectsView()], poll_seconds=3600)
    supervised = asyncio.create_task(
        supervise("projection runner", runner.run_forever, Backoff(0.01, 0.05))
    )
    writer = HistoryWriter(store)

    async def projected() -> bool:
        return (await runner.status())[0].position == (await store.head()).position

    async def back_running() -> bool:
        return any("running again" in r.getMessage() for r in caplog.records)

    try:
        await writer.write(ONE_PAYMENT)
        await eventually(projected)
        killed = await pool.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND query ILIKE 'LISTEN%'",
            application_name,
        )
        await eventually(back_running)
        await writer.write(ONE_PAYMENT)
        await eventually(projected)
    finally:
        supervised.cancel()
        with pytest.raises(asyncio.CancelledError):
            await supervised
        await runner_pool.close()

    assert 1 == killed
    (restart,) = restarts(caplog, "projection runner")
    assert "ListenerLost" in restart.getMessage()


async def test_a_projection_stopped_on_an_event_it_cannot_apply_stays_there_while_the_others_go_on(
    pool, store, caplog
):
    caplog.set_level(logging.INFO, logger=BACKGROUND_LOG)
    writer = HistoryWriter(store)
    await a_settled_payment(writer)
    settled = await settled_position(store, writer)
    runner = ProjectionRunner(
        pool, [ExplodesOnSettle(), SubjectsView(), ReconciliationProjection()], poll_seconds=0.05
    )
    supervised = asyncio.create_task(supervise("projection runner", runner.run_forever, Backoff()))
    try:
        await writer.write(seeded_history(500, length=20))  # more after the failing event
        head = (await store.head()).position
        statuses: dict[str, ProjectionStatus] = {}

        async def the_others_at_head() -> bool:
            statuses.update({s.name: s for s in await runner.status()})
            return head == statuses["subjects"].position == statuses["reconciliation"].position

        await eventually(the_others_at_head)
    finally:
        supervised.cancel()
        with pytest.raises(asyncio.CancelledError):
            await supervised

    journal = statuses["journal"]
    assert (settled - 1, settled) == (journal.position, journal.failed_position)
    assert "Payment.Settled" in journal.failure
    assert [] == restarts(caplog, "projection runner")  # a data problem is not a fault


# ---------------------------------------------------------------- /readyz


@pytest.mark.parametrize(
    ("bound", "history"),
    [
        ({"readiness_lag_events_max": 5}, seeded_history(600, length=20)),
        ({"readiness_lag_seconds_max": 0.2}, ONE_PAYMENT),
    ],
    ids=["events", "seconds"],
)
async def test_readyz_is_503_while_the_projections_lag_beyond_the_bound_and_200_after(
    store, bound, history
):
    app = init_app(settings(projections_worker="off", **bound), store=store, adapters={})
    async with serve(app) as url, aiohttp.ClientSession() as http:
        assert 200 == (await get(http, f"{url}/readyz"))[0]
        await HistoryWriter(store).write(history)
        if "readiness_lag_seconds_max" in bound:
            await asyncio.sleep(0.3)  # the oldest event not yet projected is now that old
        status, lagging = await get(http, f"{url}/readyz")
        await app[RUNNER].catch_up()
        ready_status, ready = await get(http, f"{url}/readyz")

    assert 503 == status, lagging
    assert ["journal", "reconciliation", "subjects"] == lagging["lagging"]
    assert [] == lagging["stopped"]
    if "readiness_lag_seconds_max" in bound:
        assert all(p["lag_seconds"] >= 0.3 for p in lagging["projections"]), lagging
        assert all(p["lag_events"] < 10_000 for p in lagging["projections"]), lagging
    else:
        assert all(p["lag_events"] > 5 for p in lagging["projections"]), lagging
    assert 200 == ready_status, ready
    assert "ready" == ready["status"]
    assert all((0, 0) == (p["lag_events"], p["lag_seconds"]) for p in ready["projections"])


async def test_readyz_and_the_reads_of_a_stopped_projection_are_503_until_it_goes_on(pool, store):
    writer = HistoryWriter(store)
    await a_settled_payment(writer)
    settled = await settled_position(store, writer)
    with pytest.raises(ProjectionFailed):
        await ProjectionRunner(pool, [ExplodesOnSettle()]).catch_up()
    # A wait this long would show: a stopped projection must refuse at once.
    app = init_app(
        settings(projections_worker="off", read_your_writes_wait_seconds_max=30),
        store=store,
        adapters={},
    )
    async with serve(app) as url, aiohttp.ClientSession() as http:
        status, stopped = await get(http, f"{url}/readyz")
        async with asyncio.timeout(5):
            balances_status, refused = await get(http, f"{url}/v1/balances")
        # The lists read another projection, which the request brings up itself.
        payments_status, payments = await get(http, f"{url}/v1/payments")
        await app[RUNNER].catch_up()  # the journal as it should be: the event goes through
        ready_status, ready = await get(http, f"{url}/readyz")
        after_status, _ = await get(http, f"{url}/v1/balances")

    assert 503 == status, stopped
    assert ["journal"] == stopped["stopped"]
    (journal,) = [p for p in stopped["projections"] if p["name"] == "journal"]
    assert settled == journal["failed_position"]
    assert 503 == balances_status, refused
    assert refused["type"].endswith("projection-stopped")
    assert [{"name": "journal", "partition": 0, "failed_position": settled}] == refused[
        "projections"
    ]
    assert 200 == payments_status, payments
    assert [str(writer.payments[0])] == [p["payment_id"] for p in payments["items"]]
    assert (200, 200) == (ready_status, after_status), ready

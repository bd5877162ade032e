"""`ledger serve` killed (SIGKILL) while signed deliveries are in flight, then started again.

The service runs as a real process from a configuration file the test writes (its schema of the
machine's PostgreSQL, the sandboxes' provider tables). Payments are created through it and their
providers' scenarios run; the signed deliveries are captured and then fired at the service at
once, with copies among them (redeliveries), from several providers; the process is killed when
some of them have been answered. After a restart on the same port, every delivery that got no
2xx is sent again until it does, as a provider redelivers (the sandboxes never retry). Then:

- every delivery ever answered 2xx is in its payment's stream exactly once, verified, after the
  applier has caught up (a read of the payment waits for it);
- each payment received the sum of its distinct deposits, however often each came;
- the log's hash chain verifies (`ledger audit verify`);
- the journal and balances equal a clean rebuild from the log, row for row.

The long variant is bench/crash_mid_load.py (many rounds, larger loads).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from adapters.storage.postgres_store import PostgresEventStore
from tests.e2e.load_kit import (
    Planned,
    Sender,
    Service,
    Tally,
    World,
    assert_consistent,
    assert_rebuild_matches,
    ledger_command,
    load_of,
    plan,
    schema_url,
    service,
    world,
)
from tests.e2e.webhook_kit import Captured


async def fire_and_kill(
    running: Service, sender: Sender, load: list[Captured], kill_after: int, stagger: float
) -> list[int | None]:
    """Sends every delivery of `load` at once (each `stagger` seconds after the one before, so
    some are still to come), and SIGKILLs the service once `kill_after` are answered 2xx.
    Returns each delivery's answer (None: no answer)."""

    enough = asyncio.Event()  # `kill_after` answered 2xx, or every delivery answered
    answered = 0

    async def one(number: int, delivery: Captured) -> int | None:
        nonlocal answered
        await asyncio.sleep(number * stagger)
        status = await sender.post(delivery)
        answered += 1
        if sender.tally.acknowledged >= kill_after or answered == len(load):
            enough.set()
        return status

    sending = [asyncio.create_task(one(n, d)) for n, d in enumerate(load)]
    async with asyncio.timeout(30):
        await enough.wait()
    await running.kill()
    return list(await asyncio.gather(*sending))


@dataclass
class Round:
    """What one crash round saw, for the test's assertions and the bench's figures."""

    tally: Tally
    acknowledged_before_kill: int
    unanswered_at_kill: int
    recorded_but_unanswered_at_kill: int  # durable when the process died, its answer lost
    restart_seconds: float
    redelivery_seconds: float
    checked: dict[str, int]


async def crash_mid_load(
    where: World,
    store: PostgresEventStore,
    database_url: str,
    directory: Path,
    *,
    payments: int,
    size: int,
    kill_after: int,
    seed: int,
    stagger: float = 0.0,
) -> Round:
    """One round: payments planned through a live service, `size` deliveries fired and the
    service killed mid-flight, restarted, everything unacknowledged redelivered, then checked."""
    tally = Tally()
    async with aiohttp.ClientSession() as http:
        async with service(where, database_url, directory, http) as running:
            planned: list[Planned] = await plan(http, running.url, where, payments, seed)
            load = load_of(planned, size, seed)
            sender = Sender(http, running.url, tally)
            recorded_before = await receipts_recorded(store)
            answers = await fire_and_kill(running, sender, load, kill_after, stagger)
            acknowledged_before_kill = tally.acknowledged
            unanswered = sum(1 for a in answers if a is None)
            recorded = await receipts_recorded(store) - recorded_before
            recorded_unanswered = recorded - acknowledged_before_kill
            restart_seconds = await running.start(http)
            began = time.monotonic()
            await asyncio.gather(*(
                sender.until_acknowledged(delivery, first=answer)
                for delivery, answer in zip(load, answers, strict=True)
            ))  # fmt: skip
            redelivery_seconds = time.monotonic() - began
            checked = await assert_consistent(
                http, running.url, store, planned, sender.acknowledged
            )
            await running.stop()
        verified = await ledger_command(running.config, "audit", "verify")
        assert "hash chain verified" in verified, verified

        async def rebuild() -> str:
            return await ledger_command(running.config, "projections", "rebuild", "journal")

        checked["balance rows"] = await assert_rebuild_matches(store.pool, rebuild)
    return Round(
        tally, acknowledged_before_kill, unanswered, recorded_unanswered,
        restart_seconds, redelivery_seconds, checked,
    )  # fmt: skip


async def receipts_recorded(store: PostgresEventStore) -> int:
    """Deliveries recorded (received or duplicate), each one request the service made durable."""
    return int(
        await store.pool.fetchval(
            "SELECT count(*) FROM events"
            " WHERE type IN ('Delivery.Received', 'Delivery.Duplicate')"
        )
    )


async def test_a_service_killed_mid_load_loses_no_acknowledged_delivery_and_applies_each_once(
    database_url: str, schema: str, store: PostgresEventStore, tmp_path: Path
) -> None:
    async with world() as where:
        done = await crash_mid_load(
            where,
            store,
            schema_url(database_url, schema),
            tmp_path,
            payments=10,
            size=32,
            kill_after=8,
            seed=20261206,
        )
    tally = done.tally
    print(f"\ncrash mid-load: {done}")
    assert done.unanswered_at_kill > 0, "the kill landed after the load: a weak test"
    assert done.acknowledged_before_kill >= 8
    assert tally.retried >= done.unanswered_at_kill
    assert {} == tally.server_errors
    assert 32 <= tally.acknowledged
    assert tally.duplicates > 0

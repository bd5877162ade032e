"""Event store throughput beside a raw-asyncpg baseline measured in the same run.

    python bench/event_store.py [--dsn DSN] [--events N] [--rounds R] ...

Creates a fresh schema, runs the migrations there, adds a plain `baseline` table, ANALYZEs after
loading (autovacuum is off on the CI server), measures, and
drops the schema at the end. Every figure is printed next to its baseline and the ratio
ours/baseline; only those ratios are meant to be compared (this machine kind is noisy and swings
up to 3x between runs). Writes alternate ours and the baseline in ABBA rounds, reads alternate and
keep the median, so that drift in the machine falls on both sides alike.

Figures:
  1. sequential appends, one event per transaction   vs  one autocommit INSERT per row
  2. 16 concurrent writers, own stream each, 1/txn   vs  16 connections doing single-row INSERTs
  3. appends of 100 events                           vs  executemany of 100 rows per transaction
  4. read_stream of one long stream / read_log       vs  SELECT * FROM baseline ORDER BY id
     (4c: read_log vs the same rows of `events` fetched raw in one query)
  5. AggregateRepository.load of a ~200-event Payment vs  the same 200 rows fetched raw
     (5: through the aggregate cache; 5b: with no cache, a full replay)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import version
from time import perf_counter
from typing import TYPE_CHECKING, Any

import asyncpg

from adapters.storage.aggregate_cache import AggregateCache
from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import PostgresEventStore, create_pool
from adapters.storage.repository import AggregateRepository
from ledger.commands import DepositReport
from ledger.money import Money
from ledger.payment import Payment
from ledger.ports import NewEvent

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
WRITERS = 16
BATCH = 100
EVENT_TYPE = "Bench.Happened"
BASELINE_INSERT = "INSERT INTO baseline (stream_id, version, payload) VALUES ($1, $2, $3)"


def default_dsn() -> str:
    return (
        os.environ.get("LEDGER_BENCH_DATABASE_URL")
        or os.environ.get("LEDGER_TEST_DATABASE_URL")
        or DEFAULT_DSN
    )


def make_payload(size: int = 1024) -> bytes:
    """Canonical-looking JSON of exactly `size` bytes; both sides store these same bytes."""
    document: dict[str, Any] = {"amount": "12.345600", "currency": "USDT", "note": ""}
    bare = len(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    document["note"] = "x" * max(0, size - bare)
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    unit: str
    ours: float  # per second
    baseline: float  # per second
    ours_what: str
    baseline_what: str

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` near-equal pieces."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def abba(
    ours: Callable[[int], Awaitable[None]],
    baseline: Callable[[int], Awaitable[None]],
    total: int,
    rounds: int,
) -> tuple[float, float]:
    """Runs `total` units on each side in `rounds` alternating rounds (A B, B A, ...);
    returns (ours rate, baseline rate) in units per second."""
    spent = {"ours": 0.0, "baseline": 0.0}
    for number, count in enumerate(split(total, rounds)):
        sides = [("ours", ours), ("baseline", baseline)]
        if number % 2:
            sides.reverse()
        for name, run in sides:
            started = perf_counter()
            await run(count)
            spent[name] += perf_counter() - started
    return total / spent["ours"], total / spent["baseline"]


async def median_rates(
    ours: Callable[[], Awaitable[int]],
    baseline: Callable[[], Awaitable[int]],
    repeats: int,
) -> tuple[float, float]:
    """Each callable returns how many units it did; alternates sides, keeps the median rate."""
    rates: dict[str, list[float]] = {"ours": [], "baseline": []}
    for number in range(repeats):
        sides = [("ours", ours), ("baseline", baseline)]
        if number % 2:
            sides.reverse()
        for name, run in sides:
            started = perf_counter()
            units = await run()
            rates[name].append(units / (perf_counter() - started))
    return statistics.median(rates["ours"]), statistics.median(rates["baseline"])


class Bench:
    def __init__(
        self,
        store: PostgresEventStore,
        ours_pool: asyncpg.Pool,
        base_pool: asyncpg.Pool,
        payload: bytes,
    ) -> None:
        self.store = store
        self.ours_pool = ours_pool
        self.base_pool = base_pool
        self.payload = payload
        self.versions: dict[str, int] = {}  # ours, per stream
        self.base_versions: dict[str, int] = {}  # baseline, per stream (only for its columns)

    # ---------------------------------------------------------------- writing, ours

    async def append_one(self, stream_id: str) -> None:
        current = self.versions.get(stream_id, 0)
        await self.store.append(
            [NewEvent(stream_id, current + 1, EVENT_TYPE, self.payload)],
            expected_versions={stream_id: current},
        )
        self.versions[stream_id] = current + 1

    async def append_batch(self, stream_id: str, size: int) -> None:
        current = self.versions.get(stream_id, 0)
        events = [
            NewEvent(stream_id, current + offset, EVENT_TYPE, self.payload)
            for offset in range(1, size + 1)
        ]
        await self.store.append(events, expected_versions={stream_id: current})
        self.versions[stream_id] = current + size

    # ---------------------------------------------------------------- writing, baseline

    def _base_next(self, stream_id: str) -> int:
        self.base_versions[stream_id] = self.base_versions.get(stream_id, 0) + 1
        return self.base_versions[stream_id]

    async def insert_one(self, stream_id: str) -> None:
        await self.base_pool.execute(
            BASELINE_INSERT, stream_id, self._base_next(stream_id), self.payload
        )

    async def insert_batch(self, stream_id: str, size: int) -> None:
        rows = [(stream_id, self._base_next(stream_id), self.payload) for _ in range(size)]
        async with self.base_pool.acquire() as connection, connection.transaction():
            await connection.executemany(BASELINE_INSERT, rows)

    # ---------------------------------------------------------------- figures

    async def sequential(self, total: int, rounds: int) -> Figure:
        async def ours(count: int) -> None:
            for _ in range(count):
                await self.append_one("seq")

        async def baseline(count: int) -> None:
            for _ in range(count):
                await self.insert_one("seq")

        mine, theirs = await abba(ours, baseline, total, rounds)
        return Figure(
            f"1. sequential append, 1 event/txn ({total:,} events)",
            "events/s",
            mine,
            theirs,
            "append([1 event])",
            "1 INSERT, autocommit",
        )

    async def concurrent(self, total: int, rounds: int) -> Figure:
        async def many(count: int, one: Callable[[str], Awaitable[None]]) -> None:
            async def writer(number: int, share: int) -> None:
                for _ in range(share):
                    await one(f"conc-{number}")

            await asyncio.gather(
                *(writer(n, share) for n, share in enumerate(split(count, WRITERS)))
            )

        async def ours(count: int) -> None:
            await many(count, self.append_one)

        async def baseline(count: int) -> None:
            await many(count, self.insert_one)

        mine, theirs = await abba(ours, baseline, total, rounds)
        return Figure(
            f"2. {WRITERS} concurrent writers, 1 event/txn ({total:,} events)",
            "events/s",
            mine,
            theirs,
            f"{WRITERS} tasks, own stream each",
            f"{WRITERS} connections, 1 INSERT each",
        )

    async def batched(self, total: int, rounds: int, stream_length: int) -> Figure:
        """Fills streams `batch-0`, `batch-1`, ... of `stream_length` events each, so that
        `batch-0` is the long stream read back by the replay figure."""
        cursor = {"ours": 0, "baseline": 0}

        def next_stream(side: str, size: int) -> str:
            stream = f"batch-{cursor[side] // stream_length}"
            cursor[side] += size
            return stream

        async def ours(count: int) -> None:
            for size in split_batches(count):
                await self.append_batch(next_stream("ours", size), size)

        async def baseline(count: int) -> None:
            for size in split_batches(count):
                await self.insert_batch(next_stream("baseline", size), size)

        mine, theirs = await abba(ours, baseline, total, rounds)
        return Figure(
            f"3. batched append, {BATCH} events/txn ({total:,} events)",
            "events/s",
            mine,
            theirs,
            f"append([{BATCH} events])",
            f"executemany of {BATCH} rows in a txn",
        )

    async def stream_replay(self, stream_id: str, repeats: int) -> Figure:
        length = self.versions[stream_id]

        async def ours() -> int:
            events = await self.store.read_stream(stream_id)
            assert len(events) == length, (len(events), length)
            return len(events)

        async def baseline() -> int:
            rows = await self.base_pool.fetch("SELECT * FROM baseline ORDER BY id LIMIT $1", length)
            return len(rows)

        mine, theirs = await median_rates(ours, baseline, repeats)
        return Figure(
            f"4a. replay one stream ({length:,} events)",
            "events/s",
            mine,
            theirs,
            "read_stream",
            f"SELECT * FROM baseline ORDER BY id LIMIT {length:,}",
        )

    async def log_replay(self, repeats: int) -> Figure:
        head = (await self.store.head(0)).position
        base_rows = await self.base_pool.fetchval("SELECT count(*) FROM baseline")

        async def ours() -> int:
            seen = 0
            async for batch in self.store.read_log(0):
                seen += len(batch)
            assert seen == head, (seen, head)
            return seen

        async def baseline() -> int:
            rows = await self.base_pool.fetch("SELECT * FROM baseline ORDER BY id")
            return len(rows)

        mine, theirs = await median_rates(ours, baseline, repeats)
        return Figure(
            f"4b. replay global log ({head:,} events; baseline {base_rows:,} rows)",
            "events/s",
            mine,
            theirs,
            "read_log(0), pages of 5,000, next page prefetched",
            "SELECT * FROM baseline ORDER BY id",
        )

    async def log_replay_same_rows(self, repeats: int) -> Figure:
        """read_log against one raw fetch of the very same rows (the events table, every column,
        on a plain asyncpg pool: jsonb stays text, nothing is built from the records)."""
        head = (await self.store.head(0)).position

        async def ours() -> int:
            seen = 0
            async for batch in self.store.read_log(0):
                seen += len(batch)
            return seen

        async def baseline() -> int:
            rows = await self.base_pool.fetch("SELECT * FROM events ORDER BY partition, position")
            return len(rows)

        mine, theirs = await median_rates(ours, baseline, repeats)
        return Figure(
            f"4c. replay global log ({head:,} events), same rows raw",
            "events/s",
            mine,
            theirs,
            "read_log(0) as in 4b",
            "SELECT * FROM events ORDER BY partition, position",
        )

    async def aggregate_replay(self, events: int, loads: int, *, cached: bool = True) -> Figure:
        """Loads of one Payment through the repository: with its cache (each load asks the store
        for the events after the cached version: none), or with none (a full replay each time)."""
        repository = AggregateRepository(
            self.store, cache=AggregateCache() if cached else AggregateCache(capacity=0)
        )
        payment = build_payment(events)
        await repository.save(payment)
        stream_id = str(payment.id)
        loaded = await repository.load(Payment, payment.id)
        assert loaded is not None
        assert loaded.version == events, (loaded.version, events)

        async def ours() -> int:
            for _ in range(loads):
                await repository.load(Payment, payment.id)
            return loads

        async def baseline() -> int:
            for _ in range(loads):
                rows = await self.base_pool.fetch(
                    "SELECT * FROM events WHERE stream_id = $1 ORDER BY version", stream_id
                )
                assert len(rows) == events
            return loads

        mine, theirs = await median_rates(ours, baseline, 3)
        return Figure(
            f"5{'' if cached else 'b'}. aggregate load, Payment of {events} events"
            f"{'' if cached else ', no cache'}",
            "aggregates/s",
            mine,
            theirs,
            "AggregateRepository.load" + ("" if cached else " (full replay)"),
            "same rows fetched raw (asyncpg)",
        )


def split_batches(count: int) -> list[int]:
    return [min(BATCH, count - start) for start in range(0, count, BATCH)]


def build_payment(events: int) -> Payment:
    """A Payment whose stream holds `events` events: creation, then webhook deliveries and
    unconfirmed deposits by turns (the shape a busy payment's history has)."""
    now = datetime.now(UTC)
    payment = Payment.create(
        provider="bench",
        provider_ref=f"ref-{uuid.uuid4().hex}",
        order_id=f"order-{uuid.uuid4().hex}",
        expected=Money.of("1000", "USDT"),
        price=Money.of("1000", "USD"),
        expires_at=None,
    )
    for number in range(1, events):
        if number % 2:
            payment.record_delivery(
                {
                    "dedupe_key": f"delivery-{number}",
                    "verified": True,
                    "headers": {"content-type": "application/json", "x-signature": "ab" * 32},
                    "body": json.dumps({"id": number, "status": "confirming", "pad": "p" * 300}),
                }
            )
        else:
            payment.report_deposit(
                DepositReport(
                    deposit_id=f"deposit-{number}",
                    amount=Decimal("0.5"),
                    currency="USDT",
                    confirmed=False,
                    tx_hash=f"0x{number:064x}",
                    observed_at=now,
                ),
                received_at=now,
                verified=True,
            )
    assert payment.version == events, (payment.version, events)
    return payment


async def warm_up(bench: Bench) -> None:
    """Prepares statements on every pooled connection (both sides) outside the clock."""

    async def ours() -> None:
        for _ in range(3):
            await bench.append_one(f"warm-{uuid.uuid4().hex}")
        await bench.append_batch(f"warm-{uuid.uuid4().hex}", BATCH)
        await bench.store.read_stream("warm")

    async def baseline() -> None:
        for _ in range(3):
            await bench.insert_one("warm")
        await bench.insert_batch("warm", BATCH)

    await asyncio.gather(*(ours() for _ in range(WRITERS)), *(baseline() for _ in range(WRITERS)))


async def server_facts(connection: asyncpg.Connection) -> dict[str, str]:
    facts = {"version": str(await connection.fetchval("SELECT version()"))}
    for setting in ("fsync", "synchronous_commit", "shared_buffers"):
        facts[setting] = str(await connection.fetchval(f"SHOW {setting}"))
    return facts


def table(figures: list[Figure]) -> str:
    lines = [
        "| Figure | Ours | Baseline | Ratio ours/baseline | Ours is | Baseline is |",
        "|---|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {f.name} | {f.ours:,.0f} {f.unit} | {f.baseline:,.0f} {f.unit} | {f.ratio:.2f} "
        f"| {f.ours_what} | {f.baseline_what} |"
        for f in figures
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace, loop_name: str) -> None:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(args.dsn)
    facts = await server_facts(admin)
    print(f"PostgreSQL: {facts.pop('version')}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    print(f"event loop: {loop_name}; schema: {schema}; cpus: {os.cpu_count()}")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    ours_pool = base_pool = None
    bench: Bench | None = None
    try:
        await admin.execute(f'SET search_path TO "{schema}"')
        applied = await migrate(admin)
        print(f"migrations applied: {', '.join(applied)}")
        await admin.execute(
            "CREATE TABLE baseline (id bigserial PRIMARY KEY, stream_id text, version int,"
            " payload bytea)"
        )
        size = WRITERS  # all of them warmed up by warm_up
        ours_pool = await create_pool(args.dsn, schema=schema, min_size=size, max_size=size)
        base_pool = await asyncpg.create_pool(
            args.dsn, min_size=size, max_size=size, server_settings={"search_path": schema}
        )
        assert base_pool is not None
        bench = Bench(PostgresEventStore(ours_pool), ours_pool, base_pool, make_payload())
        print(f"payload: {len(bench.payload)} bytes per event")
        await warm_up(bench)
        # autovacuum is off on the CI server: without statistics the planner may scan.
        await admin.execute("ANALYZE")

        figures: list[Figure] = []

        async def measure(coroutine: Coroutine[Any, Any, Figure]) -> None:
            started = perf_counter()
            figure = await coroutine
            figures.append(figure)
            print(
                f"{figure.name}: ours {figure.ours:,.0f} {figure.unit}, baseline "
                f"{figure.baseline:,.0f} {figure.unit}, ratio {figure.ratio:.2f} "
                f"({perf_counter() - started:.1f} s)",
                flush=True,
            )

        await measure(bench.sequential(args.events, args.rounds))
        await measure(bench.concurrent(args.concurrent_events, args.rounds))
        await measure(bench.batched(args.batched_events, args.rounds, args.stream_events))
        await admin.execute("ANALYZE")  # the tables the replays read were just loaded
        for figure in (
            bench.stream_replay("batch-0", args.replays),
            bench.log_replay(args.replays),
            bench.log_replay_same_rows(args.replays),
            bench.aggregate_replay(args.payment_events, args.loads),
            bench.aggregate_replay(args.payment_events, args.loads, cached=False),
        ):
            await measure(figure)

        head = await bench.store.head(0)
        stored = await ours_pool.fetchval("SELECT count(*) FROM events")
        assert head.position == stored, ("the log has gaps", head.position, stored)

        print()
        print(table(figures))
    finally:
        if bench is not None and hasattr(bench.store, "close"):
            await bench.store.close()  # its writers' held connections
        for pool in (ours_pool, base_pool):
            if pool is not None:
                await pool.close()
        await admin.execute("RESET search_path")
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dsn", default=default_dsn(), help="default: %(default)s")
    parser.add_argument(
        "--events", type=int, default=2_000, help="sequential appends (default %(default)s)"
    )
    parser.add_argument("--concurrent-events", type=int, default=4_000, help="default %(default)s")
    parser.add_argument("--batched-events", type=int, default=20_000, help="default %(default)s")
    parser.add_argument(
        "--stream-events",
        type=int,
        default=10_000,
        help="length of the stream read back by read_stream (default %(default)s)",
    )
    parser.add_argument(
        "--payment-events", type=int, default=200, help="events in the Payment (default 200)"
    )
    parser.add_argument(
        "--loads", type=int, default=50, help="repository.load calls per repeat (default 50)"
    )
    parser.add_argument(
        "--replays", type=int, default=5, help="repeats of each replay, median kept (default 5)"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="ABBA rounds per write figure (default 4)"
    )
    args = parser.parse_args(argv)
    for name in (
        "events",
        "concurrent_events",
        "batched_events",
        "stream_events",
        "payment_events",
        "loads",
        "replays",
        "rounds",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    # Whole batches in every round, and whole batches per stream, so that no batch is short or
    # straddles two streams.
    whole = BATCH * args.rounds
    args.batched_events = max(whole, args.batched_events - args.batched_events % whole)
    args.stream_events = min(args.stream_events, args.batched_events)
    args.stream_events = max(BATCH, args.stream_events - args.stream_events % BATCH)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        asyncio.run(run(args, "asyncio"))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(args, f"uvloop {version('uvloop')}"))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Audit export over HTTP (JSON Lines) and offline verify, each beside reading the same rows raw
with asyncpg in the same run.

    python -m bench.audit [--dsn DSN] [--events 1000000] [--page-size 1000] [--keep]

Works in a fresh schema of the database (--dsn, else LEDGER_BENCH_DATABASE_URL, else
LEDGER_TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/test), dropped at the end
unless --keep. The log is loaded in bulk inserts of rows chained by the store's own `_chain`, then
ANALYZEd (the local server runs without autovacuum). Figures, compared only within the run:

  raw      keyset pages of the same rows and columns with asyncpg on one connection
  export   GET /v1/audit/events?format=jsonl from the app on loopback, read to the end by curl
  verify   adapters.audit.offline.verify_export over the exported file (no database)

Targets (issue 11): export >= 100,000 events/s and >= 0.5 of raw; verify >= 100,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import uuid
from dataclasses import astuple
from pathlib import Path
from time import perf_counter

import asyncpg

from adapters.audit.offline import verify_export
from adapters.config import Settings
from adapters.http.app import init_app
from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import PostgresEventStore, chain_events, create_pool
from ledger.audit_files import read_rows
from ledger.hashchain import GENESIS_HASH
from ledger.ports import NewEvent, RecordedEvent
from tests.e2e.harness import free_port, serve

TOKEN = "bench-token"
LOAD_CHUNK = 20_000
COLUMNS = (
    "partition, position, stream_id, version, type, payload, metadata, recorded_at, prev_hash, hash"
)
RAW_PAGE = (
    f"SELECT {COLUMNS} FROM events WHERE partition = 0 AND position > $1 ORDER BY position LIMIT $2"
)


def chained(events: list[NewEvent], position: int, prev_hash: bytes) -> list[RecordedEvent]:
    """The events as the store records them: positions after `position`, linked by hash."""
    return chain_events(0, position, prev_hash, events)


INSERT = (
    f"INSERT INTO events ({COLUMNS}) SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[],"
    " $4::int[], $5::text[], $6::bytea[], $7::jsonb[], $8::timestamptz[], $9::bytea[],"
    " $10::bytea[])"
)


def default_dsn() -> str:
    return (
        os.environ.get("LEDGER_BENCH_DATABASE_URL")
        or os.environ.get("LEDGER_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )


def payload(n: int) -> bytes:
    document = {"amount": f"{n % 997}.{n % 100:02d}", "currency": "USDT", "deposit_id": f"d{n}"}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


async def load(pool: asyncpg.Pool, total: int) -> None:
    prev_hash, position = GENESIS_HASH, 0
    async with pool.acquire() as connection:
        while position < total:
            count = min(LOAD_CHUNK, total - position)
            events = [
                NewEvent(
                    f"bench-{(position + i) // 10}",
                    (position + i) % 10 + 1,
                    "Payment.DepositObserved",
                    payload(position + i),
                    {"topic": "ledger.payment:Payment.DepositObserved"},
                )
                for i in range(count)
            ]
            recorded = chained(events, position, prev_hash)
            await connection.execute(
                INSERT, *[list(column) for column in zip(*map(astuple, recorded), strict=True)]
            )
            prev_hash, position = recorded[-1].hash, recorded[-1].position
            print(f"\rloaded {position}/{total}", end="", flush=True)
        await connection.execute(
            "UPDATE log_heads SET position = $1, hash = $2 WHERE partition = 0", position, prev_hash
        )
        await connection.execute("ANALYZE events")
    print()


async def raw_read(pool: asyncpg.Pool, page_size: int) -> tuple[int, float]:
    started, count, after = perf_counter(), 0, 0
    async with pool.acquire() as connection, connection.transaction(isolation="repeatable_read"):
        while rows := await connection.fetch(RAW_PAGE, after, page_size):
            count += len(rows)
            after = rows[-1]["position"]
    return count, perf_counter() - started


async def http_export(url: str, output: Path) -> tuple[int, float]:
    """curl reads the export in its own process: a Python client in this process would take
    the server's CPU on a two-core machine and understate it."""
    started = perf_counter()
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail", "-o", str(output), "-H", f"Authorization: Bearer {TOKEN}",
        url + "/v1/audit/events?format=jsonl",
    )  # fmt: skip
    assert await process.wait() == 0, "curl failed"
    seconds = perf_counter() - started
    with output.open("rb") as file:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
    return lines, seconds


def offline_verify(path: Path) -> tuple[int, float]:
    started = perf_counter()
    with path.open(encoding="utf-8", newline="") as file:
        verified = verify_export(read_rows(file))
    return verified.rows, perf_counter() - started


def line(name: str, count: int, seconds: float, baseline: float | None = None) -> None:
    rate = count / seconds
    ratio = f"  ratio to raw {rate / baseline:.2f}" if baseline else ""
    print(f"{name:<8} {count:>9} events in {seconds:7.2f} s = {rate:>10,.0f} events/s{ratio}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=default_dsn())
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--keep", action="store_true")
    arguments = parser.parse_args()
    schema = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(arguments.dsn)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    pool = await create_pool(arguments.dsn, schema=schema, min_size=1, max_size=4)
    try:
        async with pool.acquire() as connection:
            await migrate(connection)
        await load(pool, arguments.events)
        settings = Settings(
            api={"tokens": [{"name": "bench", "token": TOKEN, "scopes": ["audit:export"]}]},
            data_dir=Path(tempfile.mkdtemp()),
            audit={"checkpoint_every_seconds": 0},
            projections_worker="off",
            expiry_sweep_seconds=0,
            balance_poll_seconds=0,
            recovery_seconds=0,
            provider_query_seconds=0,
        )
        app = init_app(settings, store=PostgresEventStore(pool), adapters={})
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        with tempfile.TemporaryDirectory() as folder:
            exported = Path(folder) / "export.jsonl"
            async with serve(app, free_port()) as url:
                raw_first = await raw_read(pool, arguments.page_size)
                export = await http_export(url, exported)
                raw_second = await raw_read(pool, arguments.page_size)
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            verify = offline_verify(exported)
            size_mb = exported.stat().st_size / 1e6
        # Raw read before and after the export: the baseline is their mean rate.
        raw_rate = (raw_first[0] + raw_second[0]) / (raw_first[1] + raw_second[1])
        print(f"events {arguments.events}, export file {size_mb:.0f} MB")
        line("raw", raw_first[0], raw_first[1])
        line("raw", raw_second[0], raw_second[1])
        line("export", *export, raw_rate)
        line("verify", *verify, raw_rate)
        print(f"peak RSS of this process (server + client): {rss_before} MB before the export,"
              f" {rss_after} MB after")  # fmt: skip
    finally:
        await pool.close()
        if not arguments.keep:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

"""The long variant of tests/e2e/test_crash_mid_load.py: `ledger serve` SIGKILLed mid-load, round
after round, on one schema that keeps growing.

    python bench/crash_mid_load.py [--dsn DSN] [--rounds 20] [--payments 10] [--deliveries 32]
                                   [--seed 1]

Each round starts `ledger serve` (a real process, from a configuration file) on the same schema,
creates `--payments` payments through it across the five providers, runs a random scenario of
each at its sandbox, fires `--deliveries` captured signed deliveries (every one once, then
copies) at once, SIGKILLs the process when a random number of them (1 to all but one) have been
answered 2xx, starts it again, redelivers everything that got no 2xx until it does, and checks
what the test checks (each acknowledged delivery recorded once, amounts, hash chain, journal
against a rebuild). Database: --dsn, else LEDGER_BENCH_DATABASE_URL, else
LEDGER_TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres; everything in a
fresh schema, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

# The tests' kit is not installed with the package: the repository root goes on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import PostgresEventStore, create_pool
from tests.e2e.load_kit import schema_url, world
from tests.e2e.test_crash_mid_load import Round, crash_mid_load


def database_url(given: str | None) -> str:
    return (
        given
        or os.environ.get("LEDGER_BENCH_DATABASE_URL")
        or os.environ.get("LEDGER_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


async def measure(args: argparse.Namespace) -> None:
    dsn = database_url(args.dsn)
    schema = f"bench_crash_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    chance = random.Random(args.seed)
    rounds: list[Round] = []
    began = time.monotonic()
    try:
        pool = await create_pool(dsn, schema=schema, min_size=1, max_size=8)
        async with pool.acquire() as connection:
            await migrate(connection)
        store = PostgresEventStore(pool)
        async with world() as where:
            for number in range(args.rounds):
                kill_after = chance.randint(1, args.deliveries - 1)
                with tempfile.TemporaryDirectory(prefix="ledger-crash-") as directory:
                    done = await crash_mid_load(
                        where, store, schema_url(dsn, schema), Path(directory),
                        payments=args.payments, size=args.deliveries,
                        kill_after=kill_after, seed=chance.randrange(2**32),
                    )  # fmt: skip
                rounds.append(done)
                report_round(number, kill_after, done)
        await pool.close()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
    report(rounds, time.monotonic() - began)


def report_round(number: int, kill_after: int, done: Round) -> None:
    tally = done.tally
    print(
        f"round {number + 1:>3}: killed after {done.acknowledged_before_kill:>2} acks"
        f" (asked {kill_after:>2}); unanswered {done.unanswered_at_kill:>2},"
        f" of which recorded {done.recorded_but_unanswered_at_kill};"
        f" sent {tally.sent}, retried {tally.retried}, duplicates {tally.duplicates};"
        f" restart {done.restart_seconds:.2f} s, redelivery {done.redelivery_seconds:.2f} s;"
        f" log {done.checked['events chained']} events",
        flush=True,
    )


def report(rounds: list[Round], seconds: float) -> None:
    def total(name: str) -> int:
        return sum(getattr(r.tally, name) for r in rounds)

    restarts = [r.restart_seconds for r in rounds]
    redeliveries = [r.redelivery_seconds for r in rounds]
    errors = sum(sum(r.tally.server_errors.values()) for r in rounds)
    print(f"\n{len(rounds)} rounds in {seconds:.0f} s, every check passed")
    print(f"  deliveries sent (attempts)          {total('sent')}")
    print(f"  acknowledged (2xx)                  {total('acknowledged')}")
    print(f"  retried (redeliveries)              {total('retried')}")
    print(f"  answered duplicate                  {total('duplicates')}")
    print(f"  unanswered at the kill              {sum(r.unanswered_at_kill for r in rounds)}")
    lost = sum(r.recorded_but_unanswered_at_kill for r in rounds)
    print(f"    of which recorded before the kill {lost} (acknowledged once on redelivery)")
    print(f"  5xx other than 503                  {errors}")
    print(
        f"  service restart to first answer     mean {statistics.mean(restarts):.2f} s,"
        f" max {max(restarts):.2f} s"
    )
    print(
        f"  redelivery until all acknowledged   mean {statistics.mean(redeliveries):.2f} s,"
        f" max {max(redeliveries):.2f} s"
    )
    distinct = sum(r.checked["acknowledged distinct"] for r in rounds)
    print(f"  distinct deliveries checked         {distinct}")
    print(f"  final log                           {rounds[-1].checked['events chained']} events")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL URL (default: see the module doc)")
    parser.add_argument("--rounds", type=int, default=20, help="kill and restart rounds (20)")
    parser.add_argument("--payments", type=int, default=10, help="payments per round (10)")
    parser.add_argument(
        "--deliveries", type=int, default=32, help="deliveries in flight per round (32)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(measure(parse_args(argv)))


if __name__ == "__main__":
    main()

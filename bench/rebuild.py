# ruff: noqa: E402
"""Rebuilding every projection: one after the other in one process (the CLI before issue 13)
against all three at once in worker processes (`ledger projections rebuild`), same run, same log,
alternated, each beside the read-the-log baseline measured around it.

    python bench/rebuild.py [--dsn DSN] [--events 100000] [--rounds 2] [--jobs N] [--keep|--reuse]

The log is made by bench/projection_catchup.py's generator (its histories, mix and interleaving),
in the schema `bench_catchup` of --dsn (default
postgresql://postgres@127.0.0.1:5432/ledger_bench_rebuild; a ledger_bench* database is dropped and
made afresh unless --reuse finds a log there, and dropped at the end unless --keep or --reuse).
The read models are caught up once before the rounds, so every rebuild deletes a full read model
as an operator's would. Each round runs A B B A (A: sequential, B: parallel); between any two
timings the log is read once more (fetch_batch over the whole log on one connection, doing nothing
with the events), and each rebuild's ratio is against the mean of the two reads around it.
Rates are events of the log per second of wall time for all three projections rebuilt.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path
from time import perf_counter

# Run as a script: the repository, not bench/, goes first on the path (see projection_catchup).
HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
sys.path[:] = [
    str(REPOSITORY),
    *(p for p in sys.path if Path(p or ".").resolve() not in {HERE, REPOSITORY}),
]

import asyncpg

from adapters.storage.postgres_store import create_pool
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.rebuild import RebuildJob, default_workers, rebuild_in_parallel
from adapters.storage.read_models.runner import ProjectionRunner
from bench.projection_catchup import (
    CATCHUP_SCHEMA,
    Catchup,
    Target,
    clean_up,
    now_load,
    prepare,
    rate,
    server_facts,
    target_of,
    workers,
)
from bench.projection_catchup import parse_args as log_args

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/ledger_bench_rebuild"
# Another bench's kept log: never dropped nor written by this one.
FORBIDDEN = {"ledger_bench_readpath", "test"}
BATCH_SIZE = 2000  # the CLI's


async def sequential(pool: asyncpg.Pool, names: list[str]) -> tuple[float, str]:
    """Wall seconds for all, and each projection's seconds."""
    runner = ProjectionRunner(pool, all_projections(), batch_size=BATCH_SIZE)
    started = perf_counter()
    each = []
    for name in names:
        mark = perf_counter()
        await runner.rebuild(name)
        each.append(f"{name} {perf_counter() - mark:.1f}")
    return perf_counter() - started, ", ".join(each)


async def parallel(dsn: str, names: list[str], jobs: int) -> tuple[float, str]:
    work = [RebuildJob(name, dsn, CATCHUP_SCHEMA, batch_size=BATCH_SIZE) for name in names]
    started = perf_counter()
    outcomes = await rebuild_in_parallel(work, workers=jobs)
    elapsed = perf_counter() - started
    failed = [f"{o.name}: {o.failure}" for o in outcomes if not o.committed]
    assert not failed, failed
    # A worker's seconds start once its interpreter is up (the spawn is not in them).
    return elapsed, ", ".join(f"{o.name} {o.seconds:.1f}" for o in outcomes)


async def log_ready(catchup: Catchup, *, reuse: bool) -> bool:
    """True when --reuse found a log of the size asked for (nothing to generate)."""
    if not reuse:
        return False
    try:
        found = await catchup.pool.fetchval("SELECT count(*) FROM events")
    except asyncpg.UndefinedTableError:  # no log there yet: make one
        return False
    catchup.events = found
    return bool(found >= catchup.args.events)


async def run(args: argparse.Namespace) -> None:
    target = target_of(args.dsn)
    if target.database in FORBIDDEN:
        raise SystemExit(f"refusing {target.database}: give this bench its own database")
    options = log_args(["--dsn", args.dsn, "--events", str(args.events), "--part", "catch-up"])
    options.batch_size = BATCH_SIZE
    names = [projection.name for projection in all_projections()]
    print(f"PostgreSQL: {await server_facts_or_prepare(target, args)}")
    print(f"Python {sys.version.split()[0]}; {os.cpu_count()} cpus; {now_load()}", flush=True)
    pool = await create_pool(target.dsn, schema=CATCHUP_SCHEMA, min_size=2, max_size=4)
    try:
        with workers(options.log_workers) as executor:
            catchup = Catchup(options, pool, executor)
            if not await log_ready(catchup, reuse=args.reuse):
                await catchup.generate()
        started = perf_counter()
        await ProjectionRunner(pool, all_projections(), batch_size=BATCH_SIZE).catch_up()
        print(f"live catch-up of all three: {perf_counter() - started:.1f} s ({now_load()})")
        await catchup.read_log()  # warms the caches
        await rounds(catchup, args, names)
    finally:
        await pool.close()
        if not (args.keep or args.reuse):
            await clean_up(target, [CATCHUP_SCHEMA])
    print(f"\ndone ({now_load()})")


async def server_facts_or_prepare(target: Target, args: argparse.Namespace) -> str:
    if not args.reuse:
        await prepare(target, [CATCHUP_SCHEMA])
    return await server_facts(target.dsn)


async def rounds(catchup: Catchup, args: argparse.Namespace, names: list[str]) -> None:
    events = catchup.events
    reads = [await catchup.read_log()]
    figures: dict[str, list[tuple[float, float]]] = {"sequential": [], "parallel": []}
    label = f"parallel, {args.jobs} workers"
    for number in range(args.rounds):
        for mode in ("sequential", "parallel", "parallel", "sequential"):
            if mode == "sequential":
                seconds, each = await sequential(catchup.pool, names)
            else:
                seconds, each = await parallel(catchup.args.dsn, names, args.jobs)
            reads.append(await catchup.read_log())
            baseline = (reads[-2] + reads[-1]) / 2
            figures[mode].append((rate(events, seconds), baseline))
            print(
                f"round {number + 1} {label if mode == 'parallel' else mode}: {seconds:.1f} s ="
                f" {rate(events, seconds):,.0f} events/s (s each: {each}); reads around it"
                f" {baseline:,.0f}"
                f" events/s; ratio to them {rate(events, seconds) / baseline:.3f} ({now_load()})",
                flush=True,
            )
    summary(events, figures, reads, label)


def summary(
    events: int,
    figures: dict[str, list[tuple[float, float]]],
    reads: list[float],
    label: str,
) -> None:
    print(f"\n| Rebuild of all three ({events:,} events) | events/s (mean) | ratio to read |")
    print("|---|---:|---:|")
    means = {}
    for mode, pairs in figures.items():
        means[mode] = statistics.mean(value for value, _ in pairs)
        ratio = statistics.mean(value / baseline for value, baseline in pairs)
        print(f"| {label if mode == 'parallel' else mode} | {means[mode]:,.0f} | {ratio:.3f} |")
    print(f"\nparallel / sequential: {means['parallel'] / means['sequential']:.2f}")
    print(
        f"reads of the log, in order: {', '.join(f'{r:,.0f}' for r in reads)} events/s"
        f" (max/min {max(reads) / min(reads):.2f})"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("LEDGER_BENCH_REBUILD_DATABASE_URL") or DEFAULT_DSN,
        help="default: LEDGER_BENCH_REBUILD_DATABASE_URL or %(default)s",
    )
    parser.add_argument("--events", type=int, default=100_000, help="default %(default)s")
    parser.add_argument("--rounds", type=int, default=2, help="A B B A rounds (%(default)s)")
    parser.add_argument(
        "--jobs", type=int, default=default_workers(3), help="workers (default %(default)s)"
    )
    kept = parser.add_mutually_exclusive_group()
    kept.add_argument("--keep", action="store_true", help="keep the database")
    kept.add_argument("--reuse", action="store_true", help="use (and keep) a kept log")
    args = parser.parse_args(argv)
    if min(args.events, args.rounds, args.jobs) < 1:
        parser.error("--events, --rounds and --jobs must be at least 1")
    return args


if __name__ == "__main__":
    asyncio.run(run(parse_args()))

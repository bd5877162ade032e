"""Webhook ingest throughput (HTTP -> verified, durable events) under wrk, beside an aiohttp
hello-world served by the same process in the same run.

    python bench/webhook_ingest.py [--dsn DSN] [--duration 10] [--connections 64] [--threads 1]
                                   [--payments 1000] [--deposits 4] [--niceness 0,10]

Needs `wrk` (Debian: `apt-get install -y wrk`); a Python load generator saturates before the
server does on this machine kind. Database: --dsn, else LEDGER_BENCH_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/postgres when it answers, else an ephemeral embedded
PostgreSQL. Everything happens in a fresh schema, dropped at the end.

The ledger is composed as `ledger serve` composes it (adapters.cli.service.build_app, default
pool, default asyncio loop) with one provider, Payment Engine, whose sandbox is used to create the
payments. Payment Engine signs `sha256=HMAC(raw body)` and names each delivery by its `eventId`,
so the bench pre-signs distinct deliveries: `--deposits` further deposits to each of `--payments`
payments, interleaved so that concurrent requests hit different payments. wrk posts them through
bench/webhook_ingest.lua. Runs, each `--duration` seconds at `--connections` connections:

  hello A        an aiohttp app that reads the body and answers the ledger's 200 JSON
  distinct       each request a new deposit: verify, read, record the receipt (answered once
                 durable); the applier applies it right after (its lag and drain are printed)
  duplicates     replays of deliveries already received: acknowledged, recorded, nothing moves
  bad signature  the distinct bodies signed with another secret: 401, each attempt recorded
  projections on the distinct run again (other deposits) with the projection runner working:
                 in the same process (projections_worker = "in_process"), then in a child
                 process of its own ("process", as `ledger serve` runs it) at each --niceness;
                 each placement first catches up the earlier runs (its caches warm, as a
                 runner's are after a while); for each, its ratio to the distinct run and the
                 projections' lag sampled while wrk sent, side by side, with the load average
  unmatched      deposits naming orders the ledger does not know: received, then held unmatched
                 by the applier; run once with none stored and once after `--unmatched` records
                 were stored (the index is keyed, so the two should match)
  hello B        again, so that drift of the machine shows; the baseline is the mean of A and B

Only the ratios against the baseline are meant to be compared across runs (this machine kind
swings up to 3x between runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from time import perf_counter

import aiohttp
import asyncpg
from aiohttp import web

from adapters.cli.service import build_app, listening_socket, serving, socket_url
from adapters.config import Settings
from adapters.http.projection_child import WorkerOrders
from adapters.providers.http_client import dumps_exact
from adapters.providers.payment_engine.webhooks import sign
from adapters.sandbox.fleet import LOOPBACK, sandbox_fleet
from adapters.storage.embedded import EmbeddedPostgres
from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import PostgresEventStore, create_pool

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
LUA_SCRIPT = Path(__file__).with_name("webhook_ingest.lua")
TOKEN = "bench-token"
PROVIDER = "payment_engine"
DELIVERY_RECORDED = "Payment.DeliveryRecorded"
RECEIVED = "Delivery.Received"
UNMATCHED = "Delivery.Unmatched"
PRELOAD_BATCH = 1_000
MERCHANT_ACCOUNT = "merchant"  # the Payment Engine adapter's default merchant_account_id
CREATE_CONCURRENCY = 32
WARM_UP_SECONDS = 2
_RESULT = re.compile(r"WRK_RESULT (.*)")
SETTLE_SECONDS_NOTED = 2.0


@dataclass(frozen=True, slots=True)
class WrkResult:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    # What the ledger wrote meanwhile, requests still in flight when wrk stopped included: the
    # events appended, and the deliveries recorded (one DeliveryRecorded per delivery).
    events_appended: int | None = None
    deliveries: int | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def events_per_delivery(self) -> float | None:
        if self.events_appended is None or not self.deliveries:
            return None
        return self.events_appended / self.deliveries


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit(
            "wrk is not installed; this benchmark needs it as its load generator.\n"
            "Install it with: apt-get install -y wrk   (Debian/Ubuntu package `wrk`)"
        )
    return path


async def answers(dsn: str) -> bool:
    try:
        connection = await asyncpg.connect(dsn, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


@contextlib.asynccontextmanager
async def bench_database(given: str | None) -> AsyncIterator[tuple[str, str]]:
    """(dsn, where it came from): --dsn, LEDGER_BENCH_DATABASE_URL, the local server, embedded."""
    dsn = given or os.environ.get("LEDGER_BENCH_DATABASE_URL")
    if dsn:
        yield dsn, "given"
        return
    if await answers(LOCAL_DSN):
        yield LOCAL_DSN, "local server"
        return
    server = EmbeddedPostgres(ephemeral=True)
    try:
        yield await server.start(), "embedded (ephemeral)"
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def fresh_schema(dsn: str) -> AsyncIterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield schema
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def server_facts(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        version = await connection.fetchval("SHOW server_version")
        settings = [
            f"{name}={await connection.fetchval(f'SHOW {name}')}"
            for name in ("fsync", "synchronous_commit", "shared_buffers")
        ]
    finally:
        await connection.close()
    return f"PostgreSQL {version} ({', '.join(settings)})"


def background_settings(*, enabled: bool) -> dict[str, object]:
    """Settings that turn the service's background loops (projection runner, expiry sweep,
    balance poll) off, so that the figure is ingest alone; unknown keys are ignored by Settings,
    so this is harmless on a version without them."""
    if enabled:
        return {}
    # The provider queries too: the bad-signature run leaves thousands of unverified deliveries
    # whose rate-limited queries would append events for minutes, into the later runs' figures
    # (and keep `settled_position` from ever seeing the log settle).
    return {
        "projections_worker": "off",
        "expiry_sweep_seconds": 0,
        "balance_poll_seconds": 0,
        "provider_query_seconds": 0,
    }


async def settled_position(store: PostgresEventStore) -> int:
    """The log's head once requests still in flight when wrk stopped have been written, so that
    each run's events are counted in that run."""
    position = (await store.head()).position
    while True:
        await asyncio.sleep(0.3)
        now = (await store.head()).position
        if now == position:
            return now
        position = now


async def applier_drain(app: web.Application) -> float | None:
    """Seconds the applier needed, after wrk stopped, to apply what was received (None on a
    version without an applier)."""
    from adapters.http import keys  # noqa: PLC0415 - optional: older versions lack the key

    key = getattr(keys, "APPLIER", None)
    if key is None:
        return None
    started = perf_counter()
    await app[key].catch_up()
    return perf_counter() - started


async def applier_lag(store: PostgresEventStore, after: int, applied_type: str) -> str:
    """p50/p99 of the time from each delivery's receipt to the commit of its effect (the
    event recorded in its payment's stream, or its unmatched record)."""
    row = await store.pool.fetchrow(
        """
        WITH received AS MATERIALIZED (
            SELECT recorded_at, convert_from(payload, 'UTF8')::jsonb ->> 'dedupe_key' AS key
              FROM events WHERE type = $2 AND position > $1),
        applied AS MATERIALIZED (
            SELECT recorded_at, coalesce(
                       convert_from(payload, 'UTF8')::jsonb -> 'delivery' ->> 'dedupe_key',
                       convert_from(payload, 'UTF8')::jsonb ->> 'dedupe_key') AS key
              FROM events WHERE type = $3 AND position > $1)
        SELECT count(*) AS n,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.recorded_at - r.recorded_at)) AS p50,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.recorded_at - r.recorded_at)) AS p99
          FROM received r JOIN applied a USING (key)
        """,  # noqa: E501 - one query, read as SQL
        after,
        RECEIVED,
        applied_type,
    )
    if row is None or not row["n"]:
        return "applier lag: nothing applied in this run"
    return (
        f"applier lag over {row['n']:,} deliveries: p50 {row['p50'] * 1000:.1f} ms,"
        f" p99 {row['p99'] * 1000:.1f} ms (receipt to effect committed)"
    )


async def preload_unmatched(store: PostgresEventStore, count: int) -> float:
    """Stores `count` unmatched deliveries as the applier stores them (a record in a stream of
    its own, indexed by claims under its names); returns the seconds it took."""
    from adapters.ingestion.unmatched import index_namespace  # noqa: PLC0415
    from ledger.codec import dumps_canonical  # noqa: PLC0415
    from ledger.ports import Claim, NewEvent  # noqa: PLC0415

    started = perf_counter()
    for first in range(0, count, PRELOAD_BATCH):
        events, claims = [], []
        for number in range(first, min(first + PRELOAD_BATCH, count)):
            stream = f"unmatched-preload-{number}"
            name = f"preload-order-{number:07d}"
            document = {
                "provider": PROVIDER,
                "dedupe_key": f"preload-{number}",
                "verification": {"outcome": "verified", "scheme": "preload", "reason": ""},
                "references": [name],
                "deposits": [],
                "funds_trusted": False,
                "body": "{}",
            }
            events.append(NewEvent(stream, 1, UNMATCHED, dumps_canonical(document)))
            namespace = index_namespace(PROVIDER, "payment", name)
            claims.append(Claim(namespace, str(document["dedupe_key"]), stream))
        expected = {event.stream_id: 0 for event in events}
        await store.append(events, expected_versions=expected, claims=claims)
    async with store.pool.acquire() as connection:
        await connection.execute("ANALYZE events; ANALYZE claims")  # autovacuum is off on CI
    return perf_counter() - started


class LagSampler:
    """Samples the projections' lag every 0.25 s while `loading` is set, from a thread of its
    own on a connection of its own. Not on the bench's event loop: there an in-process runner
    would let a sample through only between its batches, right after the positions moved,
    and the in-process lag would look smaller than it is."""

    def __init__(self, orders: WorkerOrders) -> None:
        self.orders = orders
        self.loading = threading.Event()
        self.lags: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._sample()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    async def _sample(self) -> None:
        from adapters.storage.read_models import all_projections  # noqa: PLC0415
        from adapters.storage.read_models.runner import ProjectionRunner  # noqa: PLC0415

        pool = await create_pool(self.orders.dsn, schema=self.orders.schema, min_size=1)
        runner = ProjectionRunner(pool, all_projections())
        try:
            while not self._stop.is_set():
                await asyncio.sleep(0.25)
                if not self.loading.is_set():
                    continue  # only while wrk sends: the lag under live ingest
                lag = max((s.lag_seconds for s in await runner.status()), default=0.0)
                if self.loading.is_set():
                    self.lags.append(lag)
        finally:
            await pool.close()


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot (Linux; zeros elsewhere)."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def cpu_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def hello_app() -> web.Application:
    """The baseline: reads the body and answers what the ledger answers an accepted delivery."""

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"received": True, "outcome": "received"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", hello)
    return app


async def create_payments(url: str, count: int) -> list[tuple[str, str]]:
    """(order_id, provider_ref) of `count` new payments, created through POST /v1/payments."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    created: list[tuple[str, str]] = []
    numbers = iter(range(count))

    async def creator(http: aiohttp.ClientSession) -> None:
        for number in numbers:
            order_id = f"bench-{number:06d}"
            body = {"provider": PROVIDER, "order_id": order_id, "amount": "100", "currency": "USD"}
            async with http.post(url + "/v1/payments", json=body) as reply:
                answer = await reply.json()
                if reply.status != 201:
                    raise RuntimeError(f"creating {order_id}: {reply.status} {answer}")
                created.append((order_id, answer["provider_ref"]))

    async with aiohttp.ClientSession(headers=headers) as http:
        await asyncio.gather(*(creator(http) for _ in range(CREATE_CONCURRENCY)))
    return created


def unmatched_lines(count: int, prefix: str, secret: str) -> Iterator[str]:
    """Deposits naming `count` orders nobody created: each held unmatched by the applier."""
    return deposit_lines(
        [(f"{prefix}-{n:07d}", f"{prefix}-ref-{n:07d}") for n in range(count)], range(1), secret
    )


def deposit_lines(payments: list[tuple[str, str]], deposits: range, secret: str) -> Iterator[str]:
    """One signed delivery per (deposit, payment), payments interleaved: consecutive requests
    name different payments, so concurrent ones rarely contend for one stream."""
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for deposit in deposits:
        for order_id, provider_ref in payments:
            body = dumps_exact({
                "eventId": f"evt_bench_{provider_ref}_{deposit}",
                "eventType": "transaction.completed",
                "timestamp": stamp,
                "data": {
                    "transactionId": f"{provider_ref}-bench{deposit}",
                    "externalReference": order_id,
                    "toAccountId": MERCHANT_ACCOUNT,
                    "paymentTypeId": "crypto_deposit",
                    "amount": Decimal("1.00"),
                    "currencyCode": "USD",
                    "status": "COMPLETED",
                },
            })  # fmt: skip
            yield f"{sign(secret, body.encode())}\t{body}\n"


async def run_wrk(
    wrk: str, args: argparse.Namespace, url: str, deliveries: Path, *, seconds: int, limit: int = 0
) -> WrkResult:
    command = [
        wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(LUA_SCRIPT), url, "--", str(deliveries), str(args.threads), str(limit),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode()
    found = _RESULT.search(text)
    if process.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{text}")
    values = dict(item.split("=") for item in found.group(1).split())
    return WrkResult(
        name="",
        requests=int(values["requests"]),
        seconds=int(values["duration_us"]) / 1e6,
        p50_ms=int(values["p50_us"]) / 1e3,
        p99_ms=int(values["p99_us"]) / 1e3,
        non_2xx=int(values["non_2xx"]),
        socket_errors=int(values["socket_errors"]),
    )


def report(results: list[WrkResult], baseline: float) -> str:
    lines = [
        "| Run | Requests/s | p50 ms | p99 ms | Ratio to hello-world | Events/delivery | Non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        per_delivery = result.events_per_delivery
        lines.append(
            f"| {result.name} | {result.rate:,.0f} | {result.p50_ms:.1f} | {result.p99_ms:.1f} "
            f"| {result.rate / baseline:.3f} "
            f"| {'-' if per_delivery is None else f'{per_delivery:.2f}'} "
            f"| {result.non_2xx + result.socket_errors} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Targets:
    """What wrk is pointed at in one bench run."""

    wrk: str
    args: argparse.Namespace
    store: PostgresEventStore
    webhook_url: str
    hello_url: str

    async def run(
        self,
        name: str,
        url: str,
        deliveries: Path,
        *,
        limit: int = 0,
        seconds: int = 0,
        loading: threading.Event | None = None,
    ) -> WrkResult:
        """One wrk run; `loading`, when given, is set exactly while wrk sends."""
        before = await settled_position(self.store)
        loading = loading or threading.Event()
        loading.set()
        cpu_before = cpu_times()
        try:
            raw = await run_wrk(
                self.wrk, self.args, url, deliveries, seconds=seconds or self.args.duration,
                limit=limit,
            )  # fmt: skip
        finally:
            loading.clear()
        # The whole machine's, others' processes too: says whether a core was left idle.
        busy = cpu_busy(cpu_before, cpu_times())
        settling = perf_counter()
        after = await settled_position(self.store)
        if perf_counter() - settling > SETTLE_SECONDS_NOTED:
            print(f"  (the log settled {perf_counter() - settling:.1f} s after wrk stopped)")
        recorded = await self.store.pool.fetchval(
            "SELECT count(*) FROM events WHERE position > $1 AND position <= $2 AND type = $3",
            before, after, DELIVERY_RECORDED,
        )  # fmt: skip
        ingesting = url == self.webhook_url
        result = WrkResult(
            name, raw.requests, raw.seconds, raw.p50_ms, raw.p99_ms, raw.non_2xx,
            raw.socket_errors, after - before if ingesting else None,
            recorded if ingesting else None,
        )  # fmt: skip
        per_delivery = result.events_per_delivery
        print(
            f"{name}: {result.rate:,.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 "
            f"{result.p99_ms:.1f} ms, non-2xx {result.non_2xx}, socket errors "
            f"{result.socket_errors}"
            + ("" if per_delivery is None else f", {per_delivery:.2f} events/delivery")
            + f", machine CPU busy {busy:.0%}",
            flush=True,
        )
        return result


async def measure_runs(
    targets: Targets, app: web.Application, payments: list[tuple[str, str]], secret: str
) -> None:
    args = targets.args
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as folder:
        warm, distinct = Path(folder) / "warm.tsv", Path(folder) / "distinct.tsv"
        forged = Path(folder) / "forged.tsv"
        # Deposit 0 of every payment warms up; deposits 1.. are measured.
        warm.write_text("".join(deposit_lines(payments, range(1), secret)))
        deposits = range(1, args.deposits + 1)
        distinct.write_text("".join(deposit_lines(payments, deposits, secret)))
        forged.write_text("".join(deposit_lines(payments, deposits, "not-the-" + secret)))
        available = len(payments) * args.deposits

        await targets.run("warm-up hello", targets.hello_url, warm, seconds=WARM_UP_SECONDS)
        await targets.run("warm-up ingest", targets.webhook_url, warm, seconds=WARM_UP_SECONDS)
        await applier_drain(app)
        hello_a = await targets.run("hello-world A", targets.hello_url, distinct)
        before = await settled_position(targets.store)
        ingest = await targets.run("webhook ingest, distinct", targets.webhook_url, distinct)
        drained = await applier_drain(app)
        if drained is not None:
            print(f"  applier drained {drained:.2f} s after wrk stopped")
            print("  " + await applier_lag(targets.store, before, DELIVERY_RECORDED))
        if ingest.requests > available:
            print(
                f"  note: {ingest.requests - available} requests went past the {available} "
                "distinct deliveries and were duplicates; raise --payments or --deposits"
            )
        # Replays only what the distinct run surely sent, so every request here is a duplicate.
        replayable = min(available, max(args.connections, ingest.requests - 2 * args.connections))
        duplicates = await targets.run(
            "webhook ingest, duplicates", targets.webhook_url, distinct, limit=replayable
        )
        bad = await targets.run("webhook ingest, bad signature (401)", targets.webhook_url, forged)
        results = [hello_a, ingest, duplicates, bad]
        if args.projections_run:
            results += await projections_runs(targets, app, ingest, payments, secret, folder)
        if args.unmatched_runs:
            results += await unmatched_runs(targets, app, Path(folder), secret)
        hello_b = await targets.run("hello-world B", targets.hello_url, distinct)
    baseline = (hello_a.rate + hello_b.rate) / 2
    print(f"\nbaseline (mean of hello-world A and B): {baseline:,.0f} req/s\n")
    print(report([*results, hello_b], baseline))
    print("(the bad-signature run's non-2xx are its expected 401s)")


@dataclass(frozen=True, slots=True)
class ProjectionsRun:
    placement: str
    result: WrkResult
    lag_p50_seconds: float
    lag_p99_seconds: float


async def projections_runs(
    targets: Targets,
    app: web.Application,
    ingest: WrkResult,
    payments: list[tuple[str, str]],
    secret: str,
    folder: str,
) -> list[WrkResult]:
    """The distinct run again with the runner in the process, then in its own process, each
    on deposits of its own; then both side by side against the distinct run (runner off)."""
    runs = []
    deposits = int(targets.args.deposits)
    # On the server's loop, then in a child at each niceness asked for.
    placements = ["in_process", *(f"process, nice {n}" for n in targets.args.niceness)]
    for turn, placement in enumerate(placements, start=1):
        lines = Path(folder) / f"projections-{turn}.tsv"
        more = range(turn * deposits + 1, (turn + 1) * deposits + 1)
        lines.write_text("".join(deposit_lines(payments, more, secret)))
        runs.append(await projections_running(targets, app, lines, placement))
    print("\nprojection runner on, against ingest with it off (same run):")
    for run in runs:
        print(
            f"  {run.placement:<17}  ingest {run.result.rate / ingest.rate:.2f} of off;"
            f" projection lag p50 {run.lag_p50_seconds:.2f} s, p99 {run.lag_p99_seconds:.2f} s"
        )
    print(f"  load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    return [run.result for run in runs]


@contextlib.asynccontextmanager
async def runner_placed(app: web.Application, placement: str) -> AsyncIterator[None]:
    """The projection runner running for the block: on this loop, or in a child process (as
    `ledger serve` starts it: adapters/http/projection_worker.py), started and ready first."""
    from adapters.http.background import Backoff, supervise  # noqa: PLC0415 - only here
    from adapters.http.keys import RUNNER, SETTINGS  # noqa: PLC0415
    from adapters.http.projection_worker import ProjectionWorker, worker_orders  # noqa: PLC0415

    ready = asyncio.Event()
    if placement == "in_process":
        task = asyncio.create_task(app[RUNNER].run_forever(ready.set))
    else:
        niceness = int(placement.rsplit(" ", 1)[1])
        orders = worker_orders(app[RUNNER].pool, app[SETTINGS])
        worker = ProjectionWorker(dataclasses.replace(orders, niceness=niceness))

        async def run(healthy: Callable[[], None]) -> None:
            def passed() -> None:
                healthy()
                ready.set()

            await worker.run(passed)

        task = asyncio.create_task(supervise("projection worker", run, Backoff()))
    try:
        async with asyncio.timeout(30):
            await ready.wait()
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def projections_running(
    targets: Targets, app: web.Application, lines: Path, placement: str
) -> ProjectionsRun:
    """The distinct run again (other deposits), with the projection runner running where
    `placement` says, and the projections' lag sampled while it runs."""
    from adapters.http.keys import RUNNER, SETTINGS  # noqa: PLC0415 - only for this run
    from adapters.http.projection_worker import worker_orders  # noqa: PLC0415

    runner = app[RUNNER]
    sampler = LagSampler(worker_orders(runner.pool, app[SETTINGS]))
    # The runner, wherever it is placed, catches up the earlier runs' events itself first (its
    # first pass, before it says it is ready), which warms its cache of subject states as a
    # runner that has run a while has it warm.
    async with runner_placed(app, placement):
        sampler.start()
        try:
            result = await targets.run(
                f"webhook ingest, distinct, projections {placement}",
                targets.webhook_url,
                lines,
                loading=sampler.loading,
            )
        finally:
            sampler.stop()
    lags = sorted(sampler.lags)
    p50 = p99 = 0.0
    if lags:
        p50, p99 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        print(f"  projection lag while ingesting: p50 {p50:.2f} s, p99 {p99:.2f} s,"
              f" max {lags[-1]:.2f} s ({len(lags)} samples)")  # fmt: skip
    return ProjectionsRun(placement, result, p50, p99)


async def unmatched_runs(
    targets: Targets, app: web.Application, folder: Path, secret: str
) -> list[WrkResult]:
    args = targets.args
    results = []
    for stored, prefix in ((0, "none"), (args.unmatched, "stored")):
        if stored:
            seconds = await preload_unmatched(targets.store, stored)
            print(f"  stored {stored:,} unmatched deliveries in {seconds:.1f} s")
        lines = folder / f"unmatched-{prefix}.tsv"
        lines.write_text("".join(unmatched_lines(len_for(args), f"um-{prefix}", secret)))
        before = await settled_position(targets.store)
        result = await targets.run(
            f"unmatched, {stored:,} stored", targets.webhook_url, lines
        )
        drained = await applier_drain(app)
        print(f"  applier drained {drained or 0:.2f} s after wrk stopped")
        print("  " + await applier_lag(targets.store, before, UNMATCHED))
        results.append(result)
    return results


def len_for(args: argparse.Namespace) -> int:
    """Distinct unmatched deliveries enough for one run (as many as the distinct run has)."""
    return int(args.payments * args.deposits)


async def measure(args: argparse.Namespace) -> None:
    wrk = require_wrk()
    async with bench_database(args.dsn) as (dsn, source):
        print(f"database: {source}; {await server_facts(dsn)}; cpus: {os.cpu_count()}")
        print(
            f"wrk: -t{args.threads} -c{args.connections} -d{args.duration}s; loop: {args.loop}; "
            f"pool: {args.pool_size or 'default'}; background loops: "
            f"{'on' if args.background else 'off'}"
        )
        async with fresh_schema(dsn) as schema, sandbox_fleet([PROVIDER]) as fleet:
            # By default the pool `ledger serve` opens (create_pool's own sizes).
            sizes = {"max_size": args.pool_size} if args.pool_size else {}
            pool = await create_pool(dsn, schema=schema, **sizes)
            try:
                async with pool.acquire() as connection:
                    await migrate(connection)
                store = PostgresEventStore(pool)
                with (
                    contextlib.closing(listening_socket(LOOPBACK, 0)) as ledger_socket,
                    contextlib.closing(listening_socket(LOOPBACK, 0)) as hello_socket,
                ):
                    ledger_url = socket_url(ledger_socket)
                    settings = Settings.model_validate({
                        "public_url": ledger_url,
                        "api": {"tokens": [{"name": "bench", "token": TOKEN, "scopes": ["admin"]}]},
                        "providers": fleet.provider_tables(),
                        **background_settings(enabled=args.background),
                    })  # fmt: skip
                    app = build_app(settings, store)
                    async with (
                        serving(app, ledger_socket),
                        serving(hello_app(), hello_socket),
                    ):
                        started = perf_counter()
                        payments = await create_payments(ledger_url, args.payments)
                        print(
                            f"created {len(payments)} payments in {perf_counter() - started:.1f} s"
                        )
                        targets = Targets(
                            wrk, args, store, f"{ledger_url}/v1/webhooks/{PROVIDER}",
                            socket_url(hello_socket),
                        )  # fmt: skip
                        secret = settings.providers[PROVIDER]["webhook_secret"]
                        await measure_runs(targets, app, payments, secret)
            finally:
                await pool.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dsn", help="PostgreSQL URL (default: see the module doc)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (1: the other core is the server's)"
    )
    parser.add_argument("--payments", type=int, default=1000, help="payments created (1000)")
    parser.add_argument("--deposits", type=int, default=4, help="deliveries per payment (4)")
    parser.add_argument(
        "--unmatched",
        type=int,
        default=100_000,
        help="unmatched deliveries stored before the second unmatched run (100000)",
    )
    parser.add_argument(
        "--no-projections-run",
        dest="projections_run",
        action="store_false",
        help="skip the run with the projection runner on",
    )
    parser.add_argument(
        "--niceness",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[0, 10],
        help="niceness of the runner's own process in the projections runs, one run each (0,10)",
    )
    parser.add_argument(
        "--no-unmatched-runs",
        dest="unmatched_runs",
        action="store_false",
        help="skip the two unmatched runs (and the preload)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the server and the bench (asyncio)",
    )
    parser.add_argument(
        "--pool-size", type=int, default=0, help="database pool size (default: the service's)"
    )
    parser.add_argument(
        "--background",
        action="store_true",
        help="keep the service's background loops (projection runner ...) running meanwhile",
    )
    args = parser.parse_args(argv)
    for name in ("duration", "connections", "threads", "payments", "deposits"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.loop == "uvloop":
        import uvloop  # type: ignore[import-not-found]  # noqa: PLC0415 - optional, untyped here

        uvloop.install()
    asyncio.run(measure(args))


if __name__ == "__main__":
    main(sys.argv[1:])

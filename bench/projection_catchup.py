# ruff: noqa: E402
"""Projection catch-up on a log of a million events, and the query endpoints' latency over a million
payments, each beside a baseline measured in the same run.

    python bench/projection_catchup.py [--dsn DSN] [--part all|catch-up|queries]
                                [--events 1000000] [--payments 1000000] [--batch-size 1000] ...

Database: --dsn, else LEDGER_BENCH_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/ledger_bench. A database whose name starts with
`ledger_bench` is dropped and created afresh at the start, and dropped at the end unless --keep.
In any other database the bench works in two fresh schemas (bench_catchup, bench_queries), dropped
at the end unless --keep. The `test` database is refused.

1. Catch-up (--events, default 1,000,000). Worker processes make payment and withdrawal histories
   with the domain (Payment.create; apply_update with DepositReport and PaymentStatusReport;
   expire; settle; Withdrawal.request, submit, apply_update; record_delivery of a small delivery
   document before each provider update) and encode them with ledger.codec.encode_pending. The
   events of a chunk of histories are interleaved at random, as concurrent payments interleave in
   the log; finance's settlements come `--later-chunks` chunks later (days, in the log), so some
   projection steps find their aggregate evicted from the projection's cache. A few unmatched
   deliveries and provider balance reports go to their record streams. The main process appends
   everything in order through PostgresEventStore.append, `--append-batch` events of many streams
   per call. Then:
     read A    the baseline: fetch_batch over the whole log, `--batch-size` events per call, on
               one connection, doing nothing with the events
     runner    ProjectionRunner.catch_up with a projection that does nothing (the runner's own cost)
     subjects, journal, reconciliation   each alone, from position 0 to the head
     all three ProjectionRunner(pool, all_projections()).catch_up() on emptied read models
     read B    the baseline again; ratios are against the mean of A and B
2. Queries (--payments, default 1,000,000). payments_view and reconciliation_items are filled by
   COPY (indexes dropped first and re-created from their own definitions afterwards) with rows
   made by the projections' own functions: subjects_view._payment_row of in-memory Payment
   aggregates whose histories ran through the domain, and items from
   projections.findings.payment_findings of the same aggregates (open, or cleared by a later
   settlement). The app (init_app, no background work) is served on loopback. Each query kind is
   requested one request at a time through an aiohttp client, following next_cursor; half the
   chains start at page 1 and half at a cursor in the middle of the time range. The baseline is
   the very SQL each request ran (recorded in a warm-up pass), run on the app's own asyncpg pool.
   Rounds alternate A B B A. EXPLAIN ANALYZE shows each kind's plan on a first page and on a
   cursor page, and sequential scans are listed.

Only ratios against the same run's baseline are meant to be compared across runs: this machine
kind swings up to 3x between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

# This file shares its name with the `projections` package, so its own folder (sys.path[0] when run
# as a script) must leave the import path before the project is imported; hence E402 below.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import aiohttp
import asyncpg
import eventsourcing.domain
from aiohttp import web

from adapters.config import Settings
from adapters.http.app import init_app
from adapters.http.cursors import encode_cursor
from adapters.http.keys import RUNNER
from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import AnyConnection, PostgresEventStore, create_pool
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.base import Projection
from adapters.storage.read_models.item_changes import INSERT_COLUMNS
from adapters.storage.read_models.journal import JournalProjection
from adapters.storage.read_models.reconciliation import ReconciliationProjection
from adapters.storage.read_models.runner import ProjectionRunner
from adapters.storage.read_models.subjects_view import SubjectsView, _payment_row
from ledger.codec import dumps_canonical, encode_pending
from ledger.commands import (
    DepositReport,
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    ProviderPaymentOutcome,
    ProviderWithdrawalOutcome,
    WithdrawalReference,
    WithdrawalUpdate,
)
from ledger.money import Money, currency_scale
from ledger.payment import Payment
from ledger.ports import NewEvent, RecordedEvent
from ledger.withdrawal import Withdrawal
from projections.findings import Finding, Reason, payment_findings

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/ledger_bench"
TOKEN = "bench-token"
CATCHUP_SCHEMA = "bench_catchup"
QUERIES_SCHEMA = "bench_queries"

# ------------------------------------------------------------------------------------ the world

LOG_START = datetime(2026, 1, 1, tzinfo=UTC)
QUERY_END = datetime(2026, 7, 1, tzinfo=UTC)
EXPIRY = timedelta(minutes=60)
CUSTOMERS = 200_000
PROVIDERS = {
    "coinpay": 35,
    "cryptofuse": 25,
    "payment_engine": 20,
    "coincoin": 12,
    "lipaykripto": 8,
}
CURRENCIES = {"USDT": 60, "BTC": 15, "ETH": 15, "TRY": 10}
UNITS = {  # expected amounts, in the currency's smallest units
    "USDT": (5_000_000, 2_000_000_000),
    "BTC": (20_000, 5_000_000),
    "ETH": (10**15, 2 * 10**18),
    "TRY": (10_000, 5_000_000),
}
# Shares of payment histories, in percent. Findings come from all but paid, open, expired, failed.
PAYMENT_SCENARIOS = {
    "paid": 55,
    "open": 4,
    "expired": 15,
    "stale": 4,
    "failed": 3,
    "underpaid": 3,
    "underpaid_expired": 3,
    "overpaid": 3,
    "late": 3,
    "duplicate": 3,
    "unverified": 2,
    "mismatch": 2,
}
WITHDRAWAL_SCENARIOS = {"completed": 85, "failed": 10, "manual_review": 5}
WITHDRAWAL_SHARE = 0.12  # of histories in the log
UNMATCHED_SHARE = 0.004  # an unmatched delivery per history
BALANCE_SHARE = 0.002  # a provider balance report per history

NOW, CHECKPOINT, LATER = "now", "checkpoint", "later"

Row = tuple[Any, ...]


class _Clock:
    """The domain's clock while histories are made: eventsourcing stamps every event (and so
    created_on / modified_on) with it, so histories can be spread over months."""

    now = LOG_START


CLOCK = _Clock()


def _worker_init() -> None:
    eventsourcing.domain.datetime_now_with_tzinfo = lambda: CLOCK.now  # type: ignore[assignment]


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _amount(units: int, currency: str) -> Decimal:
    return Decimal(units).scaleb(-currency_scale(currency))


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def order_id(serial: int) -> str:
    return f"order-{serial:09d}"


def delivery_document(
    rng: random.Random, provider: str, at: datetime, kind: str, status: str, *, verified: bool
) -> dict[str, Any]:
    """What ingestion keeps of a webhook delivery, about 500 bytes."""
    key = f"{provider}:{_hex(rng, 64)}"
    body = {"id": key, "event": kind, "status": status, "sent_at": at.isoformat()}
    return {
        "provider": provider,
        "received_at": at,
        "headers": {"content-type": "application/json", "x-signature": f"sha256={_hex(rng, 256)}"},
        "path_token_sha256": None,
        "body": json.dumps(body),
        "dedupe_key": key,
        "event_type": kind,
        "verification": {
            "outcome": "verified" if verified else "unverified",
            "scheme": "hmac-sha256",
            "reason": "" if verified else "signature did not match",
        },
    }


@dataclass
class PaymentSteps:
    """One payment's history: each method is one thing that happens to it, at the next instant."""

    payment: Payment
    rng: random.Random
    at: datetime
    units: int
    deliveries: bool
    deposits: int = 0

    def tick(self, low: float = 1, high: float = 9) -> None:
        self.at += timedelta(minutes=self.rng.uniform(low, high))
        CLOCK.now = self.at

    def deposit(self, units: int, *, confirmed: bool, again: bool = False) -> DepositReport:
        if not again:
            self.deposits += 1
        currency = self.payment.expected.currency
        return DepositReport(
            deposit_id=f"{self.payment.provider_ref}-d{self.deposits}",
            amount=_amount(units, currency),
            currency=currency,
            confirmed=confirmed,
            confirmations=12 if confirmed else 1,
            tx_hash=f"0x{_hex(self.rng, 256)}",
            observed_at=self.at,
        )

    def status(
        self, outcome: ProviderPaymentOutcome, units: int | None = None
    ) -> PaymentStatusReport:
        reported = None if units is None else _amount(units, self.payment.expected.currency)
        return PaymentStatusReport(outcome.value, outcome, reported, self.at)

    def deliver(
        self,
        deposit: DepositReport | None = None,
        status: PaymentStatusReport | None = None,
        *,
        verified: bool = True,
    ) -> None:
        self.tick()
        word = status.status_word if status else "deposit"
        if self.deliveries:
            self.payment.record_delivery(
                delivery_document(
                    self.rng, self.payment.provider, self.at, "payment", word, verified=verified
                )
            )
        update = PaymentUpdate(
            PaymentReference(self.payment.provider, self.payment.provider_ref),
            deposits=(deposit,) if deposit else (),
            status=status,
        )
        self.payment.apply_update(update, received_at=self.at, verified=verified)

    def expire(self) -> None:
        """The ledger's sweeper, shortly after the deadline."""
        deadline = self.payment.expires_at
        assert deadline is not None
        self.at = max(self.at, deadline) + timedelta(seconds=self.rng.uniform(1, 30))
        CLOCK.now = self.at
        self.payment.expire(deadline, by="clock")

    def settle_later(self, share: float) -> Iterator[str]:
        """Finance settles days later (far away in the log), with probability `share`."""
        if self.rng.random() >= share:
            return
        yield CHECKPOINT
        self.at += timedelta(days=self.rng.uniform(1, 10))
        CLOCK.now = self.at
        self.payment.settle()
        yield LATER


Outcome = ProviderPaymentOutcome


def _scenario(s: PaymentSteps, scenario: str) -> Iterator[str]:  # noqa: C901, PLR0912, PLR0915
    """One story per scenario."""
    full, rng = s.units, s.rng
    if scenario == "open":
        if rng.random() < 0.5:
            s.deliver(s.deposit(full, confirmed=False), s.status(Outcome.CONFIRMING))
            yield NOW
    elif scenario in {"expired", "stale"}:
        if rng.random() < 0.6:
            s.deliver(status=s.status(Outcome.PENDING))
            yield NOW
        s.expire()
        yield NOW
        if scenario == "expired":
            s.deliver(status=s.status(Outcome.EXPIRED))
            yield NOW
    elif scenario == "failed":
        s.deliver(status=s.status(Outcome.FAILED))
        yield NOW
    elif scenario == "mismatch":  # the provider says paid; no funds ever reported
        s.deliver(status=s.status(Outcome.PAID, full))
        yield NOW
    elif scenario == "unverified":
        s.deliver(s.deposit(full, confirmed=True), s.status(Outcome.PAID, full), verified=False)
        yield NOW
        s.expire()
        yield NOW
    elif scenario == "late":
        s.expire()
        yield NOW
        s.deliver(s.deposit(full, confirmed=True), s.status(Outcome.PAID, full))
        yield NOW
        yield from s.settle_later(0.5)
    elif scenario in {"underpaid", "underpaid_expired"}:
        part = full * rng.randint(50, 95) // 100
        s.deliver(s.deposit(part, confirmed=False), s.status(Outcome.CONFIRMING))
        yield NOW
        s.deliver(
            s.deposit(part, confirmed=True, again=True), s.status(Outcome.PARTIALLY_PAID, part)
        )
        yield NOW
        if scenario == "underpaid_expired":
            s.expire()
            yield NOW
            s.deliver(status=s.status(Outcome.EXPIRED, part))
            yield NOW
            yield from s.settle_later(0.4)
    else:  # paid, overpaid, duplicate
        paid = full * rng.randint(101, 120) // 100 if scenario == "overpaid" else full
        word = Outcome.OVERPAID if scenario == "overpaid" else Outcome.PAID
        s.deliver(s.deposit(paid, confirmed=False), s.status(Outcome.CONFIRMING))
        yield NOW
        s.deliver(s.deposit(paid, confirmed=True, again=True), s.status(word, paid))
        yield NOW
        if scenario == "duplicate":  # the same confirmed deposit reported by another delivery
            s.deliver(s.deposit(paid, confirmed=True, again=True), s.status(word, paid))
            yield NOW
        if scenario != "paid":
            yield from s.settle_later(0.5)


def payment_story(
    rng: random.Random, serial: int, at: datetime, scenario: str, *, deliveries: bool
) -> Iterator[tuple[Any, str]]:
    """Yields (the payment, NOW | CHECKPOINT | LATER) after each step; CHECKPOINT comes right
    before the first step that happens days later, and makes no event."""
    provider = _pick(rng, PROVIDERS)
    currency = _pick(rng, CURRENCIES)
    units = rng.randint(*UNITS[currency])
    CLOCK.now = at
    payment = Payment.create(
        provider=provider,
        provider_ref=f"{provider}-{serial}",
        order_id=order_id(serial),
        expected=Money.of(_amount(units, currency), currency),
        price=Money.of(Decimal(rng.randint(500, 2_000_000)).scaleb(-2), "USD"),
        # Some merchants create payments without a deadline; those stay underpaid.
        expires_at=None if scenario == "underpaid" else at + EXPIRY,
        customer_id=f"customer-{rng.randrange(CUSTOMERS)}",
        pay_address=f"T{_hex(rng, 132)}",
    )
    yield payment, NOW
    steps = PaymentSteps(payment, rng, at, units, deliveries)
    for phase in _scenario(steps, scenario):
        yield payment, phase


def withdrawal_story(rng: random.Random, serial: int, at: datetime) -> Iterator[tuple[Any, str]]:
    provider = _pick(rng, PROVIDERS)
    currency = _pick(rng, CURRENCIES)
    units = rng.randint(*UNITS[currency])
    CLOCK.now = at
    withdrawal = Withdrawal.request(
        provider=provider,
        request_id=f"withdrawal-{serial:09d}",
        amount=Money.of(_amount(units, currency), currency),
        address=f"T{_hex(rng, 132)}",
        customer_id=f"customer-{rng.randrange(CUSTOMERS)}",
    )
    yield withdrawal, NOW
    ref = f"{provider}-w{serial}"
    at += timedelta(seconds=rng.uniform(1, 5))
    CLOCK.now = at
    withdrawal.submit(ref, "accepted", fee_network=_amount(units // 100, currency))
    yield withdrawal, NOW
    scenario = _pick(rng, WITHDRAWAL_SCENARIOS)
    moves = {
        "completed": [ProviderWithdrawalOutcome.PROCESSING, ProviderWithdrawalOutcome.COMPLETED],
        "failed": [ProviderWithdrawalOutcome.FAILED],
        "manual_review": [ProviderWithdrawalOutcome.MANUAL_REVIEW],
    }[scenario]
    for outcome in moves:
        at += timedelta(minutes=rng.uniform(1, 30))
        CLOCK.now = at
        withdrawal.record_delivery(
            delivery_document(rng, provider, at, "withdrawal", outcome.value, verified=True)
        )
        update = WithdrawalUpdate(
            WithdrawalReference(provider, provider_ref=ref),
            outcome.value,
            outcome,
            tx_hash=f"0x{_hex(rng, 256)}"
            if outcome is ProviderWithdrawalOutcome.COMPLETED
            else None,
            failure_reason="rejected by provider"
            if outcome is ProviderWithdrawalOutcome.FAILED
            else None,
        )
        withdrawal.apply_update(update, verified=True)
        yield withdrawal, NOW


def _record(stream: str, event_type: str, document: dict[str, Any]) -> Row:
    """A record event (no aggregate); its version is given in log order by the main process."""
    return (stream, None, event_type, dumps_canonical(document), {"record": True})


def _records(rng: random.Random, at: datetime) -> list[Row]:
    provider = _pick(rng, PROVIDERS)
    currency = _pick(rng, CURRENCIES)
    units = rng.randint(*UNITS[currency])
    found = []
    if rng.random() < UNMATCHED_SHARE:
        key = f"{provider}:{_hex(rng, 64)}"
        document = {
            "provider": provider,
            "dedupe_key": key,
            "received_at": at,
            "verification": {"outcome": "verified", "scheme": "hmac-sha256", "reason": ""},
            "deposits": [
                {"amount": _amount(units, currency), "currency": currency, "confirmed": True}
            ],
            "body": json.dumps({"id": key, "status": "paid"}),
        }
        found.append(_record(f"unmatched-{provider}", "Delivery.Unmatched", document))
    if rng.random() < BALANCE_SHARE:
        document = {
            "currency": currency,
            "available": _amount(units * 40, currency),
            "verified": True,
        }
        found.append(_record(f"provider-balances-{provider}", "ProviderBalance.Reported", document))
    return found


def _encoded(aggregate: Any) -> list[Row]:
    name = "Payment" if isinstance(aggregate, Payment) else "Withdrawal"
    return [
        (e.stream_id, e.version, e.type, e.payload, e.metadata)
        for e in encode_pending(aggregate, name)
    ]


def log_chunk(seed: int, chunk: int, histories: int) -> tuple[list[Row], list[Row]]:
    """Events of `histories` histories interleaved at random, and the events that happen days
    later (kept apart; the main process appends them some chunks further on)."""
    rng = random.Random(seed * 1_000_003 + chunk)
    stories: list[Iterator[tuple[Any, str]]] = []
    for number in range(histories):
        serial = chunk * histories + number
        at = LOG_START + timedelta(seconds=30 * serial)
        if rng.random() < WITHDRAWAL_SHARE:
            stories.append(withdrawal_story(rng, serial, at))
        else:
            scenario = _pick(rng, PAYMENT_SCENARIOS)
            stories.append(payment_story(rng, serial, at, scenario, deliveries=True))
    now: list[Row] = []
    later: list[Row] = []
    active = list(range(histories))
    while active:
        pick = rng.randrange(len(active))
        try:
            aggregate, phase = next(stories[active[pick]])
        except StopIteration:
            active[pick] = active[-1]
            active.pop()
            now.extend(_records(rng, CLOCK.now))
            continue
        (later if phase == LATER else now).extend(_encoded(aggregate))
    return now, later


# ------------------------------------------------------------------------------ part 2: rows

PAYMENT_COLUMNS = [
    "payment_id",
    "provider",
    "provider_ref",
    "order_id",
    "customer_id",
    "status",
    "coverage",
    "late",
    "expected_currency",
    "expected_amount",
    "received",
    "expires_at",
    "created_at",
    "updated_at",
    "version",
    "view",
]
# The projection's own insert columns: the bench fills the table the way it does.
ITEM_COLUMNS = INSERT_COLUMNS


def _item(
    payment: Payment,
    finding: Finding,
    position: int,
    detected_at: datetime,
    cleared_at: datetime | None,
) -> Row:
    return (
        "payment",
        str(payment.id),
        finding.reason.value,
        position,
        payment.provider,
        finding.currency,
        finding.expected,
        finding.received,
        finding.provider_reported,
        finding.difference,
        detected_at,
        position + 8 if cleared_at else position,
        cleared_at,
        position + 8 if cleared_at else None,
    )


def payments_chunk(
    seed: int, first: int, count: int, months: int
) -> tuple[list[Row], list[Row], Counter[str]]:
    """Rows of payments_view (by _payment_row) and of reconciliation_items (by payment_findings:
    the findings before a later settlement, and those of the final state)."""
    rng = random.Random(seed * 1_000_003 + first)
    start = QUERY_END - timedelta(days=30 * months)
    span = QUERY_END - start
    rows: list[Row] = []
    items: list[Row] = []
    scenarios: Counter[str] = Counter()
    for serial in range(first, first + count):
        scenario = _pick(rng, PAYMENT_SCENARIOS)
        scenarios[scenario] += 1
        if scenario == "open":  # still under way: created in the last hours
            at = QUERY_END - timedelta(hours=rng.uniform(1, 12))
        else:
            at = start + span * rng.random() * 0.99
        payment: Any = None
        before: tuple[dict[Reason, Finding], datetime] | None = None
        for payment, phase in payment_story(rng, serial, at, scenario, deliveries=False):
            if phase == CHECKPOINT:
                before = (payment_findings(payment), payment.modified_on)
        final = payment_findings(payment)
        row = _payment_row(payment)
        rows.append((*row[:-1], json.dumps(row[-1])))
        position = serial * 16
        if before is not None:
            for number, (reason, finding) in enumerate(before[0].items()):
                cleared = None if reason in final else payment.modified_on
                items.append(
                    _item(
                        payment, final.get(reason, finding), position + number, before[1], cleared
                    )
                )
        for number, (reason, finding) in enumerate(final.items(), start=4):
            if before is None or reason not in before[0]:
                items.append(_item(payment, finding, position + number, payment.modified_on, None))
    return rows, items, scenarios


# ------------------------------------------------------------------------------------ helpers


def now_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def code_facts() -> str:
    """Where the measured code was imported from, and its commit when that is a git checkout
    (the figures are for that code: run against a `git archive` snapshot to pin a commit)."""
    root = Path(sys.modules[Payment.__module__].__file__ or ".").resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--",
                "ledger",
                "projections",
                "adapters",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return f"code from {root} (not a git checkout)"
    changed = [line[3:] for line in status if line[:2].strip() == "M"]
    dirty = f" with uncommitted changes in {', '.join(changed)}" if changed else ""
    return f"code from {root}, git {head}{dirty}"


@dataclass
class Timed:
    """A projection whose apply() time is summed, so that the rest (reading the batch, the
    runner's position row) shows apart."""

    inner: Projection
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def tables(self) -> tuple[str, ...]:
        return self.inner.tables

    @property
    def reads(self) -> tuple[str, ...] | None:
        return self.inner.reads

    def __getattr__(self, name: str) -> Any:  # `derive`, for the runner's shared fold
        return getattr(self.inner, name)

    async def apply(self, connection: AnyConnection, events: list[RecordedEvent]) -> None:
        started = perf_counter()
        await self.inner.apply(connection, events)
        self.seconds += perf_counter() - started

    def forget(self) -> None:
        self.inner.forget()


class Nothing:
    name = "nothing"
    tables: tuple[str, ...] = ()
    reads: tuple[str, ...] | None = None  # every event: the runner reading the whole log

    async def apply(self, connection: AnyConnection, events: list[RecordedEvent]) -> None:
        pass

    def forget(self) -> None:
        pass


def count_reloads(projection: Any) -> Counter[str]:
    """Counts the streams a projection reloads because its cache did not hold the aggregate."""
    states = projection._states  # noqa: SLF001 - a bench's probe
    load = states._load_before  # noqa: SLF001

    async def counted(stream_id: str, before: int) -> list[RecordedEvent]:
        events = await load(stream_id, before)
        counter["streams"] += 1
        counter["events"] += len(events)
        return events

    counter: Counter[str] = Counter()
    states._load_before = counted  # noqa: SLF001
    return counter


# ------------------------------------------------------------------------------ part 1: catch-up


@dataclass
class Catchup:
    args: argparse.Namespace
    pool: asyncpg.Pool
    executor: ProcessPoolExecutor
    events: int = 0
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    async def generate(self) -> None:
        args = self.args
        loop = asyncio.get_running_loop()
        futures: deque[asyncio.Future[tuple[list[Row], list[Row]]]] = deque()
        chunks = iter(range(sys.maxsize))

        def submit() -> None:
            chunk = next(chunks)
            futures.append(
                loop.run_in_executor(self.executor, log_chunk, args.seed, chunk, args.chunk)
            )

        for _ in range(args.log_workers + 1):
            submit()
        writer = LogWriter(PostgresEventStore(self.pool), args.events, args.append_batch)
        later: deque[list[Row]] = deque()
        merge_rng = random.Random(args.seed)
        waited = 0.0
        started = perf_counter()
        while not writer.full:
            mark = perf_counter()
            now, deferred = await futures.popleft()
            waited += perf_counter() - mark
            submit()
            later.append(deferred)
            released = later.popleft() if len(later) > args.later_chunks else []
            for row in _merge(merge_rng, now, released):
                await writer.add(row)
                if writer.full:
                    break
        await writer.flush()
        elapsed = perf_counter() - started
        for future in futures:
            future.cancel()
        self.events = writer.appended
        self.say(
            f"generation: {self.events:,} events in {elapsed:.1f} s = "
            f"{rate(self.events, elapsed):,.0f} events/s ({args.log_workers} worker process(es) "
            f"making histories; the main process spent {writer.seconds:.1f} s in append and "
            f"{waited:.1f} s waiting for workers; {writer.payload_bytes / self.events:,.0f} "
            f"payload bytes/event; {now_load()})"
        )
        self.say("  event mix: " + ", ".join(f"{k} {v:,}" for k, v in writer.types.most_common()))
        started = perf_counter()
        async with self.pool.acquire() as connection:
            await connection.execute("VACUUM (ANALYZE) events")
            await connection.execute("CHECKPOINT")
            size = await connection.fetchval("SELECT pg_total_relation_size('events')")
        self.say(
            f"  VACUUM ANALYZE + CHECKPOINT {perf_counter() - started:.1f} s; events table "
            f"{size / 2**20:,.0f} MiB with indexes"
        )

    async def read_log(self) -> float:
        """The baseline: fetch_batch over the whole log, nothing done with the events."""
        from adapters.storage.postgres_store import fetch_batch  # noqa: PLC0415

        started = perf_counter()
        seen = after = 0
        async with self.pool.acquire() as connection:
            while batch := await fetch_batch(
                connection, 0, after=after, limit=self.args.batch_size
            ):
                seen += len(batch)
                after = batch[-1].position
        elapsed = perf_counter() - started
        assert seen == self.events, (seen, self.events)
        return rate(seen, elapsed)

    async def catch_up(self, projections: list[Projection]) -> tuple[float, str]:
        """Events per second from position 0 to the head, and what the time went to."""
        timed = [Timed(p) for p in projections]
        reloads = [count_reloads(p) for p in projections if not isinstance(p, Nothing)]
        runner = ProjectionRunner(self.pool, timed, batch_size=self.args.batch_size)
        started = perf_counter()
        done = await runner.catch_up()
        elapsed = perf_counter() - started
        assert done == self.events * len(projections), (done, self.events, len(projections))
        applying = sum(t.seconds for t in timed)
        streams = sum(r["streams"] for r in reloads)
        reloaded = sum(r["events"] for r in reloads)
        notes = (
            f"{elapsed:.1f} s; apply() {100 * applying / elapsed:.0f}% of it; {streams:,} cache "
            f"misses reloaded {reloaded:,} events"
        )
        return rate(self.events, elapsed), notes

    async def reset_read_models(self) -> None:
        tables = [t for p in all_projections() for t in p.tables]
        await self.pool.execute(f"TRUNCATE {', '.join(tables)}")
        await self.pool.execute("DELETE FROM projection_positions")

    async def run(self) -> None:
        """Reads the log before and after every catch-up; each catch-up's ratio is against the
        mean of the two reads around it, so that drift of the machine falls on both sides."""
        args = self.args
        self.say(f"== 1. projection catch-up (batch size {args.batch_size}) ==")
        await self.generate()
        cold = await self.read_log()
        self.say(f"read, first pass (warms caches): {cold:,.0f} events/s")
        reads = [await self.read_log()]
        self.say(f"read: {reads[-1]:,.0f} events/s ({now_load()})")
        # Made as each run starts, so no run carries an earlier run's caches (20,000 states
        # each) in its heap: the collector's full passes would walk them too.
        runs: list[tuple[str, Callable[[], list[Projection]]]] = [
            ("runner with a no-op projection", lambda: [Nothing()]),
            ("subjects", lambda: [SubjectsView()]),
            ("journal", lambda: [JournalProjection()]),
            ("reconciliation", lambda: [ReconciliationProjection()]),
            ("all three, one runner (read models emptied first)", all_projections),
        ]
        rows = []
        for label, made in runs:
            projections = made()
            if len(projections) > 1:
                await self.reset_read_models()
            value, notes = await self.catch_up(projections)
            del projections
            gc.collect()
            reads.append(await self.read_log())
            baseline = (reads[-2] + reads[-1]) / 2
            self.say(
                f"{label}: {value:,.0f} events/s ({notes}); read after it {reads[-1]:,.0f} "
                f"events/s; ratio to the reads around it {value / baseline:.3f} ({now_load()})"
            )
            rows.append((label, value, baseline))
        self.say("")
        self.say(
            f"| Over the whole log ({self.events:,} events) | events/s | read baseline around "
            f"it (fetch_batch, {args.batch_size}/call, no work) | ratio |"
        )
        self.say("|---|---:|---:|---:|")
        for label, value, baseline in rows:
            self.say(f"| {label} | {value:,.0f} | {baseline:,.0f} | {value / baseline:.3f} |")
        self.say(
            f"\nreads of the log, in order: {', '.join(f'{r:,.0f}' for r in reads)} events/s "
            f"(max/min {max(reads) / min(reads):.2f})"
        )
        self.say("")


@dataclass
class LogWriter:
    """Appends rows in order, `batch` events of many streams per append, up to `limit` events;
    record events get their stream's next version here, in log order."""

    store: PostgresEventStore
    limit: int
    batch: int
    appended: int = 0
    seconds: float = 0.0
    payload_bytes: int = 0
    pending: list[NewEvent] = field(default_factory=list)
    record_versions: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)

    @property
    def full(self) -> bool:
        return self.appended + len(self.pending) >= self.limit

    async def add(self, row: Row) -> None:
        stream, number, kind, payload, metadata = row
        if number is None:
            self.record_versions[stream] += 1
            number = self.record_versions[stream]
        self.pending.append(NewEvent(stream, number, kind, payload, metadata))
        self.types[kind.partition(".")[0]] += 1
        self.payload_bytes += len(payload)
        if len(self.pending) >= self.batch:
            await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        expected: dict[str, int] = {}
        for event in self.pending:
            expected.setdefault(event.stream_id, event.version - 1)
        started = perf_counter()
        self.appended += len(await self.store.append(self.pending, expected_versions=expected))
        self.seconds += perf_counter() - started
        self.pending = []


def _merge(rng: random.Random, first: list[Row], second: list[Row]) -> Iterator[Row]:
    """Both lists interleaved at random, each in its own order."""
    i = j = 0
    while i < len(first) or j < len(second):
        left = len(first) - i
        if rng.random() * (left + len(second) - j) < left:
            yield first[i]
            i += 1
        else:
            yield second[j]
            j += 1


# ------------------------------------------------------------------------------ part 2: queries


@dataclass
class Request:
    kind: str
    url: str
    page: int  # 0 for the first page of a chain
    from_cursor: bool  # the chain began at a cursor in the middle of the range
    sql: str = ""
    params: tuple[Any, ...] = ()
    rows: int = 0


class RecordingPool:
    """Stands in for the app's pool during the warm-up pass and keeps each query it runs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        self.calls.append((sql, params))
        return await self.pool.fetch(sql, *params)


def _instant(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


Cursor = Callable[[dict[str, Any]], str]


@dataclass
class QueryKinds:
    rng: random.Random
    payments: int
    months: int
    statuses: list[str]

    @property
    def start(self) -> datetime:
        return QUERY_END - timedelta(days=30 * self.months)

    def instant(self, query: dict[str, Any], low: str, high: str) -> datetime:
        """An instant inside the query's time window (else inside the whole span)."""
        begin = datetime.fromisoformat(query[low]) if low in query else self.start
        end = datetime.fromisoformat(query[high]) if high in query else QUERY_END
        return begin + (end - begin) * self.rng.random()

    def payments_cursor(self, query: dict[str, Any]) -> str:
        moment = self.instant(query, "created_from", "created_to")
        return encode_cursor(moment, uuid.UUID(int=2**128 - 1))

    def items_cursor(self, query: dict[str, Any]) -> str:
        return encode_cursor(self.instant(query, "from", "to"), 2**62, "payment", "~", "~")

    def kinds(self) -> dict[str, tuple[Callable[[], dict[str, Any]], Cursor | None]]:
        """Query kind: (first-page parameters, a cursor in the middle of the range, or None
        for kinds of one page)."""
        rng = self.rng
        providers = list(PROVIDERS)

        def window(days: int) -> tuple[str, str]:
            begin = self.start + (QUERY_END - self.start - timedelta(days=days)) * rng.random()
            return _instant(begin), _instant(begin + timedelta(days=days))

        def created() -> dict[str, Any]:
            begin, end = window(1)
            return {"created_from": begin, "created_to": end}

        def detected() -> dict[str, Any]:
            begin, end = window(7)
            return {"from": begin, "to": end}

        payments, items = self.payments_cursor, self.items_cursor
        return {
            "payments ?provider=&status=": (
                lambda: {"provider": rng.choice(providers), "status": rng.choice(self.statuses)},
                payments,
            ),
            "payments ?coverage=partial": (lambda: {"coverage": "partial"}, payments),
            "payments ?order_id=": (
                lambda: {"order_id": order_id(rng.randrange(self.payments))},
                None,
            ),
            "payments ?created_from=&created_to= (1 day)": (created, payments),
            "payments ?customer_id=": (
                lambda: {"customer_id": f"customer-{rng.randrange(CUSTOMERS)}"},
                None,
            ),
            "items ?reason=underpaid": (lambda: {"reason": "underpaid"}, items),
            "items ?provider=": (lambda: {"provider": rng.choice(providers)}, items),
            "items ?from=&to= (7 days)": (detected, items),
        }


@dataclass
class Latency:
    http: list[float] = field(default_factory=list)
    sql: list[float] = field(default_factory=list)


class Queries:
    def __init__(self, args: argparse.Namespace, pool: asyncpg.Pool, dsn: str) -> None:
        self.args = args
        self.pool = pool
        self.dsn = dsn
        self.lines: list[str] = []
        self.wide_scans: list[str] = []

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    async def populate(self, executor: ProcessPoolExecutor) -> None:
        args = self.args
        loop = asyncio.get_running_loop()
        connection = await asyncpg.connect(
            self.dsn, server_settings={"search_path": QUERIES_SCHEMA}
        )
        try:
            definitions = await connection.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1"
                " AND tablename IN ('payments_view', 'reconciliation_items')"
                " AND indexname NOT LIKE '%_pkey'",
                QUERIES_SCHEMA,
            )
            for definition in definitions:
                await connection.execute(f'DROP INDEX "{definition["indexname"]}"')
            started = perf_counter()
            chunks = [
                (first, min(args.rows_chunk, args.payments - first))
                for first in range(0, args.payments, args.rows_chunk)
            ]
            pending = deque(
                loop.run_in_executor(executor, payments_chunk, args.seed, first, count, args.months)
                for first, count in chunks
            )
            payments = items = 0
            scenarios: Counter[str] = Counter()
            copying = 0.0
            while pending:
                rows, item_rows, counts = await pending.popleft()
                mark = perf_counter()
                await connection.copy_records_to_table(
                    "payments_view", records=rows, columns=PAYMENT_COLUMNS
                )
                await connection.copy_records_to_table(
                    "reconciliation_items", records=item_rows, columns=ITEM_COLUMNS
                )
                copying += perf_counter() - mark
                payments += len(rows)
                items += len(item_rows)
                scenarios += counts
            made = perf_counter() - started
            mark = perf_counter()
            for definition in definitions:
                await connection.execute(definition["indexdef"])
            await connection.execute("VACUUM (ANALYZE) payments_view")
            await connection.execute("VACUUM (ANALYZE) reconciliation_items")
            await connection.execute("CHECKPOINT")
            indexing = perf_counter() - mark
            await self._describe(connection, payments, items, scenarios)
        finally:
            await connection.close()
        self.say(
            f"population: {payments:,} payments and {items:,} items in {made:.1f} s "
            f"({rate(payments, made):,.0f} payments/s; COPY {copying:.1f} s of it), then "
            f"{len(definitions)} indexes re-created + VACUUM ANALYZE in {indexing:.1f} s "
            f"({now_load()})"
        )

    async def _describe(
        self, connection: asyncpg.Connection, payments: int, items: int, scenarios: Counter[str]
    ) -> None:
        with_items = await connection.fetchval(
            "SELECT count(DISTINCT subject_id) FROM reconciliation_items"
        )
        self.say(
            f"data: {payments:,} payments, {items:,} reconciliation items on {with_items:,} "
            f"payments ({100 * with_items / payments:.1f}%)"
        )
        self.say("  scenarios: " + ", ".join(f"{k} {v:,}" for k, v in scenarios.most_common()))
        for column in ("status", "coverage", "provider"):
            counts = await connection.fetch(
                f"SELECT {column} AS value, count(*) AS n FROM payments_view"
                " GROUP BY 1 ORDER BY 2 DESC"
            )
            self.say(
                f"  payments by {column}: " + ", ".join(f"{r['value']} {r['n']:,}" for r in counts)
            )
        counts = await connection.fetch(
            "SELECT reason, count(*) FILTER (WHERE cleared_at IS NULL) AS open,"
            " count(*) FILTER (WHERE cleared_at IS NOT NULL) AS cleared"
            " FROM reconciliation_items GROUP BY 1 ORDER BY 2 DESC"
        )
        self.say(
            "  items by reason (open/cleared): "
            + ", ".join(f"{r['reason']} {r['open']:,}/{r['cleared']:,}" for r in counts)
        )
        for table in ("payments_view", "reconciliation_items"):
            size = await connection.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            heap = await connection.fetchval("SELECT pg_relation_size($1::regclass)", table)
            self.say(
                f"  {table}: {size / 2**20:,.0f} MiB with indexes ({heap / 2**20:,.0f} MiB heap)"
            )

    @contextlib.asynccontextmanager
    async def served(self) -> AsyncIterator[tuple[web.Application, str]]:
        settings = Settings(
            api={"tokens": [{"name": "bench", "token": TOKEN, "scopes": ["admin"]}]},
            expiry_sweep_seconds=0,
            balance_poll_seconds=0,
            projections_worker="off",
        )
        app = init_app(settings, store=PostgresEventStore(self.pool), adapters={})
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield app, f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()

    async def plan(
        self, http: aiohttp.ClientSession, base: str, app: web.Application
    ) -> list[Request]:
        """The warm-up pass: follows cursors, records the URL of every page and the SQL it ran."""
        args = self.args
        statuses = [
            r["status"] for r in await self.pool.fetch("SELECT DISTINCT status FROM payments_view")
        ]
        kinds = QueryKinds(random.Random(args.seed), args.payments, args.months, sorted(statuses))
        recorder = RecordingPool(self.pool)
        real_pool = app[RUNNER].pool
        app[RUNNER].pool = recorder  # type: ignore[assignment]
        requests: list[Request] = []
        try:
            for kind, (parameters, cursor) in kinds.kinds().items():
                count = 0
                # No index serves customer_id: each request reads the whole table, so fewer.
                samples = max(5, args.samples // 10) if "customer_id" in kind else args.samples
                while count < samples:
                    query = {**parameters(), "limit": 50}
                    from_cursor = cursor is not None and kinds.rng.random() < 0.5
                    if from_cursor and cursor is not None:
                        query["cursor"] = cursor(query)
                    path = (
                        "/v1/payments?"
                        if kind.startswith("payments")
                        else "/v1/reconciliation/items?"
                    )
                    url: str | None = path + urlencode(query)
                    page = 0
                    while url is not None and page < args.pages and count < samples:
                        async with http.get(
                            base + url, headers={"Authorization": f"Bearer {TOKEN}"}
                        ) as reply:
                            body = await reply.json()
                            assert reply.status == 200, (reply.status, body)
                        sql, params = recorder.calls[-1]
                        assert len(recorder.calls) == len(requests) + 1
                        requests.append(
                            Request(kind, url, page, from_cursor, sql, params, len(body["items"]))
                        )
                        count += 1
                        page += 1
                        url = _with_cursor(url, body["next_cursor"])
        finally:
            app[RUNNER].pool = real_pool
        return requests

    async def measure(
        self, http: aiohttp.ClientSession, base: str, requests: list[Request]
    ) -> dict[str, Latency]:
        latencies: dict[str, Latency] = {}
        headers = {"Authorization": f"Bearer {TOKEN}"}

        async def over_http(request: Request) -> float:
            started = perf_counter()
            async with http.get(base + request.url, headers=headers) as reply:
                await reply.read()
            elapsed = perf_counter() - started
            assert reply.status == 200, reply.status
            return elapsed

        async def over_sql(request: Request) -> float:
            started = perf_counter()
            await self.pool.fetch(request.sql, *request.params)
            return perf_counter() - started

        for kind in dict.fromkeys(r.kind for r in requests):
            these = [r for r in requests if r.kind == kind]
            latency = latencies.setdefault(kind, Latency())
            for side in ("http", "sql", "sql", "http"):  # A B B A
                measure = over_http if side == "http" else over_sql
                samples = [await measure(r) for r in these]
                getattr(latency, side).extend(samples)
        return latencies

    async def explain(self, requests: list[Request]) -> None:
        leading = {
            r["index"]: r["column"]
            for r in await self.pool.fetch(
                "SELECT c.relname AS index, a.attname AS column FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
                " WHERE n.nspname = $1",
                QUERIES_SCHEMA,
            )
        }
        self.say("")
        self.say(
            "EXPLAIN (ANALYZE, BUFFERS) with the parameters of a recorded request, each run once"
            " before: the custom plan, then the generic plan (what a prepared statement may"
            " switch to after 5 executions). Rows are totals over parallel workers."
        )
        for kind in dict.fromkeys(r.kind for r in requests):
            these = [r for r in requests if r.kind == kind]
            first = next((r for r in these if r.page == 0 and not r.from_cursor), these[0])
            cursored = [r for r in these if "cursor" in r.url]
            for label, request in (
                ("page 1", first),
                ("cursor page", cursored[-1] if cursored else None),
            ):
                if request is None:
                    continue
                for generic in (False, True):
                    await self._plan(request, generic=generic)  # warms the buffers
                    plan = await self._plan(request, generic=generic)
                    summary, wide = summarize(plan, leading)
                    which = f"{label}, {'generic' if generic else 'custom'}"
                    self.say(f"  {kind}, {which}: {summary}")
                    self.wide_scans += [f"{kind} ({which}): {w}" for w in wide]

    async def _plan(self, request: Request, *, generic: bool) -> dict[str, Any]:
        explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
        async with self.pool.acquire() as connection:
            if not generic:
                document = await connection.fetchval(explain + request.sql, *request.params)
            else:
                literals = ", ".join(_literal(p) for p in request.params)
                await connection.execute("SET plan_cache_mode = force_generic_plan")
                await connection.execute(f"PREPARE bench_generic AS {request.sql}")
                try:
                    document = await connection.fetchval(
                        f"{explain}EXECUTE bench_generic({literals})"
                    )
                finally:
                    await connection.execute("DEALLOCATE bench_generic")
                    await connection.execute("RESET plan_cache_mode")
        plan: dict[str, Any] = (json.loads(document) if isinstance(document, str) else document)[0]
        return plan

    async def generic_plans(self) -> None:
        """Whether PostgreSQL switched the app's prepared statements to generic plans."""
        connections = [await self.pool.acquire() for _ in range(self.pool.get_size())]
        try:
            counts: Counter[str] = Counter()
            for connection in connections:
                for row in await connection.fetch(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE 'SELECT %FROM payments_view%'"
                    " OR statement LIKE 'SELECT %FROM reconciliation_items%'"
                ):
                    counts["generic"] += row["generic_plans"]
                    counts["custom"] += row["custom_plans"]
        finally:
            for connection in connections:
                await self.pool.release(connection)
        self.say(
            f"prepared statements of the queries: {counts['custom']:,} custom plans, "
            f"{counts['generic']:,} generic plans"
        )

    def report(self, requests: list[Request], latencies: dict[str, Latency]) -> None:
        self.say("")
        self.say(
            "| Query kind (limit=50) | requests | rows/page | HTTP p50 | HTTP p99 | HTTP mean "
            "| SQL p50 | SQL p99 | SQL mean | HTTP/SQL (mean) "
            "| HTTP p50 first pages / cursor pages |"
        )
        self.say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for kind, latency in latencies.items():
            these = [r for r in requests if r.kind == kind]
            rows = statistics.mean(r.rows for r in these)
            ms = [1000 * x for x in latency.http]
            sql = [1000 * x for x in latency.sql]
            n = len(these)
            # The HTTP samples are two passes over `these`, in order.
            firsts = [
                ms[i + n * k]
                for k in range(2)
                for i, r in enumerate(these)
                if "cursor" not in r.url
            ]
            cursors = [
                ms[i + n * k] for k in range(2) for i, r in enumerate(these) if "cursor" in r.url
            ]
            split = (
                f"{statistics.median(firsts):.2f} / {statistics.median(cursors):.2f}"
                if firsts and cursors
                else "-"
            )
            self.say(
                f"| {kind} | {n:,} | {rows:.1f} | {statistics.median(ms):.2f} ms "
                f"| {percentile(ms, 0.99):.2f} ms | {statistics.mean(ms):.2f} ms "
                f"| {statistics.median(sql):.2f} ms | {percentile(sql, 0.99):.2f} ms "
                f"| {statistics.mean(sql):.2f} ms "
                f"| {statistics.mean(ms) / statistics.mean(sql):.2f} "
                f"| {split} ms |"
            )

    async def run(self, executor: ProcessPoolExecutor) -> None:
        self.say(f"== 2. query latency ({self.args.payments:,} payments) ==")
        await self.populate(executor)
        timeout = aiohttp.ClientTimeout(total=120)
        async with self.served() as (app, base), aiohttp.ClientSession(timeout=timeout) as http:
            started = perf_counter()
            requests = await self.plan(http, base, app)
            self.say(
                f"warm-up pass: {len(requests):,} requests in {perf_counter() - started:.1f} s"
            )
            latencies = await self.measure(http, base, requests)
        self.report(requests, latencies)
        await self.generic_plans()
        await self.explain(requests)
        self.say("")
        if self.wide_scans:
            self.say(
                "Scans that read far more than they return (sequential scans; index scans whose"
                " leading column is not constrained; filters removing over 10,000 rows):"
            )
            for line in self.wide_scans:
                self.say(f"  {line}")
        else:
            self.say("No scan in the plans above reads far more than it returns.")


def summarize(plan: dict[str, Any], leading: dict[str, str]) -> tuple[str, list[str]]:
    """One line for an EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) plan, and the scans in it that
    read far more than they return. `leading` maps index names to their first column."""
    nodes: list[str] = []
    wide: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node["Node Type"]
        loops = node.get("Actual Loops", 1)
        rows = round(node.get("Actual Rows", 0) * loops)
        removed = round(
            (node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0))
            * loops
        )
        index = node.get("Index Name")
        name = f"{kind} {index or node.get('Relation Name', '')}".strip()
        details = [f"rows {rows:,}"]
        if removed:
            details.append(f"removed by filter {removed:,}")
        if "Scan" in kind:
            blocks = node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)
            details.append(f"{blocks:,} blocks")
        condition = node.get("Index Cond", "")
        if condition:
            details.append(f"cond {_short(condition)}")
        if loops > 1:
            details.append(f"{loops} processes")
        nodes.append(f"{name} [{', '.join(details)}]")
        if kind == "Seq Scan":
            wide.append(
                f"Seq Scan on {node['Relation Name']} read {rows + removed:,} rows to return "
                f"{rows:,} (filter: {_short(node.get('Filter', ''))})"
            )
        elif index and leading.get(index, "") not in condition:
            wide.append(
                f"{kind} of the whole index {index} (its leading column {leading.get(index)} is"
                f" not in the condition: {_short(condition) or 'none'}); {rows:,} rows"
            )
        elif removed > 10_000:
            wide.append(f"{name} read {rows + removed:,} rows to return {rows:,}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return f"{' > '.join(nodes)}; {plan['Execution Time']:.2f} ms", wide


def _short(condition: str) -> str:
    """An index condition without casts and schema names, for a one-line plan."""
    for noise in (
        "::timestamp with time zone",
        "::text",
        "::uuid",
        "::bigint",
        f"{QUERIES_SCHEMA}.",
    ):
        condition = condition.replace(noise, "")
    return condition


def _literal(value: Any) -> str:
    """A parameter as an SQL literal, for EXECUTE of a statement whose types PREPARE inferred."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


def _with_cursor(url: str, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    parts = urlsplit(url)
    query = [p for p in parts.query.split("&") if not p.startswith("cursor=")]
    query.append(urlencode({"cursor": cursor}))
    return urlunsplit(("", "", parts.path, "&".join(query), ""))


# ------------------------------------------------------------------------------------ running


@dataclass(frozen=True, slots=True)
class Target:
    dsn: str
    database: str
    own_database: bool  # a ledger_bench* database, made and dropped by the bench


def target_of(dsn: str) -> Target:
    database = urlsplit(dsn).path.lstrip("/") or "postgres"
    if database == "test":
        raise SystemExit("refusing the `test` database: give a dedicated one (e.g. ledger_bench)")
    return Target(dsn, database, database.startswith("ledger_bench"))


def _admin_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))


async def prepare(target: Target, schemas: Sequence[str]) -> None:
    if target.own_database:
        admin = await asyncpg.connect(_admin_dsn(target.dsn))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{target.database}"')
        finally:
            await admin.close()
    connection = await asyncpg.connect(target.dsn)
    try:
        for schema in schemas:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await connection.execute(f'CREATE SCHEMA "{schema}"')
            await connection.execute(f'SET search_path TO "{schema}"')
            await migrate(connection)
            await connection.execute("RESET search_path")
    finally:
        await connection.close()


async def clean_up(target: Target, schemas: Sequence[str]) -> None:
    if target.own_database:
        admin = await asyncpg.connect(_admin_dsn(target.dsn))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
        finally:
            await admin.close()
        return
    connection = await asyncpg.connect(target.dsn)
    try:
        for schema in schemas:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def server_facts(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        server = await connection.fetchval("SELECT version()")
        settings = [
            f"{name}={await connection.fetchval(f'SHOW {name}')}"
            for name in ("shared_buffers", "work_mem", "fsync", "synchronous_commit", "jit")
        ]
    finally:
        await connection.close()
    return f"{server}; {', '.join(settings)}"


@contextlib.contextmanager
def workers(count: int) -> Iterator[ProcessPoolExecutor]:
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(count, mp_context=context, initializer=_worker_init)
    try:
        yield executor
    finally:
        executor.shutdown(cancel_futures=True)


async def run(args: argparse.Namespace) -> None:
    target = target_of(args.dsn)
    schemas = {"catch-up": [CATCHUP_SCHEMA], "queries": [QUERIES_SCHEMA]}.get(
        args.part, [CATCHUP_SCHEMA, QUERIES_SCHEMA]
    )
    await prepare(target, schemas)
    print(f"PostgreSQL: {await server_facts(target.dsn)}")
    print(
        f"Python {sys.version.split()[0]}, asyncpg {version('asyncpg')}, aiohttp "
        f"{version('aiohttp')}, eventsourcing {version('eventsourcing')}; {os.cpu_count()} cpus; "
        f"{code_facts()}; database {target.database}; {now_load()}",
        flush=True,
    )
    try:
        if args.part in {"all", "catch-up"}:
            pool = await create_pool(target.dsn, schema=CATCHUP_SCHEMA, min_size=2, max_size=4)
            try:
                with workers(args.log_workers) as executor:
                    await Catchup(args, pool, executor).run()
            finally:
                await pool.close()
        if args.part in {"all", "queries"}:
            pool = await create_pool(target.dsn, schema=QUERIES_SCHEMA, min_size=4, max_size=4)
            try:
                with workers(args.row_workers) as executor:
                    await Queries(args, pool, target.dsn).run(executor)
            finally:
                await pool.close()
    finally:
        if not args.keep:
            await clean_up(target, schemas)
    print(f"\ndone ({now_load()})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("LEDGER_BENCH_DATABASE_URL") or DEFAULT_DSN,
        help="default: LEDGER_BENCH_DATABASE_URL or %(default)s",
    )
    parser.add_argument("--part", choices=["all", "catch-up", "queries"], default="all")
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="log size (default %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="projection batch size (default %(default)s)"
    )
    parser.add_argument(
        "--append-batch", type=int, default=5000, help="events per append (default %(default)s)"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=2000,
        help="histories interleaved per chunk (default %(default)s)",
    )
    parser.add_argument(
        "--later-chunks",
        type=int,
        default=15,
        help="chunks between a history and its settlement (default %(default)s)",
    )
    parser.add_argument(
        "--payments",
        type=int,
        default=1_000_000,
        help="payments for the queries (default %(default)s)",
    )
    parser.add_argument(
        "--months", type=int, default=6, help="span of created_at (default %(default)s)"
    )
    parser.add_argument(
        "--rows-chunk",
        type=int,
        default=5000,
        help="payments per worker task (default %(default)s)",
    )
    parser.add_argument(
        "--samples", type=int, default=300, help="requests per query kind (default %(default)s)"
    )
    parser.add_argument(
        "--pages", type=int, default=10, help="pages followed per chain (default %(default)s)"
    )
    cpus = os.cpu_count() or 2
    parser.add_argument(
        "--log-workers",
        type=int,
        default=max(1, cpus - 1),
        help="processes making histories while the main one appends (default %(default)s)",
    )
    parser.add_argument(
        "--row-workers",
        type=int,
        default=cpus,
        help="processes making payments_view rows (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the database (or schemas)")
    args = parser.parse_args(argv)
    for name in (
        "events",
        "batch_size",
        "append_batch",
        "chunk",
        "payments",
        "months",
        "rows_chunk",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("samples", "pages", "log_workers", "row_workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])

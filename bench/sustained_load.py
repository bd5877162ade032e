"""Sustained mixed load against `ledger serve` run as a subprocess, then the checks that must hold
after it.

    python -m bench.sustained_load [--seconds 60] [--warm-up 10] [--rate 40] [--concurrency 32]
                                   [--dsn DSN] [--seed 1]

(as a module from the checkout: run as a file, bench/projections.py would shadow the
`projections` package)

The ledger runs as `ledger serve --config <written file>` in its own process (so its RSS is its
own, read from /proc/<pid>/status), on a fresh schema of the database (--dsn, else
LEDGER_BENCH_DATABASE_URL, else LEDGER_TEST_DATABASE_URL, else the local server), with all five
provider sandboxes. Every callback URL points at a capturing receiver in this process, so each
delivery a sandbox sends is held and then posted to the ledger by the load generator, byte for
byte, in an order of its choosing: the deliveries of all payments are in one pool and each
delivery operation takes a random one (reordering within and across payments); some are queued
again (duplicates); some are sent with a corrupted signature (CoinPay, Cryptofuse, Payment
Engine: 401) or, for the providers authenticated by a path token (CoinCoin, LiPayKripto), with a
wrong token once the genuine copy was acknowledged (200, recorded unverified).

The load is open-loop at a fixed rate: every 1/rate s one operation starts (at most
--concurrency in flight; one aiohttp connector of that size), drawn as: a delivery (55%, a read
when the pool is empty), a payment created at a random provider and one of its sandbox's
scenarios run (12%), a payment read (12%), a payments list (8%), a balances read (8%), a
withdrawal (5%: Payment Engine USD or LiPayKripto TRY, 201 or 422 insufficient-funds; half of
the accepted ones get a sandbox scenario). Latency is per endpoint, from the request being sent
to its body read. The first --warm-up seconds are not counted; RSS is read after them and at the
end of the measured window.

Afterwards (all must hold, else exit 1):
  acknowledged  every webhook 200 is one Delivery.Received or .Duplicate receipt, every 401 one
                .Rejected; no answer outside the expected statuses (no 5xx)
  exactly once  each verified dedupe key received once, and recorded once in its subject's
                stream (Payment/Withdrawal.DeliveryRecorded) or held once unmatched
  listed        every payment that got a 201 is on GET /v1/payments
  balanced      over every currency, posted and pending sum to zero in GET /v1/balances
  rebuild       the service stopped, every projection's tables read row for row equal what a
                rebuild from position 0 writes; GET /v1/balances equals the rebuilt balances
  memory        RSS at the end within 20% of RSS after warm-up
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from adapters.config import Settings
from adapters.sandbox.fleet import LOOPBACK, SandboxFleet, sandbox_fleet
from adapters.storage.postgres_store import PostgresEventStore, create_pool
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.runner import ProjectionRunner
from ledger.codec import decode_document

TOKEN = "load-token"
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PROVIDERS = ("coinpay", "coincoin", "cryptofuse", "payment_engine", "lipaykripto")
PRICES = {
    "coinpay": ("100.00", "USDT", {}),
    "coincoin": ("100", "USDT", {}),
    "cryptofuse": ("100.00", "USD", {}),
    "payment_engine": ("100.00", "USD", {}),
    "lipaykripto": ("100.00", "TRY", {}),
}
WITHDRAWALS = (
    ("payment_engine", "1.00", "USD", {"address": "acct_payout_load"}),
    ("lipaykripto", "1.00", "TRY",
     {"address": "TLoadWithdrawalAddress0123456789", "pay_currency": "USDT"}),
)  # fmt: skip
SIGNED_IN_HEADER = {"coinpay": "x-signature", "cryptofuse": "x-webhook-signature",
                    "payment_engine": "x-webhook-signature"}  # fmt: skip
TOKEN_IN_PATH = frozenset({"coincoin", "lipaykripto"})
HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "accept"}
)
RSS_GROWTH_MAX = 0.20
MIX = (("deliver", 55), ("create", 12), ("get", 12), ("list", 8), ("balances", 8), ("withdraw", 5))


# `ledger serve` with the capacity of every count-bounded cache (the aggregate cache, the
# projections' state folds) replaced by argv[1]: tells a cache filling up from a leak.
CAPPED_CACHES = """
import sys
from adapters.storage import aggregate_cache
from adapters.storage.read_models import states
capacity = int(sys.argv.pop(1))
shipped = (aggregate_cache.DEFAULT_CAPACITY, states.CAPACITY)
for module in (aggregate_cache, states):
    for value in list(vars(module).values()):
        init = getattr(value, "__init__", None) if isinstance(value, type) else None
        if getattr(init, "__defaults__", None):
            init.__defaults__ = tuple(capacity if d in shipped else d for d in init.__defaults__)
from adapters.cli.main import main
main(sys.argv[1:])
"""


@dataclass(frozen=True)
class Captured:
    provider: str
    path: str
    headers: dict[str, str]
    body: bytes
    genuine: bool = True


@dataclass
class Options:
    seconds: float = 60.0
    warm_up_seconds: float = 10.0
    rate: float = 40.0
    concurrency: int = 32
    dsn: str | None = None
    seed: int = 1
    duplicate_probability: float = 0.25
    bad_probability: float = 0.15
    cache_capacity: int = 0  # diagnosis: cap the server's in-memory caches (0: as shipped)


@dataclass
class Tally:
    """What the load generator sent and what came back, per endpoint, measured window apart."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    unexpected: list[str] = field(default_factory=list)
    webhook_acks: Counter[int] = field(default_factory=Counter)
    deliveries: Counter[str] = field(default_factory=Counter)
    payments: list[str] = field(default_factory=list)
    withdrawals: list[str] = field(default_factory=list)
    measuring: bool = False
    requests_measured: int = 0
    start_lag_max: float = 0.0
    started_late: int = 0


@dataclass
class Report:
    options: Options
    seconds_measured: float = 0.0
    requests_measured: int = 0
    rows: list[tuple[str, int, float, float, str]] = field(default_factory=list)
    rss_after_warm_up_kib: int = 0
    rss_end_kib: int = 0
    rss_samples_kib: list[int] = field(default_factory=list)  # every 10 s of the window
    deliveries: Counter[str] = field(default_factory=Counter)
    payments: int = 0
    withdrawals: int = 0
    start_lag_max_ms: float = 0.0
    started_late: int = 0
    failures: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests_measured / self.seconds_measured if self.seconds_measured else 0.0

    def text(self) -> str:
        lines = [
            f"target {self.options.rate:.0f} req/s for {self.options.seconds:.0f} s (after "
            f"{self.options.warm_up_seconds:.0f} s warm-up), concurrency {self.options.concurrency}"
            + (f", server caches capped at {self.options.cache_capacity}"
               if self.options.cache_capacity else "") + ":"
            f" achieved {self.rate:.1f} req/s ({self.requests_measured} requests in "
            f"{self.seconds_measured:.1f} s); starts >100 ms late {self.started_late}, "
            f"latest start {self.start_lag_max_ms:.0f} ms",
            "",
            "| endpoint | requests | p50 ms | p99 ms | statuses |",
            "|---|---:|---:|---:|---|",
        ]
        lines += [f"| {e} | {n} | {p50:.1f} | {p99:.1f} | {s} |" for e, n, p50, p99, s in self.rows]
        lines += [
            "",
            "deliveries sent (whole run): "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.deliveries.items())),
            f"payments created {self.payments}, withdrawals accepted {self.withdrawals}",
            f"RSS of the ledger process: {self.rss_after_warm_up_kib / 1024:.1f} MiB after warm-up,"
            f" {self.rss_end_kib / 1024:.1f} MiB at the end "
            f"({self._growth():+.1%}, limit +{RSS_GROWTH_MAX:.0%}); every 10 s: "
            + " ".join(f"{sample / 1024:.1f}" for sample in self.rss_samples_kib),
            *self.facts,
            "checks: " + ("all hold" if not self.failures else "FAILED"),
            *(f"  - {failure}" for failure in self.failures),
        ]
        return "\n".join(lines)

    def failed(self, check: str) -> list[str]:
        """The failures of one check (the word before the colon: acknowledged, exactly once,
        listed, balanced, rebuild, memory, answers, service)."""
        return [failure for failure in self.failures if failure.startswith(check + ":")]

    def _growth(self) -> float:
        if not self.rss_after_warm_up_kib:
            return 0.0
        return self.rss_end_kib / self.rss_after_warm_up_kib - 1


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ---------------------------------------------------------------- the capture and the service


class Capture:
    """Answers 200 to every delivery a sandbox sends and keeps it as sent."""

    def __init__(self) -> None:
        self.received: list[Captured] = []

    def app(self) -> web.Application:
        async def keep(request: web.Request) -> web.Response:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
            provider = request.path.split("/")[3]
            self.received.append(Captured(provider, request.path, headers, await request.read()))
            return web.json_response({"received": True})

        app = web.Application()
        app.router.add_post("/{tail:.*}", keep)
        return app

    def take(self) -> list[Captured]:
        taken, self.received = self.received, []
        return taken


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield f"http://{LOOPBACK}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def database_url(given: str | None) -> str:
    return (
        given
        or os.environ.get("LEDGER_BENCH_DATABASE_URL")
        or os.environ.get("LEDGER_TEST_DATABASE_URL")
        or LOCAL_DSN
    )


@contextlib.asynccontextmanager
async def fresh_schema(dsn: str) -> AsyncIterator[str]:
    schema = f"load_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield schema
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def toml_value(value: Any) -> str:
    # JSON strings are TOML basic strings for the characters used here.
    return json.dumps(value) if isinstance(value, str) else str(value).lower()


def write_config(path: Path, settings: dict[str, Any]) -> None:
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items() if not isinstance(v, dict)]
    lines += ["", "[[api.tokens]]", 'name = "load"', f"token = {toml_value(TOKEN)}",
              'scopes = ["admin"]']  # fmt: skip
    for provider, table in settings["providers"].items():
        lines += ["", f"[providers.{provider}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


async def sample_rss(pid: int, samples: list[int]) -> None:
    while True:
        samples.append(rss_kib(pid))
        await asyncio.sleep(10)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Service:
    url: str
    process: asyncio.subprocess.Process
    log: Path

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)


@contextlib.asynccontextmanager
async def ledger_service(
    dsn: str, schema: str, fleet: SandboxFleet, capture_url: str, folder: Path,
    cache_capacity: int = 0,
) -> AsyncIterator[Service]:  # fmt: skip
    with contextlib.closing(__import__("socket").socket()) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    separator = "&" if "?" in dsn else "?"
    config = {
        "database_url": f"{dsn}{separator}search_path={schema}",
        "public_url": capture_url,
        "host": LOOPBACK,
        "port": port,
        "data_dir": str(folder / "data"),
        "providers": fleet.provider_tables(),
    }
    config_path = folder / "ledger.toml"
    write_config(config_path, config)
    settings = Settings.model_validate({"public_url": capture_url,
                                        "providers": fleet.provider_tables()})  # fmt: skip
    await fleet.send_webhooks_to(settings)
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEDGER_") or k.startswith(("LEDGER_TEST_", "LEDGER_BENCH_"))
    }
    log = folder / "ledger.log"
    command = [str(Path(sys.executable).with_name("ledger"))]
    if cache_capacity:
        command = [sys.executable, "-c", CAPPED_CACHES, str(cache_capacity)]
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, "serve", "--config", str(config_path),
            stdout=sink, stderr=asyncio.subprocess.STDOUT, env=environment,
        )  # fmt: skip
    service = Service(f"http://{LOOPBACK}:{port}", process, log)
    try:
        await wait_until_healthy(service)
        yield service
    finally:
        await service.stop()


async def wait_until_healthy(service: Service) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if service.process.returncode is not None:
                raise RuntimeError(f"ledger serve exited: {service.log.read_text()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(service.url + "/healthz") as reply:
                    if reply.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("ledger serve did not answer /healthz within 60 s")


# ---------------------------------------------------------------- the load


@dataclass
class Load:
    service: Service
    sandboxes: dict[str, str]
    capture: Capture
    http: aiohttp.ClientSession
    options: Options
    random: random.Random
    scenarios: dict[tuple[str, str], list[str]]
    tally: Tally = field(default_factory=Tally)
    pool: list[Captured] = field(default_factory=list)

    async def request(self, endpoint: str, method: str, path: str, expected: frozenset[int],
                      **kwargs: Any) -> tuple[int, Any]:  # fmt: skip
        headers = kwargs.pop("headers", None) or {"Authorization": f"Bearer {TOKEN}"}
        measured = self.tally.measuring
        started = time.perf_counter()
        async with self.http.request(method, self.service.url + path, headers=headers,
                                     **kwargs) as reply:  # fmt: skip
            text = await reply.text()
        elapsed = time.perf_counter() - started
        if measured:
            self.tally.latencies[endpoint].append(elapsed)
            self.tally.requests_measured += 1
            self.tally.statuses[endpoint][reply.status] += 1
        if reply.status not in expected:
            self.tally.unexpected.append(f"{method} {path}: {reply.status} {text[:300]}")
        try:
            return reply.status, json.loads(text)
        except ValueError:
            return reply.status, text

    async def sandbox(self, provider: str, path: str, body: Any) -> tuple[int, Any]:
        async with self.http.post(self.sandboxes[provider] + path, json=body) as reply:
            return reply.status, await reply.json(content_type=None)

    async def run_scenario(self, provider: str, kind: str, ref: str) -> None:
        name = self.random.choice(self.scenarios[(provider, kind)])
        status, body = await self.sandbox(
            provider, f"/_sandbox/{kind}/{ref}/scenario", {"scenario": name}
        )
        if status != 200:
            self.tally.unexpected.append(f"sandbox {provider} {kind} {name}: {status} {body}")
        for delivery in self.capture.take():
            self.enqueue(delivery)

    def enqueue(self, delivery: Captured) -> None:
        self.pool.append(delivery)
        if self.random.random() < self.options.duplicate_probability:
            self.pool.append(delivery)
        if delivery.provider in SIGNED_IN_HEADER and self.random.random() < (
            self.options.bad_probability
        ):
            name = SIGNED_IN_HEADER[delivery.provider]
            headers = {k: v for k, v in delivery.headers.items() if k.lower() != name}
            signature = next((v for k, v in delivery.headers.items() if k.lower() == name), "")
            headers[name] = signature[:-4] + ("0000" if not signature.endswith("0000") else "1111")
            self.pool.append(Captured(delivery.provider, delivery.path, headers, delivery.body,
                                      genuine=False))  # fmt: skip

    async def deliver(self) -> None:
        delivery = self.pool.pop(self.random.randrange(len(self.pool)))
        forged_token = delivery.path.count("/") > 3 and not delivery.genuine
        kind = "genuine" if delivery.genuine else ("bad token" if forged_token else "bad signature")
        expected = frozenset({200}) if delivery.genuine or forged_token else frozenset({401})
        status, body = await self.request(
            "POST /v1/webhooks/{provider}", "POST", delivery.path, expected,
            data=delivery.body, headers=delivery.headers,
        )  # fmt: skip
        self.tally.webhook_acks[status] += 1
        outcome = body.get("outcome", "") if isinstance(body, dict) else ""
        self.tally.deliveries[f"{kind} {outcome or status}"] += 1
        if (
            delivery.genuine
            and delivery.provider in TOKEN_IN_PATH
            and status == 200
            and self.random.random() < self.options.bad_probability
        ):
            prefix = "/".join(delivery.path.split("/")[:4])
            self.pool.append(Captured(delivery.provider, f"{prefix}/not-the-token",
                                      delivery.headers, delivery.body, genuine=False))  # fmt: skip

    async def create(self) -> None:
        provider = self.random.choice(PROVIDERS)
        amount, currency, extra = PRICES[provider]
        body = {"provider": provider, "order_id": f"LOAD_{uuid.uuid4().hex[:20]}",
                "amount": amount, "currency": currency, **extra}  # fmt: skip
        status, view = await self.request(
            "POST /v1/payments", "POST", "/v1/payments", frozenset({201}), json=body
        )
        if status == 201:
            self.tally.payments.append(view["payment_id"])
            await self.run_scenario(provider, "payments", view["provider_ref"])

    async def withdraw(self) -> None:
        provider, amount, currency, extra = self.random.choice(WITHDRAWALS)
        body = {"provider": provider, "request_id": f"LOADW_{uuid.uuid4().hex[:20]}",
                "amount": amount, "currency": currency, **extra}  # fmt: skip
        status, view = await self.request(
            "POST /v1/withdrawals", "POST", "/v1/withdrawals", frozenset({201, 422}), json=body
        )
        if status == 422 and not str(view.get("type", "")).endswith("insufficient-funds"):
            self.tally.unexpected.append(f"withdrawal 422 not for funds: {view}")
        if status == 201:
            self.tally.withdrawals.append(view["withdrawal_id"])
            if self.random.random() < 0.5:
                await self.run_scenario(provider, "withdrawals", view["provider_ref"])

    async def read(self, kind: str) -> None:
        ok = frozenset({200})
        if kind == "get" and self.tally.payments:
            payment_id = self.random.choice(self.tally.payments)
            await self.request("GET /v1/payments/{id}", "GET", f"/v1/payments/{payment_id}", ok)
        elif kind == "list":
            params = {"provider": self.random.choice(PROVIDERS), "limit": "50"}
            await self.request("GET /v1/payments?provider=", "GET", "/v1/payments", ok,
                               params=params)  # fmt: skip
        else:
            params = {"currency": self.random.choice(("USD", "USDT", "TRY"))}
            await self.request("GET /v1/balances?currency=", "GET", "/v1/balances", ok,
                               params=params)  # fmt: skip

    async def one(self) -> None:
        kind = self.random.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        if kind == "deliver" and self.pool:
            await self.deliver()
        elif kind == "create":
            await self.create()
        elif kind == "withdraw":
            await self.withdraw()
        else:
            await self.read("balances" if kind == "deliver" else kind)

    async def run_for(self, seconds: float) -> None:
        """Starts one operation every 1/rate s for `seconds`; waits for those in flight."""
        gate = asyncio.Semaphore(self.options.concurrency)
        interval = 1 / self.options.rate
        tasks: set[asyncio.Task[None]] = set()
        began = time.perf_counter()
        count = int(seconds * self.options.rate)
        for number in range(count):
            due = began + number * interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(self.gated(gate, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    async def gated(self, gate: asyncio.Semaphore, due: float) -> None:
        async with gate:
            lag = time.perf_counter() - due
            if self.tally.measuring:
                self.tally.start_lag_max = max(self.tally.start_lag_max, lag)
                self.tally.started_late += lag > 0.1
            try:
                await self.one()
            except (aiohttp.ClientError, TimeoutError) as error:
                self.tally.unexpected.append(f"client error: {error!r}")

    async def drain(self) -> None:
        while self.pool:
            await asyncio.gather(*(self.deliver() for _ in range(min(16, len(self.pool)))))


async def known_scenarios(load: Load) -> None:
    for provider in PROVIDERS:
        for kind in ("payments", "withdrawals"):
            status, body = await load.sandbox(provider, f"/_sandbox/{kind}/x/scenario",
                                              {"scenario": "?"})  # fmt: skip
            if status == 400:
                load.scenarios[(provider, kind)] = list(body["known"])


# ---------------------------------------------------------------- the checks


async def every_page(load: Load, path: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        _, page = await load.request("final reads", "GET", path, frozenset({200}), params=params)
        items += page["items"]
        if not page.get("next_cursor"):
            return items
        params["cursor"] = page["next_cursor"]


@dataclass
class DeliveryRecords:
    """What the log says of the deliveries, by verified dedupe key."""

    received: Counter[str] = field(default_factory=Counter)  # verified receipts
    applied: Counter[str] = field(default_factory=Counter)  # records that moved money
    queried: Counter[str] = field(default_factory=Counter)  # recorded as a query's answer
    outcomes: Counter[str] = field(default_factory=Counter)  # provider and outcome
    flagged: int = 0  # records that moved money yet say `duplicate`

    def add(self, event_type: str, document: dict[str, Any]) -> None:
        if event_type == "Delivery.Received":
            if document["verification"]["outcome"] == "verified":
                self.received[document["dedupe_key"]] += 1
        elif event_type.endswith(".DeliveryRecorded"):
            self.add_recorded(document)
        elif event_type == "Delivery.Unmatched":
            delivery = document.get("delivery", document)
            if delivery["verification"]["outcome"] == "verified":
                self.applied[delivery["dedupe_key"]] += 1

    def add_recorded(self, document: dict[str, Any]) -> None:
        delivery = document["delivery"]
        if delivery.get("source") == "provider_query":
            # A status query's answer (no receipt, by design), or the delivery it confirmed,
            # recorded again as verified by query: then that delivery's application.
            self.queried[document["dedupe_key"]] += 1
            return
        outcome = delivery.get("outcome")
        self.outcomes[f"{delivery.get('provider')} {outcome}"] += 1
        # ledger/recording.py's rule: verified, or verified and refused by a domain rule.
        if outcome == "verified" or (outcome == "not_applied" and delivery.get("verified")):
            self.applied[document["dedupe_key"]] += 1
            self.flagged += document["duplicate"]

    def confirmed_by_query(self) -> set[str]:
        return {key for key in self.queried if key in self.received}

    def applied_count(self, key: str) -> int:
        return self.applied[key] + (self.queried[key] if key in self.received else 0)


async def check_deliveries(store: PostgresEventStore, tally: Tally, report: Report) -> None:
    rows = await store.pool.fetch(
        "SELECT type, payload, stream_id FROM events"
        " WHERE type LIKE 'Delivery.%' OR type LIKE '%.DeliveryRecorded'"
    )
    types = Counter(row["type"] for row in rows)
    acked, rejected = tally.webhook_acks[200], tally.webhook_acks[401]
    receipts = types["Delivery.Received"] + types["Delivery.Duplicate"]
    if acked != receipts:
        report.failures.append(f"acknowledged: {acked} answered 200, {receipts} receipts")
    if rejected != types["Delivery.Rejected"]:
        report.failures.append(
            f"acknowledged: {rejected} answered 401, {types['Delivery.Rejected']} recorded"
        )
    records = DeliveryRecords()
    for row in rows:
        records.add(row["type"], decode_document(bytes(row["payload"])))
    # A LiPayKripto copy under a wrong path token passes the receipt's HMAC check (a verified
    # receipt of its own) and is refused by the applier (token_not_for_this_subject): keys
    # received twice are counted, and held to being applied once like every other.
    twice = [key for key, count in records.received.items() if count != 1]
    not_once = [key for key in records.received if records.applied_count(key) != 1]
    stray = [key for key in records.applied if key not in records.received]
    if not_once:
        report.failures.append("exactly once: " + await story(store, rows, not_once[0]))
    for what, keys in (("not applied exactly once", not_once),
                       ("applied without a receipt", stray)):  # fmt: skip
        if keys:
            report.failures.append(f"exactly once: {len(keys)} keys {what}: {keys[:3]}")
    answers = sum(records.queried.values()) - len(records.confirmed_by_query())
    report.facts.append(
        f"log: {types['Delivery.Received']} received, {types['Delivery.Duplicate']} duplicate, "
        f"{types['Delivery.Rejected']} rejected receipts; {len(records.received)} verified "
        f"dedupe keys ({len(twice)} received verified twice), each applied exactly once in "
        f"its subject's stream: {not not_once} (outcomes {dict(records.outcomes)}); unmatched "
        f"records {types['Delivery.Unmatched']}; records that moved money flagged duplicate "
        f"{records.flagged}; provider query answers {answers}, deliveries they confirmed "
        f"{len(records.confirmed_by_query())}"
    )


async def story(store: PostgresEventStore, rows: list[asyncpg.Record], key: str) -> str:
    """The stream of the subject a delivery key was recorded in, one line per event."""
    stream = next(
        row["stream_id"]
        for row in rows
        if row["type"].endswith(".DeliveryRecorded")
        and decode_document(bytes(row["payload"]))["dedupe_key"] == key
    )
    lines = [f"the stream of {key}:"]
    for event in await store.read_stream(stream):
        document = decode_document(event.payload)
        delivery = document.get("delivery") or {} if isinstance(document, dict) else {}
        lines.append(
            f"    {event.version} {event.type} {document.get('dedupe_key', '')} "
            f"{delivery.get('outcome', '')} {delivery.get('source', '')} "
            f"{delivery.get('verification', '')} {event.recorded_at:%H:%M:%S.%f}"
        )
    return "\n".join(lines)


async def read_models(pool: asyncpg.Pool) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every projection's tables, as text, in a stable order; the column names
    under the key `<table>.columns`."""
    rows: dict[str, list[tuple[str, ...]]] = {}
    for projection in all_projections():
        for table in projection.tables:
            fetched = await pool.fetch(f"SELECT * FROM {table}")
            rows[table] = sorted(tuple(map(str, row.values())) for row in fetched)
            names = await pool.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1"
                " AND table_schema = current_schema() ORDER BY ordinal_position",
                table,
            )
            rows[f"{table}.columns"] = [(row["column_name"],) for row in names]
    return rows


def differences(live: list[tuple[str, ...]], rebuilt: list[tuple[str, ...]],
                columns: list[tuple[str, ...]]) -> str:  # fmt: skip
    """Which columns differ, counted over rows with the same first column (their key)."""
    by_key = {row[0]: row for row in rebuilt}
    counted: Counter[str] = Counter()
    example = ""
    for row in sorted(set(live) - set(rebuilt)):
        other = by_key.get(row[0])
        if other is None:
            counted["(row only live)"] += 1
            continue
        for (name,), mine, theirs in zip(columns, row, other, strict=False):
            if mine != theirs and name != "view":
                counted[f"{name} ({row[1]})"] += 1
                example = example or f"{row[0]} {name}: live {mine!r}, rebuilt {theirs!r}"
    counted["(row only rebuilt)"] += len({r[0] for r in rebuilt} - {r[0] for r in live})
    return f"{dict(+counted)}; e.g. {example}"


async def check_rebuild(pool: asyncpg.Pool, balances: list[dict[str, Any]],
                        report: Report) -> None:  # fmt: skip
    runner = ProjectionRunner(pool, all_projections())
    await runner.catch_up()
    live = await read_models(pool)
    started = time.perf_counter()
    rebuilt_runner = ProjectionRunner(pool, all_projections())
    for name in rebuilt_runner.projections:
        await rebuilt_runner.rebuild(name)
    rebuilt = await read_models(pool)
    seconds = time.perf_counter() - started
    tables = [table for table in live if not table.endswith(".columns")]
    for table in tables:
        if live[table] != rebuilt[table]:
            changed = len(set(live[table]) - set(rebuilt[table]))
            report.failures.append(
                f"rebuild: {table}: {changed} of {len(live[table])} live rows differ from the "
                f"rebuild, columns (provider) "
                f"{differences(live[table], rebuilt[table], live[table + '.columns'])}"
            )
    counted = ", ".join(f"{table} {len(live[table])}" for table in sorted(tables))
    same = all(live[table] == rebuilt[table] for table in tables)
    report.facts.append(
        f"rebuild of every projection in {seconds:.1f} s; live rows {counted}; "
        + ("equal row for row" if same else "NOT equal (see checks)")
    )
    stored = {
        (row["account"], row["currency"]): (row["posted"], row["pending"],
                                            row["posted"] + row["reserved"])
        for row in await pool.fetch("SELECT * FROM account_balances")
    }  # fmt: skip
    answered = {
        (b["account"], b["currency"]): (Decimal(b["posted"]), Decimal(b["pending"]),
                                        Decimal(b["available"]))
        for b in balances
    }  # fmt: skip
    if {k: v for k, v in stored.items() if any(v)} != {k: v for k, v in answered.items() if any(v)}:
        report.failures.append("rebuild: GET /v1/balances differs from rebuilt account_balances")


def check_balanced(balances: list[dict[str, Any]], report: Report) -> None:
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for item in balances:
        sums[(item["currency"], "posted")] += Decimal(item["posted"])
        sums[(item["currency"], "pending")] += Decimal(item["pending"])
    unbalanced = {key: str(total) for key, total in sums.items() if total != 0}
    if unbalanced:
        report.failures.append(f"balanced: balances do not sum to zero: {unbalanced}")
    currencies = sorted({item["currency"] for item in balances})
    report.facts.append(f"balances over {len(balances)} accounts in {currencies} sum to zero")


def summarise(tally: Tally, report: Report, seconds: float) -> None:
    report.seconds_measured = seconds
    report.requests_measured = tally.requests_measured
    for endpoint in sorted(tally.latencies):
        values = tally.latencies[endpoint]
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(tally.statuses[endpoint].items()))
        report.rows.append((endpoint, len(values), percentile(values, 0.5) * 1000,
                            percentile(values, 0.99) * 1000, statuses))  # fmt: skip
    report.deliveries = tally.deliveries
    report.payments = len(tally.payments)
    report.withdrawals = len(tally.withdrawals)
    report.start_lag_max_ms = tally.start_lag_max * 1000
    report.started_late = tally.started_late
    report.failures += [f"answers: unexpected {u}" for u in tally.unexpected[:10]]
    if len(tally.unexpected) > 10:
        report.failures.append(f"answers: {len(tally.unexpected) - 10} more unexpected")


async def run_load(options: Options) -> Report:
    """Runs the whole bench and returns its report (the CI test and `main` both call this)."""
    report = Report(options)
    dsn = database_url(options.dsn)
    capture = Capture()
    async with contextlib.AsyncExitStack() as stack:
        schema = await stack.enter_async_context(fresh_schema(dsn))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ledger-load-")))
        capture_url = await stack.enter_async_context(serving(capture.app()))
        fleet = await stack.enter_async_context(sandbox_fleet(PROVIDERS))
        service = await stack.enter_async_context(
            ledger_service(dsn, schema, fleet, capture_url, folder, options.cache_capacity)
        )
        connector = aiohttp.TCPConnector(limit=options.concurrency + 8)
        timeout = aiohttp.ClientTimeout(total=30)
        http = await stack.enter_async_context(
            aiohttp.ClientSession(connector=connector, timeout=timeout)
        )
        load = Load(service, fleet.urls(), capture, http, options, random.Random(options.seed), {})
        await known_scenarios(load)
        await load.run_for(options.warm_up_seconds)
        report.rss_after_warm_up_kib = rss_kib(service.process.pid)
        load.tally.measuring = True
        started = time.perf_counter()
        sampler = asyncio.create_task(sample_rss(service.process.pid, report.rss_samples_kib))
        await load.run_for(options.seconds)
        measured = time.perf_counter() - started
        sampler.cancel()
        load.tally.measuring = False
        report.rss_end_kib = rss_kib(service.process.pid)
        await load.drain()
        summarise(load.tally, report, measured)
        listed = {p["payment_id"] for p in await every_page(load, "/v1/payments", limit="500")}
        missing = set(load.tally.payments) - listed
        if missing:
            report.failures.append(f"listed: {len(missing)} missing: {sorted(missing)[:3]}")
        balances = await every_page(load, "/v1/balances")
        check_balanced(balances, report)
        if report.rss_end_kib > report.rss_after_warm_up_kib * (1 + RSS_GROWTH_MAX):
            report.failures.append("memory: RSS grew more than 20% over the measured window")
        exit_status = await service.stop()
        if exit_status != 0:
            report.failures.append(f"service: ledger serve exited {exit_status}")
        pool = await create_pool(dsn, schema=schema)
        try:
            await check_deliveries(PostgresEventStore(pool), load.tally, report)
            await check_rebuild(pool, balances, report)
        finally:
            await pool.close()
        errors = [line for line in service.log.read_text().splitlines() if "Traceback" in line]
        if errors:
            report.failures.append(f"service: {len(errors)} tracebacks in the ledger's log")
    return report


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds (60)")
    parser.add_argument("--warm-up", type=float, default=10.0, help="warm-up seconds (10)")
    parser.add_argument("--rate", type=float, default=40.0, help="operations started per second")
    parser.add_argument("--concurrency", type=int, default=32, help="operations in flight, max")
    parser.add_argument("--dsn", help="PostgreSQL URL (default: see the module doc)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cache-capacity", type=int, default=0,
        help="diagnosis: cap the server's count-bounded caches at N entries (0: as shipped)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    return Options(args.seconds, args.warm_up, args.rate, args.concurrency, args.dsn, args.seed,
                   cache_capacity=args.cache_capacity)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    report = asyncio.run(run_load(parse_args(argv)))
    print(report.text(), flush=True)
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main(sys.argv[1:])

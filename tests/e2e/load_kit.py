"""Signed deliveries under load, sent as a provider sends them, and the checks that follow a fault.

Shared by the crash and outage tests (tests/e2e/test_crash_mid_load.py,
tests/e2e/test_database_outage.py) and their long variants under bench/. The sandboxes' callback
URLs point at `Capture`, so each delivery is the sandbox's own signed bytes; `Sender` posts them to
the ledger and keeps what a provider's sender would know (how each attempt was answered), and
retries every delivery that got no 2xx, as the providers redeliver (the sandboxes send once and
never retry). After the fault, `assert_consistent` checks what the ledger must hold whatever
happened: every acknowledged delivery recorded once, amounts as if each deposit came once, the
hash chain whole, and balances equal to a rebuild from the log.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from adapters.cli.sandbox import ApiTokenLine, ledger_config_toml
from adapters.config import Settings
from adapters.sandbox.fleet import SandboxFleet, sandbox_fleet
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.read_models.journal import JournalProjection
from adapters.storage.read_models.runner import ProjectionRunner
from ledger.codec import decode_document
from ledger.hashchain import GENESIS_HASH, verify_chain
from tests.e2e.harness import free_port, serve
from tests.e2e.webhook_kit import Capture, Captured

TOKEN = "load-test-token-" + "x" * 16
PROVIDERS = ("coinpay", "coincoin", "cryptofuse", "payment_engine", "lipaykripto")
PRICES = {
    "coinpay": ("100.00", "USDT"),
    "coincoin": ("100", "USDT"),
    "cryptofuse": ("100.00", "USD"),
    "payment_engine": ("100.00", "USD"),
    "lipaykripto": ("100.00", "TRY"),
}
# What each scenario pays, as a share of the price: the sum of its distinct deposits.
SHARES = {
    "full": Decimal(1),
    "partial": Decimal("0.5"),
    "over": Decimal("1.5"),
    "duplicate": Decimal(1),
}
SCENARIOS = tuple(SHARES)
# The journal's tables, each with an order that makes its rows comparable one for one.
JOURNAL_TABLES = {
    "journal_entries": "partition, position",
    "journal_postings": "partition, position, line",
    "account_balances": "account, currency",
    "journal_unmatched": "provider, dedupe_key",
}


@dataclass(frozen=True)
class Planned:
    """One payment, the scenario its provider ran, and what that sent."""

    payment_id: str
    provider: str
    scenario: str
    price: Decimal
    deliveries: tuple[Captured, ...]

    @property
    def received(self) -> Decimal:
        """The distinct deposits' sum: what the payment received, however often each came."""
        return self.price * SHARES[self.scenario]


@dataclass
class World:
    """The sandboxes and the capture their webhooks go to."""

    fleet: SandboxFleet
    capture: Capture
    capture_url: str

    def provider_tables(self) -> dict[str, dict[str, str]]:
        return self.fleet.provider_tables()

    def config_toml(self, database_url: str, port: int, data_dir: str, **extra: Any) -> str:
        """The ledger's configuration for these sandboxes: its webhooks announced at the
        capture, one token with every scope, everything else the service's defaults."""
        top = {"port": port, "data_dir": data_dir, **extra}
        lines = [f"{key} = {value!r}".replace("'", '"') for key, value in top.items()]
        body = ledger_config_toml(
            self.capture_url,
            self.provider_tables(),
            database_url=database_url,
            token=ApiTokenLine(TOKEN),
        )
        return "\n".join(lines) + "\n" + body

    def settings(self, **values: Any) -> Settings:
        return Settings(
            public_url=self.capture_url,
            providers=self.provider_tables(),
            api={"tokens": [{"name": "load", "token": TOKEN, "scopes": ["admin"]}]},
            **values,
        )


@asynccontextmanager
async def world(providers: Sequence[str] = PROVIDERS) -> AsyncIterator[World]:
    capture = Capture()
    async with AsyncExitStack() as stack:
        capture_url = await stack.enter_async_context(serve(capture.app()))
        fleet = await stack.enter_async_context(sandbox_fleet(providers))
        built = World(fleet, capture, capture_url)
        await fleet.send_webhooks_to(built.settings())
        yield built


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON or text, headers) of one API call with the test's token."""
    headers = {"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
    async with http.request(method, url, headers=headers, **kwargs) as reply:
        text = await reply.text()
        try:
            body = await reply.json(content_type=None)
        except ValueError:
            body = text
        return reply.status, body, dict(reply.headers)


def order_id() -> str:
    """Unique, and fits every provider's rules (CoinCoin: 8-32 of [A-Za-z0-9_])."""
    return f"LOAD_{uuid.uuid4().hex[:20]}"


def payment_request(provider: str) -> dict[str, str]:
    amount, currency = PRICES[provider]
    return {"provider": provider, "order_id": order_id(), "amount": amount, "currency": currency}


async def plan(
    http: aiohttp.ClientSession, ledger_url: str, where: World, count: int, seed: int
) -> list[Planned]:
    """`count` payments, round the providers, each with a scenario run: its deliveries
    captured, none sent to the ledger yet."""
    chance = random.Random(seed)
    planned: list[Planned] = []
    providers = list(where.fleet.sandboxes)
    for number in range(count):
        provider = providers[number % len(providers)]
        scenario = chance.choice(SCENARIOS)
        request = payment_request(provider)
        status, body, _ = await call(http, "POST", f"{ledger_url}/v1/payments", json=request)
        assert 201 == status, body
        reference = body["provider_ref"]
        sandbox = where.fleet.sandboxes[provider].url
        async with http.post(
            f"{sandbox}/_sandbox/payments/{reference}/scenario", json={"scenario": scenario}
        ) as reply:
            ran = await reply.json(content_type=None)
            assert 200 == reply.status, ran
        sent = where.capture.take_naming(reference, request["order_id"])
        assert sent, (provider, scenario, ran)
        price = Decimal(request["amount"])
        planned.append(Planned(body["payment_id"], provider, scenario, price, tuple(sent)))
    return planned


def load_of(planned: Sequence[Planned], size: int, seed: int) -> list[Captured]:
    """Every captured delivery once, then copies of random ones (a provider's redeliveries)
    up to `size`, shuffled: the deliveries in flight at once."""
    chance = random.Random(seed)
    distinct = [delivery for each in planned for delivery in each.deliveries]
    assert len(distinct) <= size, f"{len(distinct)} deliveries do not fit in {size}"
    load = distinct + [chance.choice(distinct) for _ in range(size - len(distinct))]
    chance.shuffle(load)
    return load


@dataclass
class Tally:
    """What the provider's side saw: each attempt and how it was answered."""

    sent: int = 0  # attempts, first sends and retries
    retried: int = 0  # attempts after a first one that got no 2xx
    acknowledged: int = 0  # attempts answered 2xx
    duplicates: int = 0  # 2xx answered `duplicate`
    unavailable: int = 0  # 503 answers
    unanswered: int = 0  # no answer at all (connection refused or cut)
    statuses: Counter[int] = field(default_factory=Counter)
    without_retry_after: int = 0  # 503s without Retry-After
    first_ack_at: float | None = None  # monotonic time of the first 2xx after `mark()`
    mark_at: float = 0.0

    def mark(self) -> None:
        """Starts the clock of `first_ack_at` (e.g. when the database comes back)."""
        self.mark_at, self.first_ack_at = time.monotonic(), None

    def count(self, status: int, retry_after: str | None, *, duplicate: bool = False) -> None:
        """One answer."""
        self.statuses[status] += 1
        if status == 503:
            self.unavailable += 1
            self.without_retry_after += retry_after is None
        if 200 <= status < 300:
            self.acknowledged += 1
            self.duplicates += duplicate
            if self.first_ack_at is None and self.mark_at:
                self.first_ack_at = time.monotonic()

    @property
    def server_errors(self) -> dict[int, int]:
        """Every 5xx but 503: none is allowed, fault or no fault."""
        return {s: n for s, n in self.statuses.items() if s >= 500 and s != 503}


class Sender:
    """Posts captured deliveries to the ledger as their provider would, counting the answers."""

    def __init__(self, http: aiohttp.ClientSession, ledger_url: str, tally: Tally) -> None:
        self.http = http
        self.ledger_url = ledger_url
        self.tally = tally
        self.acknowledged: list[Captured] = []

    async def post(self, delivery: Captured, *, retry: bool = False) -> int | None:
        """One attempt: its status, or None when no answer came."""
        tally = self.tally
        tally.sent += 1
        tally.retried += retry
        try:
            async with self.http.post(
                self.ledger_url + delivery.path,
                data=delivery.body,
                headers=delivery.headers,
                timeout=aiohttp.ClientTimeout(total=30),
            ) as reply:
                text = await reply.text()
                status = reply.status
                retry_after = reply.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError):
            tally.unanswered += 1
            return None
        tally.count(status, retry_after, duplicate='"duplicate"' in text)
        if 200 <= status < 300:
            self.acknowledged.append(delivery)
        return status

    async def until_acknowledged(
        self, delivery: Captured, *, first: int | None, within_seconds: float = 60
    ) -> None:
        """Redelivers until a 2xx, as a provider does: `first` is the first attempt's answer."""
        status, pause = first, 0.05
        deadline = time.monotonic() + within_seconds
        while status is None or not 200 <= status < 300:
            assert time.monotonic() < deadline, f"never acknowledged: {delivery.path}"
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
            status = await self.post(delivery, retry=True)


# ---------------------------------------------------------------- `ledger serve`


REPOSITORY = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30.0


def schema_url(database_url: str, schema: str) -> str:
    return f"{database_url}{'&' if '?' in database_url else '?'}search_path={schema}"


@dataclass
class Service:
    """One `ledger serve` process; its output goes to a file (a pipe nobody read would stall
    it)."""

    config: Path
    port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, http: aiohttp.ClientSession) -> float:
        """Starts the process and waits until it answers; returns how long that took."""
        began = time.monotonic()
        output = (self.config.parent / "serve.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adapters.cli.main", "serve", "--config", str(self.config),
            cwd=REPOSITORY, env=_child_environment(), stdin=asyncio.subprocess.DEVNULL,
            stdout=output, stderr=output,
        )  # fmt: skip
        output.close()
        async with asyncio.timeout(STARTUP_SECONDS):
            while True:
                assert self.process.returncode is None, self.log()
                try:
                    async with http.get(f"{self.url}/healthz") as reply:
                        if reply.status == 200:
                            return time.monotonic() - began
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await self.process.wait()

    def log(self) -> str:
        return (self.config.parent / "serve.log").read_text(errors="replace")[-4000:]


@asynccontextmanager
async def service(
    where: World, database_url: str, directory: Path, http: aiohttp.ClientSession
) -> AsyncIterator[Service]:
    port = free_port()
    config = directory / "ledger.toml"
    config.write_text(where.config_toml(database_url, port, str(directory / "data")))
    running = Service(config, port)
    await running.start(http)
    try:
        yield running
    finally:
        if running.process is not None and running.process.returncode is None:
            running.process.kill()
            await running.process.wait()


# ---------------------------------------------------------------- the checks


async def recorded_keys(store: PostgresEventStore, payment_id: str) -> Counter[str]:
    """How many times each delivery was recorded as verified in the payment's stream."""
    keys: Counter[str] = Counter()
    for event in await store.read_stream(payment_id):
        if event.type.endswith(".DeliveryRecorded"):
            delivery = decode_document(event.payload)["delivery"]
            if delivery["outcome"] == "verified":
                keys[delivery["dedupe_key"]] += 1
    return keys


async def dedupe_keys_by_body(store: PostgresEventStore) -> dict[bytes, str]:
    """The dedupe key the receipt gave each body it received."""
    rows = await store.pool.fetch(
        "SELECT payload FROM events WHERE type = 'Delivery.Received' ORDER BY partition, position"
    )
    keys = {}
    for row in rows:
        document = decode_document(bytes(row["payload"]))
        keys[str(document["body"]).encode()] = str(document["dedupe_key"])
    return keys


async def journal_rows(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    rows = {}
    async with pool.acquire() as connection:
        for table, order in JOURNAL_TABLES.items():
            query = f"SELECT * FROM {table} ORDER BY {order}"
            rows[table] = [tuple(row) for row in await connection.fetch(query)]
    return rows


async def assert_consistent(
    http: aiohttp.ClientSession,
    ledger_url: str,
    store: PostgresEventStore,
    planned: Sequence[Planned],
    acknowledged: Sequence[Captured],
) -> dict[str, int]:
    """The ledger after the fault, as it must be: returns what was checked, counted."""
    owner = {d.body: each for each in planned for d in each.deliveries}
    for each in planned:
        # A read of the payment waits for the applier to reach the log's head.
        status, view, _ = await call(http, "GET", f"{ledger_url}/v1/payments/{each.payment_id}")
        assert 200 == status, view
        assert (each.payment_id, each.received) == (each.payment_id, Decimal(view["received"]))
    keys = await dedupe_keys_by_body(store)
    recorded = {each.payment_id: await recorded_keys(store, each.payment_id) for each in planned}
    for payment_id, counts in recorded.items():
        assert {1} >= set(counts.values()), (payment_id, counts)  # none recorded twice
    for delivery in acknowledged:
        key = keys.get(delivery.body)
        assert key is not None, f"acknowledged but no receipt: {delivery.body[:80]!r}"
        assert 1 == recorded[owner[delivery.body].payment_id][key], (key, delivery.body[:80])
    return {
        "payments": len(planned),
        "acknowledged distinct": len({d.body for d in acknowledged}),
        "events chained": await verified_chain(store),
    }


async def assert_rebuild_matches(
    pool: asyncpg.Pool, rebuild: Callable[[], Awaitable[object]] | None = None
) -> int:
    """The journal and balances as the service projected them (brought to the log's head), row
    for row the same as a clean rebuild from the log (by `rebuild`, e.g. `ledger projections
    rebuild journal`, else the runner's own); returns the balance rows compared."""
    runner = ProjectionRunner(pool, [JournalProjection()], batch_size=2000)
    await runner.catch_up()
    before = await journal_rows(pool)
    await (rebuild() if rebuild is not None else runner.rebuild("journal"))
    after = await journal_rows(pool)
    for table in JOURNAL_TABLES:
        assert before[table] == after[table], table
    assert before["account_balances"], "nothing was booked: a weak test"
    return len(before["account_balances"])


async def ledger_command(config: Path, *arguments: str) -> str:
    """Runs `ledger ARGUMENTS --config CONFIG` to the end; returns its output, asserting exit 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters.cli.main", *arguments, "--config", str(config),
        cwd=REPOSITORY, env=_child_environment(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert 0 == process.returncode, text
    return text


def _child_environment() -> dict[str, str]:
    # LEDGER_* variables override the configuration file; the test's own file must win.
    return {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}


async def verified_chain(store: PostgresEventStore) -> int:
    """Verifies the whole log's hash chain (what `ledger audit verify` does); returns its size."""
    previous, checked = GENESIS_HASH, 0
    async for batch in store.read_log(0):
        checked += verify_chain(batch, start_hash=previous)
        previous = batch[-1].hash
    assert checked == (await store.head()).position
    return checked

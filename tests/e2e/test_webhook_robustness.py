"""Webhook ingestion under a database outage and under concurrent deliveries, over real HTTP.

- Outage: API.md promises 503 ("not recorded, retry") when the database is unavailable, and a
  provider's retry after it returns must be recorded exactly once. Two outages are made: the
  database vanishing (a TCP proxy between the ledger's own pool and PostgreSQL stops accepting
  and drops every connection), and a connection killed mid-request (`pg_terminate_backend` on
  the request's backend while it waits on a lock the test holds; only backends with this test's
  own `application_name` are ever killed).
- Concurrency: 20 deliveries for one payment at once (distinct deposits, and 20 copies of one
  delivery) go through optimistic concurrency with retries: all 200, each applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from adapters.providers.cryptofuse.webhooks import sign as cryptofuse_sign
from adapters.providers.http_client import dumps_exact
from adapters.sandbox import cryptofuse
from adapters.storage.migrate import migrate
from adapters.storage.postgres_store import PostgresEventStore, create_pool
from ledger.codec import decode_document
from ledger.deliveries import ReceiptKind
from ledger.errors import ConcurrencyConflict
from tests.e2e.records import receipts
from tests.e2e.webhook_kit import SECRETS, Captured, Rig, rig

pytestmark = pytest.mark.slow


class TcpProxy:
    """Forwards loopback TCP to the database; `cut()` makes the database unreachable (refuses
    new connections, drops open ones) until `restore()`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._open |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._open -= {writer, upstream_writer}

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self._server is not None and self._server.is_serving():
            await self.cut()


def _with_host(dsn: str, host: str, port: int, **query: str) -> str:
    parts = urlsplit(dsn)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{host}:{port}" if user else f"{host}:{port}"
    params = [*parse_qsl(parts.query), *query.items()]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(params), parts.fragment))


@pytest.fixture
async def outage(database_url: str, schema: str) -> AsyncIterator[tuple[Any, ...]]:
    """(store, proxy, application_name): a store whose pool reaches the database only through
    the proxy, with an application name of its own so that only its backends are killed."""
    parts = urlsplit(database_url)
    if not parts.hostname or parts.hostname.startswith("/"):
        pytest.skip("the database is reached over a unix socket: no TCP to cut")
    proxy = TcpProxy(parts.hostname, parts.port or 5432)
    await proxy.start()
    name = f"webhook_outage_{uuid.uuid4().hex[:12]}"
    dsn = _with_host(database_url, "127.0.0.1", proxy.port, application_name=name)
    pool = await create_pool(dsn, schema=schema, min_size=1, max_size=10)
    async with pool.acquire() as connection:
        await migrate(connection)
    try:
        yield PostgresEventStore(pool), proxy, name
    finally:
        await proxy.close()
        pool.terminate()


async def one_full_delivery(bench: Rig, provider: str = "payment_engine") -> tuple[str, Captured]:
    payment = await bench.create_payment(provider)
    (delivery,) = await bench.scenario(provider, payment["provider_ref"], "full")
    return payment["payment_id"], delivery


async def assert_recorded_once(bench: Rig, payment_id: str, delivery: Captured) -> None:
    """After the database is back: the provider's retry is received once and applied, then a
    duplicate (caught on receipt, recorded as a duplicate receipt)."""
    assert (200, "received") == await outcome(bench, delivery)
    assert (200, "duplicate") == await outcome(bench, delivery)
    view = await bench.view(payment_id)
    assert ("completed", "exact", "100.00") == (view["status"], view["coverage"], view["received"])
    types = await bench.event_types(payment_id)
    assert 1 == types.count("Payment.DeliveryRecorded")
    assert 1 == types.count("Payment.DepositDetected")
    assert ["verified"] == await recorded_outcomes(bench, payment_id)
    store = bench.ledger.store
    for kind in (ReceiptKind.RECEIVED, ReceiptKind.DUPLICATE):
        (receipt,) = await receipts(store, kind, "payment_engine")
        assert delivery.body.decode() == receipt["body"]


async def recorded_outcomes(bench: Rig, payment_id: str) -> list[str]:
    """The outcome of each delivery recorded in a payment's stream (read after a GET of the
    payment, which waits for the applier)."""
    return [
        decode_document(e.payload)["delivery"]["outcome"]
        for e in await bench.ledger.store.read_stream(payment_id)
        if e.type == "Payment.DeliveryRecorded"
    ]


async def outcome(bench: Rig, delivery: Captured) -> tuple[int, Any]:
    """(200, outcome word), or (status, the problem body)."""
    status, reply = await bench.deliver(delivery)
    return status, reply.get("outcome", "") if status == 200 else reply


async def test_database_unreachable_is_503_and_the_retry_is_recorded_once(outage):
    store, proxy, _ = outage
    async with rig(store, ("payment_engine",)) as bench:
        payment_id, delivery = await one_full_delivery(bench)
        await proxy.cut()
        for _ in range(3):  # the provider retries while the database is away
            async with bench.ledger.http.post(
                bench.ledger.url + delivery.path, data=delivery.body, headers=delivery.headers
            ) as reply:
                problem = await reply.json(content_type=None)
                assert 503 == reply.status, problem
                assert reply.headers["Content-Type"].startswith("application/problem+json")
                assert reply.headers["Retry-After"].isdigit()
                assert 503 == problem["status"]
        await proxy.restore()
        # Not recorded: no receipt of any kind.
        for kind in ReceiptKind:
            assert [] == await receipts(store, kind, "payment_engine")
        await assert_recorded_once(bench, payment_id, delivery)


@pytest.mark.parametrize(
    ("lock", "waits_in"),
    [
        # The request's first read (the claim that names the payment) waits on a table lock.
        ("LOCK TABLE claims IN ACCESS EXCLUSIVE MODE", "a read outside a transaction"),
        # The append waits on the log head row, inside its transaction.
        ("SELECT 1 FROM log_heads WHERE partition = 0 FOR UPDATE", "the append's transaction"),
    ],
)
async def test_a_connection_killed_mid_request_is_503_and_nothing_half_written(
    outage, database_url, schema, lock, waits_in
):
    store, _, application_name = outage
    async with rig(store, ("payment_engine",)) as bench:
        payment_id, delivery = await one_full_delivery(bench)
        holder = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(lock)
            request = asyncio.create_task(outcome(bench, delivery))
            killed = await _kill_the_waiting_backend(holder, application_name)
            await transaction.rollback()
        finally:
            await holder.close()
        assert 1 == killed, f"no backend of ours waited on the lock in {waits_in}"
        status, problem = await request
        assert 503 == status, problem
        types = await bench.event_types(payment_id)
        assert 0 == types.count("Payment.DeliveryRecorded")
        for kind in ReceiptKind:
            assert [] == await receipts(store, kind, "payment_engine")
        await assert_recorded_once(bench, payment_id, delivery)


async def _kill_the_waiting_backend(holder: asyncpg.Connection, application_name: str) -> int:
    for _ in range(200):
        killed = await holder.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND wait_event_type = 'Lock'",
            application_name,
        )
        if killed:
            return int(killed)
        await asyncio.sleep(0.01)
    return 0


# ---------------------------------------------------------------- concurrency

WRITERS = 20


def cryptofuse_deposit(provider_ref: str, deposit_id: str, amount: str) -> tuple[bytes, dict]:
    """A `confirming` webhook with one confirmed deposit, shaped and signed as the sandbox does."""
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = dumps_exact(
        {
            "transaction_id": provider_ref,
            "event": "payment_status_update",
            "status": "confirming",
            "timestamp": moment,
            "data": {
                "transaction_id": provider_ref,
                "status": "confirming",
                "currency": "USDTTRC20",
                "payment_history": [
                    {
                        "deposit_id": deposit_id,
                        "amount": amount,
                        "transaction_hash": "0x" + uuid.uuid4().hex * 2,
                        "confirmations": 20,
                        "timestamp": moment,
                    }
                ],
            },
        }
    ).encode()
    config = SECRETS["cryptofuse"]
    assert isinstance(config, cryptofuse.SandboxConfig)
    secret = config.webhook_secret
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Signature": cryptofuse_sign(body, secret),
    }
    return body, headers


class ConflictCounter:
    """Counts the appends refused for a stale expected version (each one is a retry)."""

    def __init__(self, store: PostgresEventStore) -> None:
        self.conflicts = 0
        self._append = store.append
        store.append = self.append  # type: ignore[method-assign]

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._append(*args, **kwargs)
        except ConcurrencyConflict:
            self.conflicts += 1
            raise


async def deliver_all(bench: Rig, deliveries: list[tuple[bytes, dict]]) -> list[tuple[int, Any]]:
    async def one(body: bytes, headers: dict) -> tuple[int, Any]:
        async with bench.ledger.http.post(
            bench.ledger.url + "/v1/webhooks/cryptofuse", data=body, headers=headers
        ) as reply:
            return reply.status, await reply.json(content_type=None)

    return list(await asyncio.gather(*(one(body, headers) for body, headers in deliveries)))


async def test_twenty_concurrent_deposits_for_one_payment_are_each_applied_once(store, capsys):
    async with rig(store, ("cryptofuse",), background=True) as bench:
        payment = await bench.create_payment("cryptofuse")
        share = Decimal(payment["expected"]["amount"]) / WRITERS
        deliveries = [
            cryptofuse_deposit(payment["provider_ref"], f"dep_{i:02d}", format(share, "f"))
            for i in range(WRITERS)
        ]
        counter = ConflictCounter(store)
        started = time.monotonic()
        answers = await deliver_all(bench, deliveries)
        elapsed = time.monotonic() - started
        assert [200] * WRITERS == [status for status, _ in answers], answers
        assert ["received"] * WRITERS == [reply["outcome"] for _, reply in answers]
        view = await bench.view(payment["payment_id"])
        types = await bench.event_types(payment["payment_id"])
        outcomes = await recorded_outcomes(bench, payment["payment_id"])
    assert ["verified"] * WRITERS == outcomes
    assert WRITERS == len(view["deposits"])
    assert (view["expected"]["amount"], "exact", "completed") == (
        view["received"],
        view["coverage"],
        view["status"],
    )
    assert WRITERS == types.count("Payment.DeliveryRecorded")
    assert WRITERS == types.count("Payment.DepositDetected")
    with capsys.disabled():
        print(
            f"\n{WRITERS} concurrent deposits: {elapsed:.2f}s, {counter.conflicts} conflict retries"
        )


async def test_twenty_concurrent_copies_of_one_delivery_apply_once(store, capsys):
    async with rig(store, ("cryptofuse",), background=True) as bench:
        payment = await bench.create_payment("cryptofuse")
        one = cryptofuse_deposit(payment["provider_ref"], "dep_once", payment["expected"]["amount"])
        counter = ConflictCounter(store)
        started = time.monotonic()
        answers = await deliver_all(bench, [one] * WRITERS)
        elapsed = time.monotonic() - started
        assert [200] * WRITERS == [status for status, _ in answers], answers
        outcomes = sorted(reply["outcome"] for _, reply in answers)
        assert ["duplicate"] * (WRITERS - 1) + ["received"] == outcomes
        view = await bench.view(payment["payment_id"])
        types = await bench.event_types(payment["payment_id"])
        recorded = await recorded_outcomes(bench, payment["payment_id"])
        copies = await receipts(store, ReceiptKind.DUPLICATE, "cryptofuse")
    assert (payment["expected"]["amount"], 1) == (view["received"], len(view["deposits"]))
    # One copy received and applied; the others caught on receipt, each a duplicate receipt.
    assert ["verified"] == recorded
    assert 1 == types.count("Payment.DeliveryRecorded")
    assert 1 == types.count("Payment.DepositDetected")
    assert WRITERS - 1 == len(copies)
    with capsys.disabled():
        print(
            f"\n{WRITERS} concurrent copies: {elapsed:.2f}s, {counter.conflicts} conflict retries"
        )

"""Asking the provider about deliveries the ledger could not authenticate (API.md, "Unverified
deliveries and provider queries"; DESIGN.md, Ingestion).

A delivery kept unverified in a payment's stream (its signature or token was missing or wrong, or
it failed the subject's own checks) at a provider whose client offers a status query makes the
ledger ask the provider about that payment; `query_answers` keeps the answer and applies it.

Never inside the webhook request: the provider's 401 must not wait on another provider call.
What still needs asking is read from the log (an unverified delivery newer than the last answer's
`covers_through`), so queued work survives a crash; `query_schedule` keeps the timing: one query
at a time per payment, spaced, a rate per provider, backoff after failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from adapters.providers.contract import (
    Operation,
    OperationNotSupported,
    ProviderAdapter,
    ProviderCallFailed,
    ProviderExchange,
)
from adapters.services.query_answers import QUERY_SOURCE, record_answer, record_exchanges
from adapters.services.query_schedule import Asking, QueryPolicy, QuerySchedule, RateLimit
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.repository import AggregateRepository
from ledger.payment import Payment
from ledger.ports import PARTITION_COUNT

log = logging.getLogger(__name__)

_SCAN_BATCH = 1000
# Only deliveries recorded in payment streams can ask for a query; the type filter runs in the
# database, so a pass reads no other event's payload.
_SCAN = (
    "SELECT position, stream_id, payload FROM events"
    " WHERE partition = $1 AND position > $2 AND position <= $3"
    " AND type = 'Payment.DeliveryRecorded' ORDER BY position LIMIT $4"
)
# Every delivery that matters to the scan holds one of these; the others are not parsed.
_MARKS = (b'"outcome":"unverified"', QUERY_SOURCE.encode())


def can_ask(adapter: ProviderAdapter) -> bool:
    """Whether the provider's client offers a status query at all."""
    return adapter.supports(Operation.QUERY_PAYMENT)


@dataclass(frozen=True, slots=True)
class QueryPass:
    asked: int  # answers recorded
    confirmed: int  # unverified deliveries those answers confirmed
    failed: int  # queries that brought no answer: retried after a pause
    waiting: int  # payments still to ask (paused, spaced, or beyond the rate)


class _Exchanges:
    """Collects the outbound attempts of one query, to record them with its answer."""

    def __init__(self) -> None:
        self.exchanges: list[ProviderExchange] = []

    async def __call__(self, exchange: ProviderExchange) -> None:
        self.exchanges.append(exchange)


class ProviderQueries:
    """`run_pending()` asks about everything due now; `run_forever(interval)` keeps doing it,
    woken early by `wake()` (which ingestion calls after keeping a delivery unverified)."""

    def __init__(
        self,
        store: PostgresEventStore,
        adapters: Mapping[str, ProviderAdapter],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        policy: QueryPolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.clock = clock
        self.policy = policy or QueryPolicy()
        self.monotonic = monotonic
        self.schedule = QuerySchedule(self.policy)
        self._scanned = [0] * PARTITION_COUNT
        self._limits: dict[str, RateLimit] = {}
        self._woken = asyncio.Event()
        self._one_pass = asyncio.Lock()

    def wake(self) -> None:
        self._woken.set()

    async def run_forever(
        self, interval_seconds: float, healthy: Callable[[], None] | None = None
    ) -> None:
        """Runs a pass, then waits for `wake()` or the interval. A pass that raises (the
        database is gone) ends the loop: the caller's supervisor restarts it."""
        while True:
            self._woken.clear()
            result = await self.run_pending()
            if result.asked or result.failed:
                log.info("provider queries: %s", result)
            if healthy is not None:
                healthy()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), interval_seconds)

    async def run_pending(self) -> QueryPass:
        """Reads the log for new unverified deliveries and answers, then asks about every
        payment due now, each provider at its rate (providers in parallel)."""
        async with self._one_pass:
            await self._scan()
            due: dict[str, list[Asking]] = defaultdict(list)
            for asking in self.schedule.due(self.monotonic()):
                due[asking.provider].append(asking)
            passes = await asyncio.gather(*(self._ask_all(p, a) for p, a in due.items()))
            self.schedule.forget_settled(self.monotonic())
            return QueryPass(
                asked=sum(p.asked for p in passes),
                confirmed=sum(p.confirmed for p in passes),
                failed=sum(p.failed for p in passes),
                waiting=self.schedule.waiting(),
            )

    async def _scan(self) -> None:
        for partition in range(PARTITION_COUNT):
            head = (await self.store.head(partition)).position
            while True:
                rows = await self.store.pool.fetch(
                    _SCAN, partition, self._scanned[partition], head, _SCAN_BATCH
                )
                for row in rows:
                    self._note(row["stream_id"], row["position"], bytes(row["payload"]))
                if len(rows) < _SCAN_BATCH:
                    # The log is gap-free: nothing at or below `head` can appear later.
                    self._scanned[partition] = head
                    break
                self._scanned[partition] = rows[-1]["position"]

    def _note(self, stream_id: str, position: int, payload: bytes) -> None:
        if not any(mark in payload for mark in _MARKS):
            return
        delivery = json.loads(payload)["delivery"]
        if delivery.get("source") == QUERY_SOURCE:
            covers_through = delivery.get("covers_through")
            if isinstance(covers_through, int):
                self.schedule.note_answered(stream_id, covers_through)
            return
        provider = delivery.get("provider")
        adapter = self.adapters.get(provider) if isinstance(provider, str) else None
        if delivery.get("outcome") == "unverified" and adapter is not None and can_ask(adapter):
            self.schedule.note_unverified(stream_id, adapter.name, position)

    async def _ask_all(self, provider: str, askings: list[Asking]) -> QueryPass:
        limit = self._limits.get(provider)
        if limit is None:
            limit = RateLimit(self.policy.rate_per_second, self.policy.burst, self.monotonic())
            self._limits[provider] = limit
        asked = confirmed = failed = 0
        for asking in askings:
            await asyncio.sleep(limit.reserve(self.monotonic()))
            self.schedule.start(asking)
            try:
                answer = await self._ask(asking)
            except asyncio.CancelledError:
                self.schedule.failed(asking, self.monotonic())  # asked again after a restart
                raise
            except Exception as error:  # noqa: BLE001 - one payment's failure waits, the rest go on
                log.warning(
                    "query about payment %s at %s failed; retried later: %r",
                    asking.stream_id,
                    provider,
                    error,
                )
                self.schedule.failed(asking, self.monotonic())
                failed += 1
                continue
            if answer is None:
                self.schedule.give_up(asking)
                continue
            self.schedule.answered(asking, self.monotonic())
            asked += 1
            confirmed += answer
        return QueryPass(asked=asked, confirmed=confirmed, failed=failed, waiting=0)

    async def _ask(self, asking: Asking) -> int | None:
        """Asks the provider about one payment and records the answer; returns how many
        deliveries it confirmed, or None when there is nothing that could be asked."""
        adapter = self.adapters[asking.provider]
        payment = await AggregateRepository(self.store).load(Payment, asking.stream_id)
        if payment is None or not payment.provider_ref:
            return None  # not a payment, or the provider has not taken it: nothing to name
        calls = _Exchanges()
        try:
            answer = await adapter.client.query_payment(
                payment.provider_ref, payment.order_id, calls
            )
        except OperationNotSupported as refused:
            log.info("payment %s cannot be asked about: %s", asking.stream_id, refused)
            await record_exchanges(self.store, asking.stream_id, calls.exchanges)
            return None
        except ProviderCallFailed:
            await record_exchanges(self.store, asking.stream_id, calls.exchanges)
            raise
        recorded = await record_answer(
            self.store,
            adapter,
            asking.stream_id,
            answer,
            calls.exchanges,
            covers_through=asking.covers_through,
            received_at=self.clock(),
        )
        return len(recorded.confirmed)

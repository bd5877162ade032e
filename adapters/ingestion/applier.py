"""The applier: received deliveries applied in log order, exactly once.

It reads the log after its position, only the events it acts on (`Delivery.Received`,
`Delivery.Rejected` and the acceptance of a payment or withdrawal by its provider), and applies a
pass of them as one append (`Batch`): every subject loaded once, its new events, the records that
belong to no aggregate, and the applier's new position. The position is a claim whose holder
names it (`applier@<position>`) and which moves only from the holder it had when the pass began:
it commits with the pass's effects, in the same statement, and a second applier (another process)
that started from the same position is refused instead of applying the pass twice.

A pass stops before an acceptance when it holds unmatched records not committed yet, so that the
acceptance finds every unmatched delivery the log holds before it, committed; a delivery after it
finds its subject. Either way, one of the two sees the other, which no pair of concurrent
requests could promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from adapters.ingestion.batch import Batch
from adapters.ingestion.effects import PassEffects
from adapters.ingestion.reading import (
    READ_TYPES,
    DeliveryReading,
    ToApply,
    accepted_type,
)
from adapters.ingestion.unmatched import index_keys
from adapters.providers.contract import (
    ProviderAdapter,
)
from adapters.storage.postgres_store import PostgresEventStore, recorded_event
from adapters.storage.repository import AggregateRepository
from ledger.deliveries import (
    DeliveryOutcome,
    ReceiptKind,
)
from ledger.errors import ConcurrencyConflict
from ledger.ports import Claim, ClaimTaken, RecordedEvent

log = logging.getLogger(__name__)

POSITION_CLAIM = "consumer_position"
PASS_EVENTS_MAX = 500
# A pass is done again, over half as many items, when another writer committed to one of its
# subjects meanwhile: nine halvings bring 500 items to one, and one subject settles unless it is
# written continuously.
PASS_ATTEMPTS = 30
POLL_SECONDS = 0.5

_READ = (
    "SELECT partition, position, stream_id, version, type, payload, metadata, recorded_at,"
    " prev_hash, hash FROM events WHERE partition = $1 AND position > $2 AND position <= $3"
    " AND type = ANY($4::text[]) ORDER BY position LIMIT $5"
)


@dataclass(frozen=True, slots=True)
class AppliedPass:
    position: int
    lag_seconds: list[float]  # from each delivery's receipt to its pass's commit
    outcomes: list[DeliveryOutcome]


class PositionMoved(Exception):
    """Another applier committed past the position this one started from."""


class DeliveryApplier:
    name = "applier"

    def __init__(
        self,
        store: PostgresEventStore,
        adapters: Mapping[str, ProviderAdapter],
        *,
        partition: int = 0,
        on_unverified: Callable[[], None] = lambda: None,
        on_pass: Callable[[AppliedPass], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.repository = AggregateRepository(store)
        self.reading = DeliveryReading(adapters)
        self.effects = PassEffects(store, adapters, self.reading)
        self.partition = partition
        self.on_unverified = on_unverified
        self.on_pass = on_pass
        self.position = 0  # how far it has read; past `committed` over events it skips
        self.committed: int | None = None  # the position its claim holds, once read
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, healthy: Callable[[], None]) -> None:
        """The background loop: catches up, then waits for a receipt or the poll interval."""
        while True:
            await self.catch_up()
            healthy()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def catch_up(self, until: int | None = None) -> int:
        """Applies everything up to `until` (the log's head when not given); returns the
        position reached. Requests that must see a delivery's effect call this too."""
        async with self._lock:
            if self.committed is None:
                self.committed = await self._committed_position()
                self.position = max(self.position, self.committed)
            if until is None:
                until = (await self.store.head(self.partition)).position
            while self.position < until:
                try:
                    await self._pass(until)
                except PositionMoved:
                    self.committed = await self._committed_position()
                    self.position = self.committed
            return self.position

    async def lag(self) -> tuple[int, int]:
        """(position, head): how far the applier is, and how far the log is."""
        head = (await self.store.head(self.partition)).position
        return self.position, head

    async def pending(self, limit: int) -> int:
        """How many events it still has to act on (counted up to `limit`): its lag, without
        the events it skips (its own effects among them)."""
        count = await self.store.pool.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM events WHERE partition = $1 AND position > $2"
            " AND type = ANY($3::text[]) LIMIT $4) AS pending",
            self.partition,
            self.position,
            READ_TYPES,
            limit,
        )
        return int(count)

    async def _committed_position(self) -> int:
        claim = await self.store.find_claim(POSITION_CLAIM, self._position_key)
        return int(claim.value) if claim is not None else 0

    @property
    def _position_key(self) -> str:
        return f"{self.name}:{self.partition}"

    async def _pass(self, until: int) -> None:
        rows = await self.store.pool.fetch(
            _READ, self.partition, self.position, until, READ_TYPES, PASS_EVENTS_MAX
        )
        items = [self.reading.read(recorded_event(row)) for row in rows]
        while items:
            done = await self._apply_group(items)
            items = items[done:]
        if len(rows) < PASS_EVENTS_MAX:
            self.position = until  # nothing else to act on up to there

    async def _apply_group(self, items: list[ToApply]) -> int:
        """Applies a prefix of `items` as one append, up to (not including) an acceptance that
        must first see this group's unmatched records committed; returns how many it applied.

        Another writer (the sweeper, a provider query, settlement) committing to one of the
        pass's subjects refuses the whole append; the pass is then done again from what is
        stored, over half as many items each time, so that under steady writes elsewhere a
        small pass still gets through instead of a large one failing forever."""
        assert self.committed is not None
        for _attempt in range(PASS_ATTEMPTS):
            batch = Batch(self.store, self.repository)
            facts = [fact for item in items for fact in item.subject_facts]
            accepted = {i.event.stream_id: accepted_type(i.event) for i in items if i.acceptance}
            await batch.prefetch(facts, accepted)
            await batch.prefetch_claims(self._unmatched_claims(items, batch))
            applied = 0
            for item in items:
                if item.acceptance and batch.holds_unmatched:
                    break
                await self._apply_item(item, batch)
                applied += 1
            new_position = items[applied - 1].event.position
            position = Claim(
                POSITION_CLAIM,
                self._position_key,
                f"{self.name}@{new_position}",
                str(new_position),
                replaces=f"{self.name}@{self.committed}",
            )
            try:
                await batch.commit(position)
            except ConcurrencyConflict as conflict:
                # The next try loads its subjects again (the cache asks the store for what
                # came after what it holds), over fewer items.
                log.info("applier pass refused (%s); again over fewer items", conflict)
                items = items[: max(1, applied // 2)]
                continue
            except ClaimTaken as taken:
                if taken.claim.namespace == POSITION_CLAIM:
                    raise PositionMoved from taken
                raise
            self.committed = self.position = new_position
            self._passed([item.event for item in items[:applied]], batch)
            return applied
        raise ConcurrencyConflict(f"applier pass from {items[0].event.position} did not settle")

    def _passed(self, group: list[RecordedEvent], batch: Batch) -> None:
        now = datetime.now(UTC)
        receipts = [e for e in group if e.type == ReceiptKind.RECEIVED.value]
        lag = [max(0.0, (now - e.recorded_at).total_seconds()) for e in receipts]
        if DeliveryOutcome.UNVERIFIED in batch.outcomes:
            self.on_unverified()
        self.on_pass(AppliedPass(self.committed or 0, lag, list(batch.outcomes)))

    @staticmethod
    def _unmatched_claims(items: list[ToApply], batch: Batch) -> list[tuple[str, str]]:
        """The unmatched index's claims that deliveries naming no known subject will read."""
        return [
            claim
            for item in items
            if item.received is not None and item.hold_unmatched
            for fact in item.subject_facts
            if not batch.names_known_subject(fact)
            for claim in index_keys(fact, item.received).claims
        ]

    async def _apply_item(self, item: ToApply, batch: Batch) -> None:
        if item.acceptance:
            await self.effects.match_waiting(item.event, batch)
        elif item.received is not None:
            await self.effects.apply_facts(
                list(item.facts),
                item.received,
                item.document,
                batch,
                hold_unmatched=item.hold_unmatched,
            )


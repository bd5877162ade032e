"""Loads aggregates and saves their new events with expected versions.

A load starts from the store's shared aggregate cache (adapters/storage/aggregate_cache.py) and
asks the store only for the events after the cached version, so a busy payment is not replayed
from its first event on every request. The cache only ever holds states rebuilt from stored
events (never an aggregate a caller changed), and it cannot make a writer's append wrong: the
append's expected version is the version the writer loaded, which the store checks.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from eventsourcing.domain import Aggregate

from adapters.storage.aggregate_cache import AggregateCache
from adapters.storage.postgres_store import PostgresEventStore
from ledger.codec import decode, encode_pending
from ledger.payment import Payment
from ledger.ports import Claim, EventStore, NewEvent, RecordedEvent
from ledger.withdrawal import Withdrawal

AggregateT = TypeVar("AggregateT", bound=Aggregate)

_NAMES: dict[type[Aggregate], str] = {Payment: "Payment", Withdrawal: "Withdrawal"}

# One cache per store, shared by every repository made on it (the services make theirs per call).
_SHARED: weakref.WeakKeyDictionary[Any, AggregateCache] = weakref.WeakKeyDictionary()


def shared_cache(store: EventStore) -> AggregateCache | None:
    """The cache of `store`'s aggregates; None for a store that cannot be weakly referenced."""
    try:
        cache = _SHARED.get(store)
        if cache is None:
            cache = _SHARED[store] = AggregateCache()
    except TypeError:
        return None
    return cache


class AggregateRepository:
    def __init__(self, store: EventStore, cache: AggregateCache | None = None) -> None:
        self.store = store
        self.cache = cache if cache is not None else shared_cache(store)

    async def load(
        self, aggregate_type: type[AggregateT], aggregate_id: uuid.UUID | str
    ) -> AggregateT | None:
        stream_id = str(aggregate_id)
        aggregate: Any = self.cache.get(stream_id) if self.cache is not None else None
        after = aggregate.version if aggregate is not None else 0
        events = await self.store.read_stream(stream_id, after_version=after)
        if aggregate is None and not events:
            return None
        for recorded in events:
            aggregate = decode(recorded).mutate(aggregate)
        if events and self.cache is not None:
            self.cache.put(stream_id, aggregate)
        if not isinstance(aggregate, aggregate_type):
            return None  # the id names another kind of aggregate
        return aggregate

    async def load_many(
        self, wanted: Mapping[str, type[Aggregate]], store: PostgresEventStore
    ) -> dict[str, Aggregate]:
        """The aggregates of several streams, in one read of `store`: each from its cached state
        with the events after it. Streams that hold no aggregate of the type asked are absent."""
        start: dict[str, Any] = {
            stream: self.cache.get(stream) if self.cache is not None else None for stream in wanted
        }
        after = {stream: held.version if held is not None else 0 for stream, held in start.items()}
        loaded: dict[str, Aggregate] = {}
        for stream, events in (await store.read_streams(after)).items():
            aggregate = start[stream]
            for recorded in events:
                aggregate = decode(recorded).mutate(aggregate)
            if events and self.cache is not None:
                self.cache.put(stream, aggregate)
            if isinstance(aggregate, wanted[stream]):
                loaded[stream] = aggregate
        return loaded

    async def save(
        self, *aggregates: Aggregate, claims: Sequence[Claim] = (), extra: Sequence[NewEvent] = ()
    ) -> list[RecordedEvent]:
        """Appends every aggregate's pending events (and `extra` events) in one transaction."""
        new_events: list[NewEvent] = []
        expected: dict[str, int] = {}
        for aggregate in aggregates:
            pending = encode_pending(aggregate, _NAMES[type(aggregate)])
            if pending:
                expected[pending[0].stream_id] = pending[0].version - 1
                new_events.extend(pending)
        for event in extra:
            expected.setdefault(event.stream_id, event.version - 1)
            new_events.append(event)
        if not new_events and not claims:
            return []
        return await self.store.append(new_events, expected_versions=expected, claims=claims)

"""Payment and withdrawal states as a projection walks the log: before and after each event.

Projections derive their rows from the aggregate's state (the same code the API uses), so their
answers cannot drift from the domain's. Walking the global log, a projection keeps recently seen
aggregates in memory; a miss, or a cached state that does not sit just before the event (a rolled
back batch leaves the cache ahead), is rebuilt from the stream up to that event.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ledger.codec import AGGREGATE_TYPES, aggregate_name_of, decode, rebuild
from ledger.ports import RecordedEvent

Derived = TypeVar("Derived")

# Loads a stream's events with versions below the given one, oldest first.
StreamLoader = Callable[[str, int], Awaitable[list[RecordedEvent]]]


def is_subject_event(event: RecordedEvent) -> bool:
    return "topic" in event.metadata and aggregate_name_of(event.type) in AGGREGATE_TYPES


class SubjectStates:
    def __init__(self, load_before: StreamLoader, capacity: int = 20_000) -> None:
        self._load_before = load_before
        self._capacity = capacity
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def forget(self) -> None:
        self._cache.clear()

    async def _state_before(self, event: RecordedEvent) -> Any:
        cached = self._cache.get(event.stream_id)
        if cached is not None and cached.version == event.version - 1:
            self._cache.move_to_end(event.stream_id)
            return cached
        if event.version == 1:
            return None
        return rebuild(await self._load_before(event.stream_id, event.version))

    async def transition(
        self, event: RecordedEvent, derive: Callable[[Any], Derived]
    ) -> tuple[Derived | None, Derived, Any]:
        """`derive` of the state before and after `event`, and the state after it."""
        aggregate = await self._state_before(event)
        before = derive(aggregate) if aggregate is not None else None
        aggregate = decode(event).mutate(aggregate)
        after = derive(aggregate)
        self._cache[event.stream_id] = aggregate
        self._cache.move_to_end(event.stream_id)
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return before, after, aggregate

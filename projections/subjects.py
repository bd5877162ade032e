"""Payment and withdrawal states as a projection walks the log: before and after each event.

Projections derive their rows from the aggregate's state (the same code the API uses), so their
answers cannot drift from the domain's. Walking the global log, a projection keeps recently seen
aggregates in memory; a miss, or a cached state that does not sit just before the event (a rolled
back batch leaves the cache ahead), is rebuilt from the stream up to that event.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, Generic, TypeVar

from ledger.codec import AGGREGATE_TYPES, aggregate_name_of, decode, rebuild
from ledger.ports import RecordedEvent

Derived = TypeVar("Derived")

# Loads a stream's events with versions below the given one, oldest first.
StreamLoader = Callable[[str, int], Awaitable[list[RecordedEvent]]]


# The event types of payments and withdrawals, as prefixes of their names.
SUBJECT_TYPE_PREFIXES = tuple(f"{name}." for name in AGGREGATE_TYPES)


def is_subject_event(event: RecordedEvent) -> bool:
    return _names_subject(event.type) and "topic" in event.metadata


@cache  # a handful of event types, asked about for every event a projection reads
def _names_subject(recorded_type: str) -> bool:
    return aggregate_name_of(recorded_type) in AGGREGATE_TYPES


class SubjectStates(Generic[Derived]):
    """`derive` is the projection's reading of a state (its postings, its findings). What it
    derived after one event is kept with the state, as the next event's "before": each state is
    derived once, not twice."""

    def __init__(
        self, load_before: StreamLoader, derive: Callable[[Any], Derived], capacity: int = 20_000
    ) -> None:
        self._load_before = load_before
        self._derive = derive
        self._capacity = capacity
        self._cache: OrderedDict[str, tuple[Any, Derived]] = OrderedDict()

    def forget(self) -> None:
        self._cache.clear()

    async def _state_before(self, event: RecordedEvent) -> tuple[Any, Derived | None]:
        cached = self._cache.get(event.stream_id)
        if cached is not None and cached[0].version == event.version - 1:
            self._cache.move_to_end(event.stream_id)
            return cached
        if event.version == 1:
            return None, None
        aggregate = rebuild(await self._load_before(event.stream_id, event.version))
        return aggregate, self._derive(aggregate)

    async def transition(self, event: RecordedEvent) -> tuple[Derived | None, Derived, Any]:
        """What `derive` says of the state before and after `event`, and the state after it."""
        aggregate, before = await self._state_before(event)
        aggregate = decode(event).mutate(aggregate)
        after = self._derive(aggregate)
        self._cache[event.stream_id] = (aggregate, after)
        self._cache.move_to_end(event.stream_id)
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return before, after, aggregate

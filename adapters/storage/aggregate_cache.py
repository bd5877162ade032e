"""Recently loaded aggregates, so that a load replays only the events after the cached version.

The cache keeps a private copy of each aggregate's state at a known `(stream, version)` and hands
out fresh copies: a caller may change what it loaded (new events pending, a command refused
halfway) without changing what the next caller gets. It never decides what is current: a load
always asks the store for the events after the cached version, and a writer's append still
carries the version it loaded as its expected version, so an aggregate another process moved on
is either caught up by that read or refused by the store's optimistic concurrency.

Bounded by count, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, TypeVar

from eventsourcing.domain import Aggregate

DEFAULT_CAPACITY = 10_000

AggregateT = TypeVar("AggregateT", bound=Aggregate)

# Attributes eventsourcing keeps per instance that must not be shared between copies.
_PENDING = "_pending_events"


def _thawed(value: Any) -> Any:
    """A copy of the mutable containers in `value`; immutable leaves (str, Decimal, datetime,
    frozen dataclasses, frozensets, tuples of such) are shared, which is what makes this cheaper
    than `copy.deepcopy`."""
    kind = type(value)
    if kind is dict:
        return {key: _thawed(item) for key, item in value.items()}
    if kind is list:
        return [_thawed(item) for item in value]
    if kind is set:
        return {_thawed(item) for item in value}
    return value


def copy_aggregate(aggregate: AggregateT) -> AggregateT:
    """An independent copy of `aggregate`'s state, with no pending events."""
    copied: Any = object.__new__(type(aggregate))
    state = dict(aggregate.__dict__)
    for key, value in state.items():  # replacing values only: the dict keeps its size
        kind = type(value)
        if kind is dict or kind is list or kind is set:
            state[key] = _thawed(value)
    state[_PENDING] = []
    copied.__dict__.update(state)
    copy: AggregateT = copied
    return copy


class AggregateCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, Aggregate] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, stream_id: str) -> Aggregate | None:
        """A private copy of the cached state of `stream_id` (its version says how far it is)."""
        cached = self._entries.get(stream_id)
        if cached is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(stream_id)
        return copy_aggregate(cached)

    def put(self, stream_id: str, aggregate: Aggregate) -> None:
        """Keeps a copy of `aggregate`'s state, unless the cache already holds a later one (two
        loads of the same stream finishing out of order)."""
        held = self._entries.get(stream_id)
        if held is not None and held.version > aggregate.version:
            return
        self._entries[stream_id] = copy_aggregate(aggregate)
        self._entries.move_to_end(stream_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def discard(self, stream_id: str) -> None:
        self._entries.pop(stream_id, None)

    def clear(self) -> None:
        self._entries.clear()

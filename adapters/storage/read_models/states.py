"""Subject states for the projections of one runner, decoded and folded once per batch.

Every projection that derives rows from payment and withdrawal states needs, for each of their
events, the state before and after it. Run alone, a projection folds them itself
(projections/subjects.py). When the runner gives one batch to several projections, it first folds
the batch here, once (`SharedFold.fold`): each subject event's state before and after it, as
copies that are never changed afterwards, so each projection reads the state at its own event and
not the batch's last. Each projection then only derives (its postings, its findings) from them,
through `ProjectionStates`, and derivations two projections share (the postings a state stands
for) are worked out once per state (`shared`).

States are a function of the log alone (stored events never change), so nothing here can be left
ahead of a read model by a rolled-back batch; every use checks versions all the same.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from adapters.storage.aggregate_cache import copy_aggregate
from ledger.codec import decode, rebuild
from ledger.ports import RecordedEvent
from projections.subjects import StreamLoader, SubjectStates, is_subject_event

Derived = TypeVar("Derived")
Result = TypeVar("Result")

CAPACITY = 20_000

_CURRENT: ContextVar[BatchStates | None] = ContextVar("batch_states", default=None)


class BatchStates:
    """The states of one batch's subject events, by position: (before, after); and what was
    derived of them once for every projection (`memo`)."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple[Any, Any]] = {}
        self._memo: dict[tuple[int, str], tuple[Any, Any]] = {}

    def memo(self, name: str, state: Any, work: Callable[[Any], Result]) -> Result:
        """`work(state)`, done once per state of this batch under `name`."""
        key = (id(state), name)
        held = self._memo.get(key)
        if held is not None and held[0] is state:
            result: Result = held[1]
            return result
        result = work(state)
        self._memo[key] = (state, result)
        return result

    @contextmanager
    def current(self) -> Iterator[None]:
        """Makes these the states projections read while the block runs."""
        token = _CURRENT.set(self)
        try:
            yield
        finally:
            _CURRENT.reset(token)


class SharedFold:
    """Folds batches into BatchStates, keeping the last state of recent streams between batches
    (each batch gets its own BatchStates: two batches of one runner may interleave)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._latest: OrderedDict[str, Any] = OrderedDict()  # stream -> last state folded

    def forget(self) -> None:
        self._latest.clear()

    async def fold(self, events: list[RecordedEvent], load_before: StreamLoader) -> BatchStates:
        states = BatchStates()
        for event in events:
            if not is_subject_event(event):
                continue
            before = self._latest.get(event.stream_id)
            if before is None or before.version != event.version - 1:
                before = None
                if event.version > 1:
                    before = rebuild(await load_before(event.stream_id, event.version))
            # A copy is folded, never `before` itself: states handed out never change.
            after = decode(event).mutate(copy_aggregate(before) if before is not None else None)
            self._latest[event.stream_id] = after
            self._latest.move_to_end(event.stream_id)
            if len(self._latest) > self._capacity:
                self._latest.popitem(last=False)
            states.steps[event.position] = (before, after)
        return states


def shared(name: str, work: Callable[[Any], Result], state: Any) -> Result:
    """`work(state)`, once per state and batch when projections share a fold (the states are
    then never changed); otherwise simply `work(state)`."""
    states = _CURRENT.get()
    if states is None:
        return work(state)
    return states.memo(name, state, work)


class ProjectionStates(Generic[Derived]):
    """What one projection derived of each state, from the shared fold when the runner made one
    for this batch, else from the projection's own fold."""

    def __init__(
        self,
        load_before: Callable[[str, int], Awaitable[list[RecordedEvent]]],
        derive: Callable[[Any], Derived],
        capacity: int = CAPACITY,
    ) -> None:
        self._derive = derive
        self._capacity = capacity
        self._own: SubjectStates[Derived] = SubjectStates(load_before, derive, capacity)
        self._derived: OrderedDict[str, tuple[int, Derived]] = OrderedDict()

    @property
    def _load_before(self) -> StreamLoader:  # bench/projection_catchup.py counts reloads
        return self._own._load_before  # noqa: SLF001

    @_load_before.setter
    def _load_before(self, loader: StreamLoader) -> None:
        self._own._load_before = loader  # noqa: SLF001

    def forget(self) -> None:
        self._own.forget()
        self._derived.clear()

    async def transition(self, event: RecordedEvent) -> tuple[Derived | None, Derived, Any]:
        """What `derive` says of the state before and after `event`, and the state after it."""
        states = _CURRENT.get()
        step = states.steps.get(event.position) if states is not None else None
        if step is None:
            return await self._own.transition(event)
        state_before, state_after = step
        held = self._derived.get(event.stream_id)
        if held is not None and held[0] == event.version - 1:
            before: Derived | None = held[1]
        else:
            before = None if state_before is None else self._derive(state_before)
        after = self._derive(state_after)
        self._derived[event.stream_id] = (event.version, after)
        self._derived.move_to_end(event.stream_id)
        if len(self._derived) > self._capacity:
            self._derived.popitem(last=False)
        return before, after, state_after

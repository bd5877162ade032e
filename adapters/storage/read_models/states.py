"""Subject states for the projections of one runner, decoded, folded and derived once per batch.

Every projection that derives rows from payment and withdrawal states needs, for each of their
events, what it derives (its postings, its findings) of the state before and after it. Run
alone, a projection folds them itself (projections/subjects.py). When the runner gives one batch
to several projections, it first folds the batch here, once (`SharedFold.fold`), and each
projection's `derive` is called on each state as the fold reaches it, before the next event
changes it: the fold changes each state in place and copies nothing, and what a projection
derived of one event's state stays what it was. Derivations two projections share (the postings
a state stands for) are worked out once per state (`shared`). A projection then only looks up
what was derived for it (`ProjectionStates.transition`).

States are a function of the log alone (stored events never change), so nothing here can be left
ahead of a read model by a rolled-back batch; every use checks versions all the same.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ledger.codec import decode, rebuild
from ledger.ports import RecordedEvent
from projections.subjects import StreamLoader, SubjectStates, is_subject_event

Derived = TypeVar("Derived")
Result = TypeVar("Result")

CAPACITY = 20_000

# What each projection of a batch derives of a state, by projection name.
Derivers = Mapping[str, Callable[[Any], Any]]

_CURRENT: ContextVar[BatchStates | None] = ContextVar("batch_states", default=None)


@dataclass(frozen=True, slots=True)
class Step:
    """One subject event of a batch: what each projection derived of the state before it (None
    for a stream's first event) and after it, and the subject itself. The subject is the live
    state, later events of the batch change it: read of it only what never changes (its type,
    its provider), or, after the whole batch, its last state."""

    before: Mapping[str, Any] | None
    after: Mapping[str, Any]
    subject: Any


class BatchStates:
    """The steps of one batch's subject events, by position; and what was derived of a state
    once for every projection (`memo`)."""

    def __init__(self) -> None:
        self.steps: dict[int, Step] = {}
        self._memo: dict[tuple[int, int, str], tuple[Any, Any]] = {}

    def memo(self, name: str, state: Any, work: Callable[[Any], Result]) -> Result:
        """`work(state)`, done once per state of this batch under `name`. States change in place,
        so a state is the object at a version."""
        key = (id(state), state.version, name)
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
    """Folds batches into BatchStates, keeping the last state of recent streams between batches,
    with what was derived of it (each batch gets its own BatchStates)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        # stream -> its last state folded, and what projections derived of it
        self._latest: OrderedDict[str, tuple[Any, dict[str, Any]]] = OrderedDict()

    def forget(self) -> None:
        self._latest.clear()

    async def fold(
        self, events: list[RecordedEvent], load_before: StreamLoader, derivers: Derivers
    ) -> BatchStates:
        states = BatchStates()
        with states.current():  # `shared` derivations are memoized for the batch
            for event in events:
                if not is_subject_event(event):
                    continue
                state, before = await self._before(event, load_before, derivers)
                state = decode(event).mutate(state)
                after = {name: derive(state) for name, derive in derivers.items()}
                self._latest[event.stream_id] = (state, after)
                self._latest.move_to_end(event.stream_id)
                if len(self._latest) > self._capacity:
                    self._latest.popitem(last=False)
                states.steps[event.position] = Step(before, after, state)
        return states

    async def _before(
        self, event: RecordedEvent, load_before: StreamLoader, derivers: Derivers
    ) -> tuple[Any, dict[str, Any] | None]:
        """The state just before `event` and what each projection derived of it (what a
        projection missing from an earlier batch's group derives now, before it changes)."""
        held = self._latest.get(event.stream_id)
        if held is not None and held[0].version == event.version - 1:
            state, derived = held
            missing = {n: d(state) for n, d in derivers.items() if n not in derived}
            return state, {**derived, **missing} if missing else derived
        if event.version == 1:
            return None, None
        state = rebuild(await load_before(event.stream_id, event.version))
        return state, {name: derive(state) for name, derive in derivers.items()}


def shared(name: str, work: Callable[[Any], Result], state: Any) -> Result:
    """`work(state)`, once per state and batch when projections share a fold; otherwise simply
    `work(state)`."""
    states = _CURRENT.get()
    if states is None:
        return work(state)
    return states.memo(name, state, work)


class ProjectionStates(Generic[Derived]):
    """What one projection derived of each state, from the shared fold when the runner made one
    for this batch, else from the projection's own fold."""

    def __init__(
        self,
        name: str,
        load_before: Callable[[str, int], Awaitable[list[RecordedEvent]]],
        derive: Callable[[Any], Derived],
        capacity: int = CAPACITY,
    ) -> None:
        self._name = name
        self._own: SubjectStates[Derived] = SubjectStates(load_before, derive, capacity)

    @property
    def _load_before(self) -> StreamLoader:  # bench/projection_catchup.py counts reloads
        return self._own._load_before  # noqa: SLF001

    @_load_before.setter
    def _load_before(self, loader: StreamLoader) -> None:
        self._own._load_before = loader  # noqa: SLF001

    def forget(self) -> None:
        self._own.forget()

    async def transition(self, event: RecordedEvent) -> tuple[Derived | None, Derived, Any]:
        """What `derive` says of the state before and after `event`, and the subject (on the
        shared fold, its live state: see `Step`)."""
        states = _CURRENT.get()
        step = states.steps.get(event.position) if states is not None else None
        if step is None or self._name not in step.after:  # no fold, or one not made for it
            return await self._own.transition(event)
        before = None if step.before is None else step.before[self._name]
        return before, step.after[self._name], step.subject

"""eventsourcing's `ApplicationRecorder` over our own event store and tables.

eventsourcing 9.5 is synchronous; our store is asyncpg. The recorder runs a private asyncio event
loop on its own thread, holds an asyncpg pool and a `PostgresEventStore` there, and turns each
method into `run_coroutine_threadsafe(...).result()`. Writes go through `PostgresEventStore.append`
(so they take the head lock, extend the hash chain and NOTIFY like every other writer); reads the
store has no method for are small private queries here.

Mapping of eventsourcing's `StoredEvent` onto a row of `events`:

- `originator_id` (UUID or str) -> `stream_id` text (`str(uuid)`). `select_events` returns the id
  it was given. Notifications return a `UUID` when `originator_id_type="uuid"` (the default, as in
  eventsourcing's postgres recorder) and the stored text is a canonical UUID; otherwise the text,
  since the ledger's own streams share the log and their ids are not UUIDs.
- `originator_version` -> `version` as `originator_version - initial_version + 1`: our table
  numbers every stream from 1. `initial_version` defaults to 1, eventsourcing's
  `Aggregate.INITIAL_VERSION`, so versions are stored unchanged. eventsourcing's recorder contract
  tests number some streams from 0 (`range(n)`), so they run with `initial_version=0`: a +1 offset.
  One database must always be written with the same `initial_version`.
- `topic` -> `type`, `state` -> `payload` (opaque bytes); `metadata` is
  `{"source": "eventsourcing"}`, so that readers of the whole log can tell these events apart.
- `Notification.id` = the event's `position` in the log (partition 0, the only one today).

Our store is stricter than eventsourcing's contract in one way: it appends only the next version
of a stream (a stream starts at `initial_version`, and versions do not skip), where eventsourcing
only demands that (originator_id, version) be unique. Aggregates always write that way; anything
else raises `IntegrityError`, as does any version conflict.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from uuid import UUID

import asyncpg
from eventsourcing.persistence import (
    ApplicationRecorder,
    DataError,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    ProgrammingError,
    StoredEvent,
    Subscription,
)

from adapters.storage.postgres_store import NOTIFY_CHANNEL, PostgresEventStore, create_pool
from ledger.errors import ConcurrencyConflict
from ledger.ports import PARTITION_COUNT, NewEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

_T = TypeVar("_T")

_PARTITION = 0
_METADATA = {"source": "eventsourcing"}
_CLOSE_TIMEOUT = 10.0
_SELECT_EVENTS = (
    "SELECT version, type, payload FROM events"
    " WHERE stream_id = $1"
    " AND ($2::integer IS NULL OR version > $2)"
    " AND ($3::integer IS NULL OR version <= $3)"
)
_SELECT_EVENTS_ASC = _SELECT_EVENTS + " ORDER BY version LIMIT $4"
_SELECT_EVENTS_DESC = _SELECT_EVENTS + " ORDER BY version DESC LIMIT $4"


@dataclass(frozen=True, slots=True)
class _Listener:
    connection: asyncpg.Connection
    ticker: asyncio.Task[None]


class LedgerApplicationRecorder(ApplicationRecorder):
    def __init__(
        self,
        dsn: str,
        schema: str | None = None,
        *,
        initial_version: int = 1,
        originator_id_type: Literal["uuid", "text"] = "uuid",
        max_connections: int = 10,
        poll_interval: float = 1.0,
    ) -> None:
        assert PARTITION_COUNT == 1, "notification ids are positions in partition 0"
        self._dsn = dsn
        self._schema = schema
        self._version_offset = 1 - initial_version
        self._originator_id_type = originator_id_type
        self._poll_interval = poll_interval
        self._closed = False
        self._close_lock = threading.Lock()
        self._subscriptions: set[_LedgerSubscription] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ledger-es-recorder", daemon=True
        )
        self._thread.start()
        try:
            self._pool = self._run(
                create_pool(dsn, schema=schema, min_size=1, max_size=max_connections)
            )
        except BaseException:
            self._stop_loop()
            raise
        self._store = PostgresEventStore(self._pool)

    # Running coroutines on the private loop.

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        if self._closed:
            coroutine.close()
            raise ProgrammingError("recorder is closed")
        assert threading.current_thread() is not self._thread, "would wait on itself"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Closes the pool and stops the loop thread. Safe to call more than once."""
        for subscription in list(self._subscriptions):
            subscription.stop()
        with self._close_lock:
            if self._closed:
                return
            future = asyncio.run_coroutine_threadsafe(self._close_pool(), self._loop)
            self._closed = True
        with contextlib.suppress(Exception):
            future.result(timeout=_CLOSE_TIMEOUT * 2)
        self._stop_loop()

    async def _close_pool(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._store.close(), timeout=_CLOSE_TIMEOUT)
        try:
            await asyncio.wait_for(self._pool.close(), timeout=_CLOSE_TIMEOUT)
        except TimeoutError:
            self._pool.terminate()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    # Mapping.

    def _stream_id(self, originator_id: UUID | str) -> str:
        return str(originator_id)

    def _originator_id(self, stream_id: str) -> UUID | str:
        if self._originator_id_type == "uuid":
            try:
                parsed = UUID(stream_id)
            except ValueError:
                return stream_id
            if str(parsed) == stream_id:
                return parsed
        return stream_id

    def _to_store(self, originator_version: int) -> int:
        return originator_version + self._version_offset

    def _from_store(self, version: int) -> int:
        return version - self._version_offset

    # AggregateRecorder.

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        del kwargs  # eventsourcing passes tracking here only to process recorders
        if not stored_events:
            return []
        events, expected_versions = self._new_events(stored_events)
        return self._run(self._append(events, expected_versions))

    def _new_events(
        self, stored_events: Sequence[StoredEvent]
    ) -> tuple[list[NewEvent], dict[str, int]]:
        expected_versions: dict[str, int] = {}
        last_versions: dict[str, int] = {}
        events = []
        for stored in stored_events:
            stream_id = self._stream_id(stored.originator_id)
            version = self._to_store(stored.originator_version)
            if version < 1:
                raise DataError(
                    f"originator_version {stored.originator_version} is below this recorder's "
                    f"initial version {1 - self._version_offset}"
                )
            if stream_id not in last_versions:
                expected_versions[stream_id] = version - 1
            elif version != last_versions[stream_id] + 1:
                raise IntegrityError(
                    f"stream {stream_id}: version {stored.originator_version} does not follow "
                    f"{self._from_store(last_versions[stream_id])} in the same insert"
                )
            last_versions[stream_id] = version
            events.append(
                NewEvent(
                    stream_id=stream_id,
                    version=version,
                    type=stored.topic,
                    payload=bytes(stored.state),
                    metadata=dict(_METADATA),
                )
            )
        return events, expected_versions

    async def _append(self, events: list[NewEvent], expected_versions: dict[str, int]) -> list[int]:
        try:
            recorded = await self._store.append(events, expected_versions=expected_versions)
        except ConcurrencyConflict as conflict:
            raise IntegrityError(str(conflict)) from conflict
        except asyncpg.IntegrityConstraintViolationError as violation:
            raise IntegrityError(str(violation)) from violation
        return [event.position for event in recorded]

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        rows = self._run(
            self._pool.fetch(
                _SELECT_EVENTS_DESC if desc else _SELECT_EVENTS_ASC,
                self._stream_id(originator_id),
                None if gt is None else self._to_store(gt),
                None if lte is None else self._to_store(lte),
                limit,
            )
        )
        return [
            StoredEvent(
                originator_id=originator_id,
                originator_version=self._from_store(row["version"]),
                topic=row["type"],
                state=bytes(row["payload"]),
            )
            for row in rows
        ]

    # ApplicationRecorder.

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        after = 0 if start is None else (start - 1 if inclusive_of_start else start)
        rows = self._run(
            self._pool.fetch(
                "SELECT position, stream_id, version, type, payload FROM events"
                " WHERE partition = $1 AND position > $2"
                " AND ($3::bigint IS NULL OR position <= $3)"
                " AND (cardinality($4::text[]) = 0 OR type = any($4::text[]))"
                " ORDER BY position LIMIT $5",
                _PARTITION,
                after,
                stop,
                list(topics),
                limit,
            )
        )
        return [
            Notification(
                id=row["position"],
                originator_id=self._originator_id(row["stream_id"]),
                originator_version=self._from_store(row["version"]),
                topic=row["type"],
                state=bytes(row["payload"]),
            )
            for row in rows
        ]

    def max_notification_id(self) -> int | None:
        position = self._run(self._store.head(_PARTITION)).position
        return position or None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return _LedgerSubscription(self, gt=gt, topics=topics)

    # LISTEN for the store's NOTIFY, and tick as well in case one is lost.

    def _open_listener(self, subscription: _LedgerSubscription) -> _Listener:
        listener = self._run(self._listen(subscription.wake))
        self._subscriptions.add(subscription)
        return listener

    def _close_listener(self, subscription: _LedgerSubscription, listener: _Listener) -> None:
        self._subscriptions.discard(subscription)
        if not self._closed:
            self._run(self._unlisten(listener))

    async def _listen(self, wake: Callable[[], None]) -> _Listener:
        connection = await asyncpg.connect(self._dsn)
        try:
            await connection.add_listener(NOTIFY_CHANNEL, lambda *_: wake())
        except BaseException:
            await connection.close()
            raise
        return _Listener(connection, asyncio.create_task(self._tick(wake)))

    async def _tick(self, wake: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            wake()

    @staticmethod
    async def _unlisten(listener: _Listener) -> None:
        listener.ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener.ticker
        await listener.connection.close()


class _LedgerSubscription(ListenNotifySubscription[LedgerApplicationRecorder]):
    def __init__(
        self, recorder: LedgerApplicationRecorder, gt: int | None, topics: Sequence[str]
    ) -> None:
        # Listen before the base class starts pulling, so no NOTIFY falls between the two.
        self._listener: _Listener | None = recorder._open_listener(self)  # noqa: SLF001
        self._listener_lock = threading.Lock()
        super().__init__(recorder=recorder, gt=gt, topics=topics)

    def wake(self) -> None:
        """Called on the recorder's loop thread for each NOTIFY and poll tick."""
        notified: threading.Event | None = getattr(self, "_has_been_notified", None)
        if notified is not None:
            notified.set()

    def stop(self) -> None:
        super().stop()
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            self._recorder._close_listener(self, listener)  # noqa: SLF001

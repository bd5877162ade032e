"""Feeds projections from the global log, exactly once in effect.

Each batch runs in one transaction that locks the projection's position row, reads the events
after it, lets the projection write its read model and moves the position: either all of that
commits or none of it, so a process killed mid-batch resumes where the last commit left it.
The position row's lock also lets several runners (or a request that needs fresh balances) catch
up the same projection without doing any batch twice.

Projections at the same position share their batches (`_shared_batch`): one transaction locks
all their position rows, reads the events once, folds them into subject states once
(read_models/states.py) and lets each projection write its read model, then moves every position.
A batch that fails so falls back to one projection at a time, which finds the one that fails.
Catching up from far behind, batches grow (up to `catch_up_batch_max`): a projection folds a
batch in memory and writes each row it changes once per batch, so fewer, larger batches write less.

The runner wakes on NOTIFY and polls as well, since a notification can be lost (connection
drops, a listener that was busy); a lost one costs at most one poll interval.

`run_forever` does not survive the database on its own: an outage (or the listening connection
closing under it) raises, and its supervisor (adapters/http/background.py) starts it again, on a
new listening connection, after a backoff. A projection that cannot apply an event is another
matter: that is a data problem, so it stays stopped at that event while the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from adapters.storage.outages import DATABASE_OUTAGES, ListenerLost
from adapters.storage.postgres_store import (
    NOTIFY_CHANNEL,
    AnyConnection,
    fetch_batch,
    fetch_span,
    fetch_stream_before,
)
from adapters.storage.read_models.base import Projection
from adapters.storage.read_models.collector import fewer_collections
from adapters.storage.read_models.states import SharedFold
from ledger.ports import PARTITION_COUNT, RecordedEvent

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (events done, events in total)

# Catching up, a full batch doubles the next one, up to this many events.
CATCH_UP_BATCH_MAX = 16_000
GROWTH_FROM = 100


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    """Where a rebuild stands: `ProjectionRunner.rebuild_progress`, up to date whenever the
    rebuild's progress callback is called (a progress bar reads the rate and ETA from it)."""

    name: str
    done: int
    total: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        rate = self.events_per_second
        return max(self.total - self.done, 0) / rate if rate > 0 else None


class ProjectionFailed(Exception):
    def __init__(self, name: str, event: RecordedEvent, error: BaseException) -> None:
        super().__init__(
            f"projection {name} failed at position {event.partition}:{event.position}"
            f" ({event.type} in {event.stream_id} v{event.version}): {error!r}"
        )
        self.name = name
        self.event = event


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    partition: int
    position: int
    head: int
    updated_at: datetime
    failed_position: int | None
    failure: str | None
    # How long the oldest event not yet projected has waited (0: none left): how stale a read
    # of this projection can be, which a count of events alone does not say.
    lag_seconds: float = 0.0

    @property
    def lag(self) -> int:
        return self.head - self.position

    def lags_beyond(self, events_max: int, seconds_max: float) -> bool:
        return self.lag > events_max or self.lag_seconds > seconds_max


# The log's head, read with the position rows (no round trip of its own): a batch spans up to it.
_HEAD = "(SELECT coalesce(max(position), 0) FROM log_heads h WHERE h.partition = $2) AS head"


def _reads(group: Sequence[Projection]) -> tuple[str, ...] | None:
    """The event types a group of projections reads between them; None: every type."""
    prefixes: set[str] = set()
    for projection in group:
        if projection.reads is None:
            return None
        prefixes.update(projection.reads)
    return tuple(sorted(prefixes))


class ProjectionRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        poll_seconds: float = 1.0,
        catch_up_batch_max: int | None = None,
    ) -> None:
        self.pool = pool
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        if catch_up_batch_max is None:
            # Batches under GROWTH_FROM events are a deliberate choice (tests compare one event
            # per batch with folded batches): they stay as asked.
            catch_up_batch_max = CATCH_UP_BATCH_MAX if batch_size >= GROWTH_FROM else batch_size
        self.catch_up_batch_max = max(batch_size, catch_up_batch_max)
        self.poll_seconds = poll_seconds
        self.rebuild_progress: RebuildProgress | None = None
        self._fold = SharedFold()
        self._wake = asyncio.Event()
        self._failed: set[str] = set()
        self._positions_exist = False

    async def ensure_positions(self) -> None:
        """Creates the position rows once per runner (not on every catch-up: the withdrawal
        funds check and /readyz call into the runner on each request)."""
        if self._positions_exist:
            return
        await self.pool.executemany(
            "INSERT INTO projection_positions (name, partition) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            [(name, p) for name in self.projections for p in range(PARTITION_COUNT)],
        )
        self._positions_exist = True

    # ------------------------------------------------------------------ one batch

    async def _batch(
        self,
        connection: AnyConnection,
        projection: Projection,
        partition: int,
        *,
        wait: bool,
        limit: int | None = None,
    ) -> int | None:
        """One batch inside the caller's transaction: how many log positions it covered; None
        when another runner holds the row."""
        lock = "FOR UPDATE" if wait else "FOR UPDATE SKIP LOCKED"
        row = await connection.fetchrow(
            f"SELECT position, {_HEAD} FROM projection_positions"  # noqa: S608 - constants
            f" WHERE name = $1 AND partition = $2 {lock}",
            projection.name,
            partition,
        )
        if row is None:
            return None
        position = row["position"]
        until = min(row["head"], position + (limit or self.batch_size))
        span = await fetch_span(
            connection, partition, after=position, until=until, type_prefixes=projection.reads
        )
        if span.covered:
            try:
                if span.events:
                    await projection.apply(connection, span.events)
                await self._move(connection, [projection.name], partition, span.until)
            except BaseException:
                # Forgotten before the caller's rollback releases the position row: whoever
                # locks it next (a request catching up, the runner) must not build on states
                # this batch cached and never committed.
                projection.forget()
                raise
        return span.covered

    @staticmethod
    async def _move(
        connection: AnyConnection, names: list[str], partition: int, position: int
    ) -> None:
        await connection.execute(
            "UPDATE projection_positions SET position = $3, updated_at = now(),"
            " failed_position = NULL, failure = NULL"
            " WHERE name = any($1::text[]) AND partition = $2",
            names,
            partition,
            position,
        )

    async def run_batch(self, name: str, partition: int = 0, *, wait: bool = True) -> int:
        """Processes one batch; returns how many events it covered (0: caught up or busy)."""
        projection = self.projections[name]
        try:
            async with self.pool.acquire() as connection, connection.transaction():
                covered = await self._batch(connection, projection, partition, wait=wait)
        except BaseException:
            projection.forget()
            raise
        return covered or 0

    async def catch_up(self, names: Sequence[str] | None = None, *, wait: bool = True) -> int:
        """Runs the projections up to the head as it is now, those at the same position over
        shared batches. Raises ProjectionFailed (after the others caught up) if one failed."""
        await self.ensure_positions()
        failures: list[ProjectionFailed] = []
        total = 0
        for partition in range(PARTITION_COUNT):
            total += await self._catch_up_partition(
                list(names or self.projections), partition, wait=wait, failures=failures
            )
        if failures:
            raise failures[0]
        return total

    async def _catch_up_partition(
        self, names: list[str], partition: int, *, wait: bool, failures: list[ProjectionFailed]
    ) -> int:
        total = 0
        size = self.batch_size
        while True:
            try:
                async with self.pool.acquire() as connection, connection.transaction():
                    outcome = await self._shared_batch(
                        connection, names, partition, wait=wait, limit=size
                    )
            except DATABASE_OUTAGES:
                raise  # the events are fine; the caller tries again when it can
            except Exception:  # noqa: BLE001 - any error: one at a time finds the event
                for name in names:
                    try:
                        total += await self._catch_up_alone(name, partition, wait=wait)
                    except ProjectionFailed as failed:
                        failures.append(failed)
                return total
            if outcome is None:
                return total  # another runner holds the rows: it is catching them up
            done, grouped, locked = outcome
            total += done * grouped
            if done < size and grouped == locked:
                return total
            if done == size:
                size = min(size * 2, self.catch_up_batch_max)

    async def _catch_up_alone(self, name: str, partition: int, *, wait: bool) -> int:
        """One projection by itself, batch by batch, a failing batch replayed one event at a
        time. Raises ProjectionFailed."""
        total = 0
        while True:
            try:
                done = await self.run_batch(name, partition, wait=wait)
            except DATABASE_OUTAGES:
                raise
            except Exception as error:  # noqa: BLE001 - any error: find the event
                done = await self._one_event_at_a_time(name, partition, error)
            total += done
            if done < self.batch_size:
                return total

    async def _shared_batch(
        self,
        connection: AnyConnection,
        names: Sequence[str],
        partition: int,
        *,
        wait: bool,
        limit: int,
    ) -> tuple[int, int, int] | None:
        """One batch, inside the caller's transaction, for every projection of `names` at the
        lowest position among them: (events, projections fed, position rows locked), or None
        when another runner holds every row. Rows are locked in name order (no deadlock between
        runners)."""
        lock = "FOR UPDATE" if wait else "FOR UPDATE SKIP LOCKED"
        rows = await connection.fetch(
            f"SELECT name, position, {_HEAD} FROM projection_positions"  # noqa: S608 - constants
            f" WHERE name = any($1::text[]) AND partition = $2 ORDER BY name {lock}",
            list(names),
            partition,
        )
        if not rows:
            return None
        start = min(row["position"] for row in rows)
        group = [self.projections[row["name"]] for row in rows if row["position"] == start]
        until = min(rows[0]["head"], start + limit)
        span = await fetch_span(
            connection, partition, after=start, until=until, type_prefixes=_reads(group)
        )
        if not span.covered:
            return 0, len(group), len(rows)
        try:
            if span.events:
                with fewer_collections():
                    await self._apply(connection, group, span.events)
            await self._move(connection, [p.name for p in group], partition, span.until)
        except BaseException:
            self._fold.forget()
            for projection in group:
                projection.forget()
            raise
        return span.covered, len(group), len(rows)

    async def _apply(
        self, connection: AnyConnection, group: list[Projection], events: list[RecordedEvent]
    ) -> None:
        if len(group) == 1:
            await group[0].apply(connection, events)  # alone: its own fold
            return

        async def load_before(stream_id: str, version: int) -> list[RecordedEvent]:
            return await fetch_stream_before(connection, stream_id, version)

        # Each projection that derives from subject states (a SubjectProjection, or a wrapper
        # that passes `derive` on) derives as the fold goes; any other folds alone if it must.
        derivers = {p.name: derive for p in group if (derive := getattr(p, "derive", None))}
        states = await self._fold.fold(events, load_before, derivers)
        with states.current():
            for projection in group:
                await projection.apply(connection, events)

    async def _one_event_at_a_time(self, name: str, partition: int, error: Exception) -> int:
        """Replays the failed batch one event per transaction, so everything before the failing
        event commits and the position stops right before it; then records which one failed.
        Returns how many went through when none fails (the error was transient)."""
        projection = self.projections[name]
        for done in range(self.batch_size):
            async with self.pool.acquire() as connection:
                position = await connection.fetchval(
                    "SELECT position FROM projection_positions WHERE name = $1 AND partition = $2",
                    name,
                    partition,
                )
                following = await fetch_batch(connection, partition, after=position, limit=1)
            if not following:
                return done
            try:
                async with self.pool.acquire() as connection, connection.transaction():
                    await self._batch(connection, projection, partition, wait=True, limit=1)
            except DATABASE_OUTAGES:
                projection.forget()
                raise  # an outage says nothing about the event: never record it as failing
            except Exception as single:
                projection.forget()
                failure = ProjectionFailed(name, following[0], single)
                await self.pool.execute(
                    "UPDATE projection_positions SET failed_position = $3, failure = $4"
                    " WHERE name = $1 AND partition = $2",
                    name,
                    partition,
                    following[0].position,
                    str(failure),
                )
                self._failed.add(name)
                raise failure from single
        log.warning("projection %s: batch failed (%r), then went through singly", name, error)
        return self.batch_size

    # ------------------------------------------------------------------ running

    async def run_forever(self, healthy: Callable[[], None] = lambda: None) -> None:
        """Keeps every projection caught up until cancelled, calling `healthy` after each pass
        that went through. A failed projection stays stopped at its event (others go on); it
        resumes after a rebuild or a restart. Raises on an outage, ListenerLost included."""
        await self.ensure_positions()
        lost = asyncio.Event()

        def listener_closed(*_: object) -> None:
            lost.set()
            self._wake.set()

        async with self.pool.acquire() as listener:
            await listener.add_listener(NOTIFY_CHANNEL, self._notified)
            listener.add_termination_listener(listener_closed)
            try:
                while True:
                    if lost.is_set():
                        raise ListenerLost("the projection runner's LISTEN connection closed")
                    self._wake.clear()
                    await self._one_pass()
                    healthy()
                    # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that
                    # arrives just as the wake-up does, and the app's shutdown then waits forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_seconds):
                            await self._wake.wait()
            finally:
                await self._stop_listening(listener, listener_closed, closed=lost.is_set())

    async def _stop_listening(
        self, listener: AnyConnection, closed_callback: Callable[..., None], *, closed: bool
    ) -> None:
        """Nothing here may replace the error (or the cancellation) that is leaving, nor hold
        up a shutdown. A connection that closed is already detached from its proxy (asyncpg
        released it to the pool): there is nothing left to unregister."""
        if closed:
            return
        with contextlib.suppress(TimeoutError, *DATABASE_OUTAGES):
            listener.remove_termination_listener(closed_callback)
            async with asyncio.timeout(1):
                await listener.remove_listener(NOTIFY_CHANNEL, self._notified)

    async def _one_pass(self) -> None:
        active = [name for name in self.projections if name not in self._failed]
        if not active:
            return
        try:
            await self.catch_up(active, wait=False)
        except ProjectionFailed as failed:
            log.error("%s", failed)  # noqa: TRY400 - the failure says it all

    def _notified(self, *_: object) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ rebuild and status

    async def rebuild(self, name: str, progress: Progress | None = None) -> int:
        """Empties the read model and replays the whole log into it in ONE transaction: readers
        keep the old rows until the new ones commit, and live batches wait on the position row.
        Batches grow as in a catch-up; before each call of `progress`, `rebuild_progress` says
        the rate and the time left."""
        projection = self.projections[name]
        projection.forget()
        await self.ensure_positions()
        done = 0
        started = time.monotonic()
        try:
            async with self.pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    "SELECT 1 FROM projection_positions WHERE name = $1 FOR UPDATE", name
                )
                for table in projection.tables:
                    await connection.execute(f"DELETE FROM {table}")  # noqa: S608 - own tables
                await connection.execute(
                    "UPDATE projection_positions SET position = 0, failed_position = NULL,"
                    " failure = NULL WHERE name = $1",
                    name,
                )
                total = int(
                    await connection.fetchval("SELECT coalesce(sum(position), 0) FROM log_heads")
                )
                for partition in range(PARTITION_COUNT):
                    size = self.batch_size
                    while outcome := await self._shared_batch(
                        connection, [name], partition, wait=True, limit=size
                    ):
                        if not outcome[0]:
                            break
                        done += outcome[0]
                        self.rebuild_progress = RebuildProgress(
                            name, done, total, time.monotonic() - started
                        )
                        if progress is not None:
                            progress(done, total)
                        if outcome[0] == size:
                            size = min(size * 2, self.catch_up_batch_max)
        finally:
            projection.forget()
        self._failed.discard(name)
        return done

    async def status(self) -> list[ProjectionStatus]:
        await self.ensure_positions()
        rows = await self.pool.fetch(
            "SELECT p.name, p.partition, p.position, h.position AS head, p.updated_at,"
            " p.failed_position, p.failure,"
            " coalesce((SELECT greatest(extract(epoch FROM clock_timestamp() - e.recorded_at), 0)"
            "  FROM events e WHERE e.partition = p.partition AND e.position > p.position"
            "  ORDER BY e.position LIMIT 1), 0)::float8 AS lag_seconds"
            " FROM projection_positions p"
            " JOIN log_heads h USING (partition) WHERE p.name = any($1::text[])"
            " ORDER BY p.name, p.partition",
            list(self.projections),
        )
        return [ProjectionStatus(**dict(row)) for row in rows]

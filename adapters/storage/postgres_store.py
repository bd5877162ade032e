"""The event store on PostgreSQL through asyncpg.

Appends to a partition are serialized by locking that partition's head row (`SELECT ... FOR
UPDATE`). That is what makes the global order gap-free: a position is taken and committed while
the lock is held, so no transaction can commit a lower position after a reader has seen a higher
one (eventsourcing's recorder gets the same from `LOCK TABLE ... IN EXCLUSIVE MODE`; a sequence
alone would let a reader pass over a gap left by a slower transaction).

Group commit (DESIGN.md, "Event store"): every append goes to its partition's writer, one task on
a connection of its own (no pool reset per append). The writer sends everything that arrived
while its previous commit was in flight as one call of `ledger_append` (migration 007) in
autocommit: one statement, one transaction, one fsync, the head's lock held for that statement
only. The function checks each append's versions and takes its claims on its own, in order, as
if it ran alone; hashes are computed here (ledger/hashchain.py) against the head the writer last
saw, and the function writes nothing and says so when that head, or the set of appends accepted,
was not what they were computed for; the writer then recomputes and calls again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from adapters.storage.log_reader import (
    SELECT_COLUMNS,
    events_of_rows,
    metadata_of,
    read_pages,
)
from adapters.storage.outages import DATABASE_OUTAGES
from ledger.errors import ConcurrencyConflict
from ledger.hashchain import GENESIS_HASH, canonical_bytes, chain_hash
from ledger.ports import Claim, ClaimTaken, Head, NewEvent, RecordedEvent, partition_of

NOTIFY_CHANNEL = "ledger_events"

# A pooled connection is a proxy of a connection; both speak the same API.
AnyConnection = asyncpg.Connection | PoolConnectionProxy

# Reads (and their fast row conversion) live in log_reader.py.
_SELECT_COLUMNS = SELECT_COLUMNS


async def _init_connection(connection: AnyConnection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def create_pool(
    dsn: str,
    *,
    schema: str | None = None,
    min_size: int = 2,
    max_size: int = 10,
    application_name: str | None = None,
) -> asyncpg.Pool:
    """A pool whose connections speak jsonb as dicts and use `schema` (tests isolate by schema);
    `application_name` names its sessions in pg_stat_activity."""
    settings = {"search_path": schema} if schema else {}
    if application_name:
        settings["application_name"] = application_name
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, server_settings=settings
    )
    assert pool is not None
    return pool


def recorded_event(row: asyncpg.Record) -> RecordedEvent:
    """A row with the event columns by name, metadata as jsonb (a dict) or as text."""
    return RecordedEvent(
        partition=row["partition"],
        position=row["position"],
        stream_id=row["stream_id"],
        version=row["version"],
        type=row["type"],
        payload=bytes(row["payload"]),
        metadata=metadata_of(row["metadata"]),
        recorded_at=row["recorded_at"],
        prev_hash=bytes(row["prev_hash"]),
        hash=bytes(row["hash"]),
    )


def _check_versions_are_contiguous(
    events: Sequence[NewEvent], expected_versions: dict[str, int]
) -> None:
    """A programmer error, not input: callers build versions from what they loaded."""
    next_version = dict(expected_versions)
    for new in events:
        if new.stream_id not in next_version:
            raise ValueError(f"no expected version given for stream {new.stream_id}")
        if new.version != next_version[new.stream_id] + 1:
            raise ValueError(
                f"stream {new.stream_id}: version {new.version} does not follow "
                f"{next_version[new.stream_id]}"
            )
        next_version[new.stream_id] = new.version


_APPEND = (
    "SELECT ok, head_position, head_hash, outcomes, details, claim_index FROM ledger_append("
    "$1, $2, $3, $4::boolean[], $5::int[], $6::text[], $7::int[], $8::int[], $9::int[],"
    " $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::bigint[],"
    " $16::text[], $17::int[], $18::text[], $19::bytea[], $20::text[], $21, $22::bytea[],"
    " $23::bytea[])"
)
_ACCEPTED, _CONFLICT, _CLAIM_TAKEN = 0, 1, 2
# A writer gathers at most this many events into one transaction (one statement's arrays).
_MAX_BATCH_EVENTS = 2_000
# A writer's connection closes after this long without appends (and reopens on the next).
_IDLE_SECONDS = 2.0


@dataclass(slots=True)
class _Append:
    events: Sequence[NewEvent]
    expected_versions: dict[str, int]
    claims: Sequence[Claim]
    done: asyncio.Future[list[RecordedEvent]]


class _PartitionWriter:
    """Group commit for one partition: one task on a held connection (no pool reset) writes
    every append that arrived while the previous commit was in flight in one statement, so one
    transaction and one fsync; each append's future gets its own outcome."""

    def __init__(self, store: PostgresEventStore, partition: int) -> None:
        self.store = store
        self.partition = partition
        self.loop = asyncio.get_running_loop()
        self.pending: collections.deque[_Append] = collections.deque()
        self.wake = asyncio.Event()
        self.connection: asyncpg.Connection | None = None
        self.head: tuple[int, bytes] | None = None  # as last seen; verified by the statement
        self.task: asyncio.Task[None] | None = None

    def submit(self, append: _Append) -> None:
        self.pending.append(append)
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name=f"ledger-writer-{self.partition}")

    async def _run(self) -> None:
        try:
            while True:
                if not self.pending:
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), _IDLE_SECONDS)
                    except TimeoutError:
                        if not self.pending:
                            return
                batch = self._take_batch()
                await self._write(batch)
        finally:
            self._drop_connection()
            for append in self.pending:  # only when cancelled (the loop is closing)
                if not append.done.done():
                    append.done.cancel()
            self.pending.clear()

    def _take_batch(self) -> list[_Append]:
        batch: list[_Append] = []
        size = 0
        while self.pending and (
            not batch or size + len(self.pending[0].events) <= _MAX_BATCH_EVENTS
        ):
            append = self.pending.popleft()
            if append.done.done():  # its caller gave up before it was written
                continue
            batch.append(append)
            size += len(append.events)
        return batch

    def _drop_connection(self) -> None:
        if self.connection is not None:
            self.connection.terminate()
            self.connection = None
        self.head = None

    async def _write(self, batch: list[_Append]) -> None:
        if not batch:
            return
        try:
            outcomes = await self._commit(batch)
        except asyncio.CancelledError as cancelled:
            _settle(batch, [cancelled] * len(batch))
            raise
        except Exception as error:  # noqa: BLE001 - handed to the callers, none swallowed
            outage = isinstance(error, DATABASE_OUTAGES)
            if outage and (self.connection is None or self.connection.is_closed()):
                # The database is unreachable: every caller of the batch gets the outage (the
                # same error an append gave before group commit); the next batch reconnects.
                self._drop_connection()
                _settle(batch, [error] * len(batch))
            elif len(batch) == 1:
                if outage:
                    self._drop_connection()
                _settle(batch, [error])
            else:
                # One append refused outright (not a conflict: bad data, say), or a connection
                # that may still be usable: alone, each append gets its own outcome.
                for append in batch:
                    await self._write([append])
        else:
            _settle(batch, outcomes)

    async def _commit(self, batch: list[_Append]) -> list[list[RecordedEvent] | Exception]:
        if self.connection is None or self.connection.is_closed():
            self.connection = await self.store.connect()
            self.head = None
        connection = self.connection
        assumed = [True] * len(batch)
        head = self.head
        for _attempt in range(100):
            if head is None:
                row = await connection.fetchrow(
                    "SELECT position, hash FROM log_heads WHERE partition = $1", self.partition
                )
                head = (row["position"], bytes(row["hash"])) if row else (0, GENESIS_HASH)
            arguments, recorded = _arguments(self.partition, head, batch, assumed)
            row = await connection.fetchrow(_APPEND, *arguments)
            assert row is not None
            found_head = (row["head_position"], bytes(row["head_hash"]))
            if row["ok"]:
                self.head = found_head
                return [
                    _refusal(append, code, row["details"][i], row["claim_index"][i])
                    if (code := row["outcomes"][i]) != _ACCEPTED
                    else recorded[i]
                    for i, append in enumerate(batch)
                ]
            if found_head != head:
                head = found_head  # another writer moved it: recompute against this one
            else:
                assumed = [code == _ACCEPTED for code in row["outcomes"]]
        raise RuntimeError("append did not settle after 100 attempts")


def _settle(batch: list[_Append], outcomes: Sequence[list[RecordedEvent] | BaseException]) -> None:
    for append, outcome in zip(batch, outcomes, strict=True):
        if append.done.done():
            continue
        if isinstance(outcome, asyncio.CancelledError):
            append.done.cancel()
        elif isinstance(outcome, BaseException):
            append.done.set_exception(outcome)
        else:
            append.done.set_result(outcome)


def _refusal(append: _Append, code: int, detail: str, claim_index: int | None) -> Exception:
    if code == _CONFLICT:
        return ConcurrencyConflict(detail)
    assert code == _CLAIM_TAKEN
    assert claim_index is not None
    return ClaimTaken(append.claims[claim_index - 1], detail)


def _arguments(
    partition: int, head: tuple[int, bytes], batch: list[_Append], assumed: list[bool]
) -> tuple[list[Any], list[list[RecordedEvent]]]:
    """The statement's arguments, and each append's events as recorded if it is accepted."""
    recorded_at = datetime.now(UTC)
    position, prev_hash = head
    exp_append: list[int] = []
    exp_stream: list[str] = []
    exp_version: list[int] = []
    exp_next: list[int] = []
    claim_columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
    recorded: list[list[RecordedEvent]] = []
    for number, (append, accepted) in enumerate(zip(batch, assumed, strict=True), start=1):
        last = dict(append.expected_versions)
        for new in append.events:
            last[new.stream_id] = new.version
        for stream_id, expected in append.expected_versions.items():
            exp_append.append(number)
            exp_stream.append(stream_id)
            exp_version.append(expected)
            exp_next.append(last[stream_id])
        for claim in append.claims:
            for column, value in zip(
                claim_columns,
                (number, claim.namespace, claim.key, claim.stream_id, claim.value, claim.replaces),
                strict=True,
            ):
                column.append(value)
        if accepted:
            chained = chain_events(partition, position, prev_hash, append.events, recorded_at)
            if chained:
                position, prev_hash = chained[-1].position, chained[-1].hash
            recorded.append(chained)
        else:
            recorded.append([])
    events = [event for chained in recorded for event in chained]
    arguments: list[Any] = [
        partition,
        head[0],
        head[1],
        assumed,
        exp_append,
        exp_stream,
        exp_version,
        exp_next,
        *claim_columns,
        [e.position for e in events],
        [e.stream_id for e in events],
        [e.version for e in events],
        [e.type for e in events],
        [e.payload for e in events],
        [json.dumps(e.metadata) for e in events],
        recorded_at,
        [e.prev_hash for e in events],
        [e.hash for e in events],
    ]
    return arguments, recorded


def chain_events(
    partition: int,
    position: int,
    prev_hash: bytes,
    events: Sequence[NewEvent],
    recorded_at: datetime | None = None,
) -> list[RecordedEvent]:
    recorded_at = recorded_at or datetime.now(UTC)
    recorded = []
    for offset, new in enumerate(events, start=1):
        canonical = canonical_bytes(
            partition=partition,
            position=position + offset,
            stream_id=new.stream_id,
            version=new.version,
            event_type=new.type,
            payload=new.payload,
            metadata=new.metadata,
            recorded_at=recorded_at,
        )
        event_hash = chain_hash(prev_hash, canonical)
        recorded.append(
            RecordedEvent(
                partition=partition,
                position=position + offset,
                stream_id=new.stream_id,
                version=new.version,
                type=new.type,
                payload=new.payload,
                metadata=new.metadata,
                recorded_at=recorded_at,
                prev_hash=prev_hash,
                hash=event_hash,
            )
        )
        prev_hash = event_hash
    return recorded


class PostgresEventStore:
    """Appends go through one writer per partition (group commit, see `_PartitionWriter`);
    reads use the pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._writers: dict[int, _PartitionWriter] = {}

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own, set up like the pool's (a writer holds it)."""
        # The arguments the pool connects with (asyncpg keeps them; it has no public accessor).
        pool: Any = self.pool
        connection: asyncpg.Connection = await asyncpg.connect(
            *pool._connect_args,  # noqa: SLF001
            **pool._connect_kwargs,  # noqa: SLF001
        )
        await _init_connection(connection)
        return connection

    async def close(self) -> None:
        """Stops the writers and closes their connections (they also close after being idle)."""
        writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            if writer.task is not None and not writer.task.done():
                writer.task.cancel()
                with contextlib.suppress(BaseException):
                    await writer.task
            writer._drop_connection()  # noqa: SLF001

    async def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected_versions: dict[str, int],
        claims: Sequence[Claim] = (),
    ) -> list[RecordedEvent]:
        _check_versions_are_contiguous(events, expected_versions)
        partitions = {partition_of(stream) for stream in expected_versions} or {0}
        if len(partitions) != 1:
            raise ValueError("one append may not span partitions")  # not reachable with P=1
        (partition,) = partitions
        loop = asyncio.get_running_loop()
        writer = self._writers.get(partition)
        if writer is None or writer.loop is not loop:
            writer = self._writers[partition] = _PartitionWriter(self, partition)
        done: asyncio.Future[list[RecordedEvent]] = loop.create_future()
        writer.submit(_Append(events, expected_versions, claims, done))
        return await done

    async def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[RecordedEvent]:
        rows = await self.pool.fetch(
            f"SELECT {_SELECT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2"  # noqa: S608 - constant columns
            " ORDER BY version",
            stream_id,
            after_version,
        )
        return events_of_rows(rows)

    async def read_streams(self, after: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        """Several streams in one query: each one's events after the version given for it."""
        rows = await self.pool.fetch(
            f"SELECT {_SELECT_COLUMNS} FROM events"  # noqa: S608 - constant columns
            " JOIN unnest($1::text[], $2::int[]) AS wanted(stream, after_version)"
            " ON stream_id = wanted.stream AND version > wanted.after_version"
            " ORDER BY stream_id, version",
            list(after),
            list(after.values()),
        )
        found: dict[str, list[RecordedEvent]] = {stream: [] for stream in after}
        for event in events_of_rows(rows):
            found[event.stream_id].append(event)
        return found

    async def read_log(
        self, partition: int, *, after: int = 0, batch_size: int = 5_000
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Pages of `batch_size`, the next one fetched while the caller handles this one."""
        end = (await self.head(partition)).position
        async for batch in read_pages(
            self.pool, partition, after=after, until=end, page_size=batch_size
        ):
            yield batch

    async def read_batch(
        self, partition: int, *, after: int, limit: int, until: int | None = None
    ) -> list[RecordedEvent]:
        return await fetch_batch(self.pool, partition, after=after, limit=limit, until=until)

    async def head(self, partition: int = 0) -> Head:
        row = await self.pool.fetchrow(
            "SELECT position, hash FROM log_heads WHERE partition = $1", partition
        )
        if row is None:  # a partition nobody appended to yet (its row is made by the first)
            return Head(partition, 0, GENESIS_HASH)
        return Head(partition, row["position"], bytes(row["hash"]))

    async def find_claim(self, namespace: str, key: str) -> Claim | None:
        row = await self.pool.fetchrow(
            "SELECT stream_id, value FROM claims WHERE namespace = $1 AND key = $2", namespace, key
        )
        if row is None:
            return None
        return Claim(namespace, key, row["stream_id"], row["value"])

    async def list_claims(self, namespace: str) -> list[Claim]:
        rows = await self.pool.fetch(
            "SELECT key, stream_id, value FROM claims WHERE namespace = $1 ORDER BY key", namespace
        )
        return [Claim(namespace, r["key"], r["stream_id"], r["value"]) for r in rows]

    async def stream_version(self, stream_id: str) -> int:
        version = await self.pool.fetchval(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", stream_id
        )
        return int(version)


async def fetch_batch(
    source: AnyConnection | asyncpg.Pool,
    partition: int,
    *,
    after: int,
    limit: int,
    until: int | None = None,
) -> list[RecordedEvent]:
    """Log events after `after`, in order; on a connection, inside its transaction if any."""
    rows = await source.fetch(
        f"SELECT {_SELECT_COLUMNS} FROM events"  # noqa: S608 - constant columns
        " WHERE partition = $1 AND position > $2 AND ($4::bigint IS NULL OR position <= $4)"
        " ORDER BY position LIMIT $3",
        partition,
        after,
        limit,
        until,
    )
    return events_of_rows(rows)


@dataclass(frozen=True, slots=True)
class Span:
    """The log positions (after, until] of a partition, and those of its events a reader asked
    for (all of them, in order, when it named no types)."""

    after: int
    until: int
    events: list[RecordedEvent]

    @property
    def covered(self) -> int:
        return self.until - self.after


async def fetch_span(
    connection: AnyConnection,
    partition: int,
    *,
    after: int,
    until: int,
    type_prefixes: Sequence[str] | None = None,
) -> Span:
    """The positions (after, until] of a partition with only the events whose type starts with
    one of `type_prefixes`: the others (a webhook's raw body in Delivery.Received, say) never
    leave the server. `until` must be at most the head as read before this call: that a span
    can end past the last event it returns rests on the order being gap-free (above), since
    every position up to a head once read exists and is committed."""
    if until <= after:
        return Span(after, after, [])
    if type_prefixes is None:
        events = await fetch_batch(
            connection, partition, after=after, limit=until - after, until=until
        )
        return Span(after, until, events)
    rows = await connection.fetch(
        f"SELECT {_SELECT_COLUMNS} FROM events"  # noqa: S608 - constant columns
        " WHERE partition = $1 AND position > $2 AND position <= $3 AND type LIKE ANY($4)"
        " ORDER BY position",
        partition,
        after,
        until,
        [_escape_like(prefix) + "%" for prefix in type_prefixes],
    )
    return Span(after, until, events_of_rows(rows))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def fetch_stream_before(
    source: AnyConnection | asyncpg.Pool, stream_id: str, version: int
) -> list[RecordedEvent]:
    """A stream's events with versions below `version`, oldest first."""
    rows = await source.fetch(
        f"SELECT {_SELECT_COLUMNS} FROM events WHERE stream_id = $1 AND version < $2"  # noqa: S608 - constant columns
        " ORDER BY version",
        stream_id,
        version,
    )
    return events_of_rows(rows)

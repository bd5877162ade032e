"""The event store on PostgreSQL through asyncpg.

Appends to a partition are serialized by locking that partition's head row (`SELECT ... FOR
UPDATE`). That is what makes the global order gap-free: a position is taken and committed while
the lock is held, so no transaction can commit a lower position after a reader has seen a higher
one (eventsourcing's recorder gets the same from `LOCK TABLE ... IN EXCLUSIVE MODE`; a sequence
alone would let a reader pass over a gap left by a slower transaction).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ledger.errors import ConcurrencyConflict
from ledger.hashchain import canonical_bytes, chain_hash
from ledger.ports import Claim, ClaimTaken, Head, NewEvent, RecordedEvent, partition_of

NOTIFY_CHANNEL = "ledger_events"

# A pooled connection is a proxy of a connection; both speak the same API.
AnyConnection = asyncpg.Connection | PoolConnectionProxy

_SELECT_COLUMNS = (
    "partition, position, stream_id, version, type, payload, metadata, recorded_at, prev_hash, hash"
)


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


def _recorded(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(
        partition=row["partition"],
        position=row["position"],
        stream_id=row["stream_id"],
        version=row["version"],
        type=row["type"],
        payload=bytes(row["payload"]),
        metadata=row["metadata"],
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


class PostgresEventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

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
        async with self.pool.acquire() as connection, connection.transaction():
            head = await connection.fetchrow(
                "SELECT position, hash FROM log_heads WHERE partition = $1 FOR UPDATE", partition
            )
            await self._check_expected_versions(connection, expected_versions)
            await self._take_claims(connection, claims)
            assert head is not None, f"partition {partition} has no head row: run migrations"
            recorded = self._chain(partition, head["position"], bytes(head["hash"]), events)
            if recorded:
                await self._insert(connection, recorded)
                last = recorded[-1]
                await connection.execute(
                    "UPDATE log_heads SET position = $2, hash = $3 WHERE partition = $1",
                    partition,
                    last.position,
                    last.hash,
                )
                # A hint for tailing readers; they poll as well, so a lost one stalls nothing.
                await connection.execute(
                    "SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, f"{partition}:{last.position}"
                )
            return recorded

    async def _check_expected_versions(
        self, connection: AnyConnection, expected_versions: dict[str, int]
    ) -> None:
        rows = await connection.fetch(
            "SELECT stream_id, max(version) AS version FROM events"
            " WHERE stream_id = any($1::text[]) GROUP BY stream_id",
            list(expected_versions),
        )
        actual = {row["stream_id"]: row["version"] for row in rows}
        for stream_id, expected in expected_versions.items():
            if actual.get(stream_id, 0) != expected:
                raise ConcurrencyConflict(
                    f"stream {stream_id} is at version {actual.get(stream_id, 0)}, "
                    f"writer expected {expected}"
                )

    async def _take_claims(self, connection: AnyConnection, claims: Sequence[Claim]) -> None:
        for claim in claims:
            # A taken claim moves only from the stream it `replaces`; the row lock the upsert
            # takes makes two requests replacing the same holder take turns, and one loses.
            holder = await connection.fetchval(
                "INSERT INTO claims (namespace, key, stream_id, value) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (namespace, key) DO UPDATE SET stream_id = excluded.stream_id,"
                " value = excluded.value WHERE claims.stream_id = $5 RETURNING stream_id",
                claim.namespace,
                claim.key,
                claim.stream_id,
                claim.value,
                claim.replaces,
            )
            if holder is None:
                existing = await connection.fetchval(
                    "SELECT stream_id FROM claims WHERE namespace = $1 AND key = $2",
                    claim.namespace,
                    claim.key,
                )
                raise ClaimTaken(claim, str(existing))

    @staticmethod
    def _chain(
        partition: int, position: int, prev_hash: bytes, events: Sequence[NewEvent]
    ) -> list[RecordedEvent]:
        recorded_at = datetime.now(UTC)
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

    @staticmethod
    async def _insert(connection: AnyConnection, recorded: list[RecordedEvent]) -> None:
        await connection.execute(
            "INSERT INTO events (" + _SELECT_COLUMNS + ")"  # noqa: S608 - constant columns
            " SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::int[], $5::text[],"
            " $6::bytea[], $7::jsonb[], $8::timestamptz[], $9::bytea[], $10::bytea[])",
            [e.partition for e in recorded],
            [e.position for e in recorded],
            [e.stream_id for e in recorded],
            [e.version for e in recorded],
            [e.type for e in recorded],
            [e.payload for e in recorded],
            [e.metadata for e in recorded],
            [e.recorded_at for e in recorded],
            [e.prev_hash for e in recorded],
            [e.hash for e in recorded],
        )

    async def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[RecordedEvent]:
        rows = await self.pool.fetch(
            f"SELECT {_SELECT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2"  # noqa: S608 - constant columns
            " ORDER BY version",
            stream_id,
            after_version,
        )
        return [_recorded(row) for row in rows]

    async def read_log(
        self, partition: int, *, after: int = 0, batch_size: int = 500
    ) -> AsyncIterator[list[RecordedEvent]]:
        end = (await self.head(partition)).position
        while after < end:
            batch = await self.read_batch(partition, after=after, limit=batch_size, until=end)
            if not batch:
                return
            yield batch
            after = batch[-1].position

    async def read_batch(
        self, partition: int, *, after: int, limit: int, until: int | None = None
    ) -> list[RecordedEvent]:
        return await fetch_batch(self.pool, partition, after=after, limit=limit, until=until)

    async def head(self, partition: int = 0) -> Head:
        row = await self.pool.fetchrow(
            "SELECT position, hash FROM log_heads WHERE partition = $1", partition
        )
        assert row is not None, f"partition {partition} has no head row: run migrations"
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
    return [_recorded(row) for row in rows]


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
    return [_recorded(row) for row in rows]

"""Group commit: many appends in one transaction, each accepted or refused as if it ran alone.

Run with one partition and with four (ledger.ports.PARTITION_COUNT patched): positions stay
gap-free and the hash chain verifies in every partition.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

import ledger.ports
from adapters.storage.outages import DATABASE_OUTAGES
from adapters.storage.postgres_store import PostgresEventStore
from ledger.errors import ConcurrencyConflict
from ledger.hashchain import verify_chain
from ledger.ports import Claim, ClaimTaken, NewEvent, partition_of

APPENDERS = 64


@pytest.fixture(params=[1, 4], ids=["P=1", "P=4"])
def partitions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(ledger.ports, "PARTITION_COUNT", request.param)
    return int(request.param)


def new(stream: str, version: int, body: bytes = b'{"n":1}', **metadata: Any) -> NewEvent:
    return NewEvent(stream, version, "Test.Happened", body, dict(metadata))


def same_partition_as(stream: str, prefix: str) -> str:
    """A stream name starting with `prefix` that routes to `stream`'s partition."""
    for number in itertools.count():
        candidate = f"{prefix}-{number}"
        if partition_of(candidate) == partition_of(stream):
            return candidate
    raise AssertionError  # pragma: no cover


@dataclass
class Case:
    """One appender: what it appends, and what it must get whatever runs beside it."""

    events: list[NewEvent]
    expected_versions: dict[str, int]
    claims: list[Claim] = field(default_factory=list)
    refused_by: type[Exception] | None = None
    holder: str | None = None  # for ClaimTaken
    refused_claim: Claim | None = None


async def log_of(store: PostgresEventStore, partition: int) -> list:
    return [event async for batch in store.read_log(partition) for event in batch]


async def seed(store: PostgresEventStore, count: int) -> None:
    for n in range(count):
        await store.append(
            [new(f"old-{n}", 1), new(f"old-{n}", 2)], expected_versions={f"old-{n}": 0}
        )
    for n in range(count):
        await store.append(
            [new(f"holder-{n}", 1)],
            expected_versions={f"holder-{n}": 0},
            claims=[Claim("dedupe", f"taken-{n}", f"holder-{n}")],
        )


def cases() -> list[Case]:
    made: list[Case] = []
    for n in range(APPENDERS // 8):
        own = f"own-{n}"
        made += [
            # a new stream
            Case([new(f"fresh-{n}", 1), new(f"fresh-{n}", 2)], {f"fresh-{n}": 0}),
            # an existing stream at the version it is at
            Case([new(f"old-{n}", 3)], {f"old-{n}": 2}),
            # a stale writer
            Case([new(f"old-{n}", 2)], {f"old-{n}": 1}, refused_by=ConcurrencyConflict),
            # a free claim, taken
            Case([new(f"{own}-a", 1)], {f"{own}-a": 0}, [Claim("dedupe", f"free-{n}", f"{own}-a")]),
            # a claim held by another stream, refused with its holder
            Case(
                [new(f"{own}-b", 1)],
                {f"{own}-b": 0},
                [Claim("dedupe", f"taken-{n}", f"{own}-b")],
                refused_by=ClaimTaken,
                holder=f"holder-{n}",
            ),
            # the second of two claims taken: the first must not be kept either
            Case(
                [new(f"{own}-c", 1)],
                {f"{own}-c": 0},
                [
                    Claim("other", f"first-{n}", f"{own}-c"),
                    Claim("dedupe", f"taken-{n}", f"{own}-c", replaces="not-the-holder"),
                ],
                refused_by=ClaimTaken,
                holder=f"holder-{n}",
            ),
            # a claim moved from the stream it replaces
            Case(
                [new(f"{own}-d", 1)],
                {f"{own}-d": 0},
                [Claim("order", f"moved-{n}", f"{own}-d", value="v2", replaces=f"holder-{n}")],
            ),
        ]
        # two streams of one partition, one of them stale: nothing written
        stale_pair = same_partition_as(f"old-{n}", f"pair-{n}")
        made.append(
            Case(
                [new(stale_pair, 1), new(f"old-{n}", 6)],
                {stale_pair: 0, f"old-{n}": 5},
                refused_by=ConcurrencyConflict,
            )
        )
    assert len(made) == APPENDERS
    return made


async def test_64_concurrent_appenders_each_get_their_own_outcome(store, pool, partitions):
    await seed(store, APPENDERS // 8)
    for n in range(APPENDERS // 8):  # claims that the "moved" cases replace
        await store.append(
            [new(f"holder-{n}", 2)],
            expected_versions={f"holder-{n}": 1},
            claims=[Claim("order", f"moved-{n}", f"holder-{n}", value="v1")],
        )
    heads_before = {p: (await store.head(p)).position for p in range(partitions)}
    made = cases()

    async def run(case: Case) -> list | Exception:
        try:
            return await store.append(
                case.events, expected_versions=case.expected_versions, claims=case.claims
            )
        except (ConcurrencyConflict, ClaimTaken) as refusal:
            return refusal

    outcomes = await asyncio.gather(*(run(case) for case in made))

    for case, outcome in zip(made, outcomes, strict=True):
        if case.refused_by is None:
            assert isinstance(outcome, list), (case, outcome)
            assert [(e.stream_id, e.version) for e in outcome] == [
                (e.stream_id, e.version) for e in case.events
            ]
            for claim in case.claims:
                held = await store.find_claim(claim.namespace, claim.key)
                assert held is not None
                assert (held.stream_id, held.value) == (claim.stream_id, claim.value)
        else:
            assert isinstance(outcome, case.refused_by), (case, outcome)
            if isinstance(outcome, ClaimTaken):
                assert outcome.holder == case.holder
                assert outcome.claim == case.claims[-1]
            for claim in case.claims:
                held = await store.find_claim(claim.namespace, claim.key)
                assert held is None or held.stream_id != claim.stream_id, (case, held)
            for stream in case.expected_versions:
                if stream.startswith(("own-", "pair-")):
                    assert [] == await store.read_stream(stream)

    accepted = sum(case.refused_by is None for case in made)
    appended = sum(len(case.events) for case in made if case.refused_by is None)
    written = 0
    for partition in range(partitions):
        log = await log_of(store, partition)
        assert [e.position for e in log] == list(range(1, len(log) + 1)), "gap-free positions"
        assert len(log) == verify_chain(log)
        written += len(log) - heads_before[partition]
    assert appended == written
    # They were group committed: fewer transactions than accepted appends.
    transactions = await pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM events WHERE stream_id LIKE ANY"
        " (ARRAY['fresh-%', 'own-%']) OR (stream_id LIKE 'old-%' AND version = 3)"
    )
    assert transactions < accepted


async def test_appends_to_one_stream_in_one_batch_take_turns(store):
    """Twelve writers expect version 1 of one stream: exactly one wins, even inside one batch."""
    await store.append([new("s", 1)], expected_versions={"s": 0})

    async def writer(n: int) -> bool:
        try:
            await store.append([new("s", 2, b'{"w":%d}' % n)], expected_versions={"s": 1})
        except ConcurrencyConflict:
            return False
        return True

    assert 1 == sum(await asyncio.gather(*(writer(n) for n in range(12))))
    # and claims taken by one append of a batch are seen by the next ones
    results = await asyncio.gather(
        *(
            store.append(
                [new(f"c{n}", 1)],
                expected_versions={f"c{n}": 0},
                claims=[Claim("dedupe", "same", f"c{n}")],
            )
            for n in range(10)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, list)]
    assert 1 == len(winners)
    holder = winners[0][0].stream_id
    assert all(r.holder == holder for r in results if isinstance(r, ClaimTaken))
    assert 10 == len(results)


async def test_an_append_the_database_refuses_fails_alone(store):
    """Not a conflict but an error (metadata that is not valid JSON for PostgreSQL): the others
    of its batch are written."""

    async def good(n: int) -> list:
        return await store.append([new(f"g{n}", 1)], expected_versions={f"g{n}": 0})

    bad = store.append([new("bad", 1, nan=float("nan"))], expected_versions={"bad": 0})
    results = await asyncio.gather(*(good(n) for n in range(8)), bad, return_exceptions=True)
    assert all(isinstance(r, list) for r in results[:8])
    assert isinstance(results[8], Exception)
    assert [] == await store.read_stream("bad")
    log = await log_of(store, 0)
    assert list(range(1, 9)) == [e.position for e in log]
    assert 8 == verify_chain(log)


async def test_the_writer_reconnects_after_its_connection_is_lost(store, pool):
    await store.append([new("a", 1)], expected_versions={"a": 0})
    writer = store._writers[0]  # the held connection is the subject
    assert writer.connection is not None
    await pool.execute("SELECT pg_terminate_backend($1)", writer.connection.get_server_pid())
    await asyncio.sleep(0.05)
    try:
        await store.append([new("a", 2)], expected_versions={"a": 1})
    except DATABASE_OUTAGES:
        # the batch that found the connection dead: its callers get the outage, then retry
        await store.append([new("a", 2)], expected_versions={"a": 1})
    await store.append([new("a", 3)], expected_versions={"a": 2})
    log = await log_of(store, 0)
    assert [1, 2, 3] == [e.version for e in log]
    assert 3 == verify_chain(log)


async def test_another_writer_moving_the_head_is_followed(store, pool):
    """Two stores (two processes, say) on one partition: each recomputes its hashes against the
    head the other left, and the chain stays whole."""
    other = PostgresEventStore(pool)
    try:
        for version in range(1, 11):
            mine = store.append([new("x", version)], expected_versions={"x": version - 1})
            theirs = other.append([new("y", version)], expected_versions={"y": version - 1})
            await asyncio.gather(mine, theirs)
    finally:
        await other.close()
    log = await log_of(store, 0)
    assert list(range(1, 21)) == [e.position for e in log]
    assert 20 == verify_chain(log)

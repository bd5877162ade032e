"""The asyncpg event store against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from adapters.storage.postgres_store import PostgresEventStore
from ledger.errors import ConcurrencyConflict, HashChainBroken
from ledger.hashchain import verify_chain
from ledger.ports import Claim, ClaimTaken, NewEvent


def new(stream: str, version: int, body: bytes = b'{"n":1}') -> NewEvent:
    return NewEvent(stream_id=stream, version=version, type="Test.Happened", payload=body)


async def read_everything(store: PostgresEventStore) -> list:
    return [event async for batch in store.read_log(0) for event in batch]


async def test_appended_events_read_back_in_order_with_positions(store):
    await store.append([new("a", 1), new("a", 2)], expected_versions={"a": 0})
    await store.append([new("b", 1)], expected_versions={"b": 0})
    stream = await store.read_stream("a")
    assert [1, 2] == [e.version for e in stream]
    log = await read_everything(store)
    assert [1, 2, 3] == [e.position for e in log]
    assert ["a", "a", "b"] == [e.stream_id for e in log]
    assert 3 == verify_chain(log)


async def test_wrong_expected_version_is_a_conflict_and_writes_nothing(store):
    await store.append([new("a", 1)], expected_versions={"a": 0})
    with pytest.raises(ConcurrencyConflict):
        await store.append([new("a", 3), new("b", 1)], expected_versions={"a": 2, "b": 0})
    assert [] == await store.read_stream("b")
    assert 1 == (await store.head()).position


async def test_multi_stream_append_is_atomic(store):
    await store.append([new("b", 1)], expected_versions={"b": 0})
    with pytest.raises(ConcurrencyConflict):
        # "b" is stale, so "a" must not be written either.
        await store.append([new("a", 1), new("b", 1)], expected_versions={"a": 0, "b": 0})
    assert [] == await store.read_stream("a")


async def test_concurrent_appends_to_one_stream_exactly_one_wins(store):
    await store.append([new("s", 1)], expected_versions={"s": 0})

    async def writer(n: int) -> bool:
        try:
            await store.append([new("s", 2, b'{"w":%d}' % n)], expected_versions={"s": 1})
        except ConcurrencyConflict:
            return False
        return True

    results = await asyncio.gather(*(writer(n) for n in range(12)))
    assert 1 == sum(results)
    assert [1, 2] == [e.version for e in await store.read_stream("s")]


async def test_taken_claim_refuses_the_whole_append(store):
    await store.append(
        [new("a", 1)], expected_versions={"a": 0}, claims=[Claim("dedupe", "k", "a")]
    )
    with pytest.raises(ClaimTaken) as caught:
        await store.append(
            [new("b", 1)], expected_versions={"b": 0}, claims=[Claim("dedupe", "k", "b")]
        )
    assert "a" == caught.value.holder
    assert [] == await store.read_stream("b")
    assert "a" == (await store.find_claim("dedupe", "k")).stream_id


@pytest.mark.slow
async def test_tailing_reader_sees_every_event_once_in_increasing_order(store):
    """8 writers on different streams while a reader tails the log: no event is skipped (gap-free
    order) and none is seen twice."""
    writers, per_writer = 8, 60
    done = asyncio.Event()
    seen: list[int] = []

    async def writer(w: int) -> None:
        for version in range(1, per_writer + 1):
            await store.append([new(f"w{w}", version)], expected_versions={f"w{w}": version - 1})
            if random.random() < 0.3:
                await asyncio.sleep(0)

    async def reader() -> None:
        after = 0
        while True:
            batch = await store.read_batch(0, after=after, limit=7)
            for event in batch:
                seen.append(event.position)
                after = event.position
            if not batch:
                if done.is_set() and after == (await store.head()).position:
                    return
                await asyncio.sleep(0.001)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    await asyncio.wait_for(reading, 30)
    assert list(range(1, writers * per_writer + 1)) == seen


async def test_database_refuses_update_and_delete_of_events(store, pool):
    await store.append([new("a", 1)], expected_versions={"a": 0})
    async with pool.acquire() as connection:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await connection.execute("UPDATE events SET type = 'X'")
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await connection.execute("DELETE FROM events")
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await connection.execute("TRUNCATE events")


async def test_tampering_with_a_stored_event_is_found_at_its_position(store, pool):
    for version in range(1, 6):
        await store.append([new("a", version)], expected_versions={"a": version - 1})
    async with pool.acquire() as connection:
        # Only someone who can switch the guard off can edit history; the chain still tells.
        await connection.execute("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
        await connection.execute("UPDATE events SET payload = '{\"n\":2}' WHERE position = 3")
        await connection.execute("ALTER TABLE events ENABLE TRIGGER events_refuse_update_delete")
    with pytest.raises(HashChainBroken) as caught:
        verify_chain(await read_everything(store))
    assert 3 == caught.value.position

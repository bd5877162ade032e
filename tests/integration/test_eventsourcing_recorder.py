
"""eventsourcing's own recorder contract tests, run against `LedgerApplicationRecorder`.

These are unittest classes (collected by pytest) and synchronous: no pytest-asyncio fixtures.
Each recorder gets a fresh schema, migrated with our migrations, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import unittest
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from eventsourcing.persistence import DataError, IntegrityError, StoredEvent
from eventsourcing.tests import persistence as contract

from adapters.storage.es_recorder import LedgerApplicationRecorder
from adapters.storage.migrate import migrate

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

_server: tuple[asyncio.AbstractEventLoop, Callable[[], Awaitable[Any]]] | None = None
_database_url: str | None = None


def database_url() -> str:
    """LEDGER_TEST_DATABASE_URL, else an embedded server started once for this module."""
    global _server, _database_url  # noqa: PLW0603 - one server per module, like conftest's
    configured = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if configured:
        return configured
    if _database_url is None:
        try:
            from tests.db import open_test_server  # noqa: PLC0415 - only without a server
        except ImportError:
            msg = "LEDGER_TEST_DATABASE_URL is unset and tests/db.py does not exist yet"
            raise unittest.SkipTest(msg) from None
        # The server's loop stays open (not running) until tearDownModule stops the server.
        loop = asyncio.new_event_loop()
        _database_url, stop = loop.run_until_complete(open_test_server())
        _server = (loop, stop)
    return _database_url


def tearDownModule() -> None:
    global _server, _database_url
    if _server is not None:
        loop, stop = _server
        _server, _database_url = None, None
        try:
            loop.run_until_complete(stop())
        finally:
            loop.close()


async def _create_schema(dsn: str, name: str) -> None:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": name})
    try:
        await connection.execute(f'CREATE SCHEMA "{name}"')
        await migrate(connection)
    finally:
        await connection.close()


async def _drop_schema(dsn: str, name: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await connection.close()


def new_recorder(test: Any, **options: Any) -> LedgerApplicationRecorder:
    """A recorder on a fresh migrated schema; closed and dropped when `test` ends."""
    dsn = database_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_schema(dsn, schema))
    test.addCleanup(asyncio.run, _drop_schema(dsn, schema))
    recorder = LedgerApplicationRecorder(dsn, schema, **options)
    test.addCleanup(recorder.close)  # cleanups run last-in first-out: close, then drop
    return recorder


class TestLedgerApplicationRecorder(
    contract.ApplicationRecorderTestCase[LedgerApplicationRecorder]
):
    # The contract numbers some streams from 0 (`range(n)` in the concurrency tests) and others
    # from INITIAL_VERSION; our table numbers streams from 1 with no gaps, so these tests run
    # with streams starting at 0 and the recorder's +1 offset (initial_version=0).
    INITIAL_VERSION = 0

    def create_recorder(self) -> LedgerApplicationRecorder:
        return new_recorder(self, initial_version=0)

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestMapping(unittest.TestCase):
    """What the contract does not pin down: the default mapping, as eventsourcing's aggregates use
    it (versions from 1, stored unchanged), and our stricter version rules."""

    def test_default_stores_versions_unchanged_and_returns_uuids(self) -> None:
        recorder = new_recorder(self)
        originator_id = uuid.uuid4()
        events = [
            StoredEvent(originator_id, 1, "topic1", b"state1"),
            StoredEvent(originator_id, 2, "topic2", b"state2"),
        ]
        assert recorder.insert_events(events) == [1, 2]
        assert events == recorder.select_events(originator_id)
        notifications = recorder.select_notifications(None, 10)
        assert [originator_id, originator_id] == [n.originator_id for n in notifications]
        assert [n.originator_version for n in notifications] == [1, 2]

        rows = asyncio.run(_stream_versions(database_url(), recorder, str(originator_id)))
        assert rows == [1, 2]

    def test_text_ids_round_trip_and_non_uuid_streams_stay_text(self) -> None:
        recorder = new_recorder(self)
        recorder.insert_events([StoredEvent("payment-1", 1, "t", b"s")])
        recorder.insert_events([StoredEvent(str(uuid.uuid4()), 1, "t", b"s")])
        texts = new_recorder(self, originator_id_type="text")
        texts.insert_events([StoredEvent(str(uuid.uuid4()), 1, "t", b"s")])
        first, second = recorder.select_notifications(None, 10)
        assert first.originator_id == "payment-1"
        assert isinstance(second.originator_id, uuid.UUID)
        assert isinstance(texts.select_notifications(None, 10)[0].originator_id, str)

    def test_a_stream_must_start_at_the_initial_version_and_not_skip(self) -> None:
        recorder = new_recorder(self)
        originator_id = uuid.uuid4()
        with pytest.raises(DataError):
            recorder.insert_events([StoredEvent(originator_id, 0, "t", b"s")])
        with pytest.raises(IntegrityError):
            recorder.insert_events([StoredEvent(originator_id, 2, "t", b"s")])
        recorder.insert_events([StoredEvent(originator_id, 1, "t", b"s")])
        with pytest.raises(IntegrityError):
            recorder.insert_events([StoredEvent(originator_id, 3, "t", b"s")])
        with pytest.raises(IntegrityError):
            recorder.insert_events(
                [StoredEvent(originator_id, 2, "t", b"s"), StoredEvent(originator_id, 2, "t", b"s")]
            )
        assert [e.originator_version for e in recorder.select_events(originator_id)] == [1]

    def test_subscription_wakes_on_notify_not_only_on_the_poll_tick(self) -> None:
        recorder = new_recorder(self, poll_interval=60.0)
        received: list[object] = []
        with recorder.subscribe() as subscription:
            reader = threading.Thread(target=lambda: received.append(next(subscription)))
            reader.start()
            time.sleep(0.2)  # the reader is now waiting for a NOTIFY
            recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "t", b"s")])
            reader.join(timeout=5)
            assert not reader.is_alive(), "no NOTIFY woke the subscription"
        assert len(received) == 1

    def test_close_is_idempotent(self) -> None:
        recorder = new_recorder(self)
        subscription = recorder.subscribe()
        recorder.close()
        recorder.close()
        subscription.stop()
        with pytest.raises(Exception, match="closed"):
            recorder.max_notification_id()


async def _stream_versions(
    dsn: str, recorder: LedgerApplicationRecorder, stream_id: str
) -> list[int]:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": recorder._schema or ""})
    try:
        rows = await connection.fetch(
            "SELECT version FROM events WHERE stream_id = $1 ORDER BY version", stream_id
        )
    finally:
        await connection.close()
    return [row["version"] for row in rows]

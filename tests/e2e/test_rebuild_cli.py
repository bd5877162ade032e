"""`ledger projections rebuild` as an operator runs it: every projection rebuilt in worker
processes; one that fails rolls back alone and the command exits 1 naming it; SIGTERM stops
the workers and rolls back what had not committed."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from adapters.storage.read_models import all_projections
from adapters.storage.read_models.runner import ProjectionRunner
from tests.e2e.test_cli import REPOSITORY, child_environment, ledger_command, schema_url
from tests.histories import HistoryWriter, seeded_history
from tests.integration.test_projections import snapshot

pytestmark = pytest.mark.slow

NAMES = ["subjects", "journal", "reconciliation"]
JOURNAL_TABLES = {"journal_entries", "journal_postings", "account_balances", "journal_unmatched"}


async def prepared(pool, store, tmp_path: Path, database_url: str, schema: str) -> Path:
    """A log, its read models caught up then emptied (a rebuild must fill them), and a config."""
    writer = HistoryWriter(store)
    for seed in range(400, 404):
        await writer.write(seeded_history(seed))
    await ProjectionRunner(pool, all_projections()).catch_up()
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{schema_url(database_url, schema)}"\n')
    return config


async def emptied(pool) -> dict[str, list[dict]]:
    for projection in all_projections():
        for table in projection.tables:
            await pool.execute(f"DELETE FROM {table}")
    return await snapshot(pool)


async def test_rebuild_of_every_projection_in_workers_restores_the_read_models(
    pool, store, tmp_path, database_url, schema
):
    config = await prepared(pool, store, tmp_path, database_url, schema)
    built_live = await snapshot(pool)
    await emptied(pool)
    code, out, err = await ledger_command(
        "projections", "rebuild", "--jobs", "2", "--config", str(config)
    )
    assert 0 == code, err
    for name in NAMES:
        assert f"rebuilt {name}: " in out
    assert built_live == await snapshot(pool)


async def test_one_failing_projection_exits_1_naming_it_and_the_others_commit(
    pool, store, tmp_path, database_url, schema
):
    config = await prepared(pool, store, tmp_path, database_url, schema)
    built_live = await snapshot(pool)
    before = await emptied(pool)
    # A table the journal writes is gone: its rebuild fails, nobody else's does.
    await pool.execute("ALTER TABLE journal_unmatched RENAME TO journal_unmatched_away")
    try:
        code, out, err = await ledger_command("projections", "rebuild", "--config", str(config))
    finally:
        await pool.execute("ALTER TABLE journal_unmatched_away RENAME TO journal_unmatched")
    assert 1 == code, err
    assert "rebuild failed, old read model kept: journal (" in err
    assert "journal_unmatched" in err
    assert "rebuilt subjects: " in out
    assert "rebuilt reconciliation: " in out
    after = await snapshot(pool)
    for table, rows in after.items():
        assert (before if table in JOURNAL_TABLES else built_live)[table] == rows, table


async def test_sigterm_stops_the_workers_and_rolls_back_what_had_not_committed(
    pool, store, tmp_path, database_url, schema
):
    config = await prepared(pool, store, tmp_path, database_url, schema)
    before = await emptied(pool)
    async with pool.acquire() as blocker, blocker.transaction():
        # Holding the journal's position rows keeps its rebuild waiting until we let go.
        await blocker.execute(
            "SELECT 1 FROM projection_positions WHERE name = 'journal' FOR UPDATE"
        )
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "adapters.cli.main", "projections", "rebuild"),
            *("--config", str(config)),
            cwd=REPOSITORY,
            env=child_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(15):
            while not await pool.fetchval(  # noqa: ASYNC110 - the server has no event to wait on
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%projection_positions%'"
            ):
                await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            _, err = await process.communicate()
    assert 1 == process.returncode, err
    assert "interrupted" in err.decode()
    after = await snapshot(pool)
    for table in JOURNAL_TABLES:
        assert before[table] == after[table], table
    waiting = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%projection_positions%FOR UPDATE'"
        " AND pid <> pg_backend_pid()"
    )
    assert 0 == waiting, "a worker outlived the command"

"""The embedded PostgreSQL itself: always started here, whatever LEDGER_TEST_DATABASE_URL says."""

from __future__ import annotations

import asyncio
import shutil
from typing import TYPE_CHECKING

import asyncpg
import pytest

from adapters.storage.embedded import EmbeddedPostgres, EmbeddedPostgresError, embedded_postgres

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)


async def port_answers(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_ephemeral_server_serves_postgresql_18_over_tcp_until_stopped() -> None:
    server = EmbeddedPostgres(ephemeral=True)
    dsn = await server.start()
    port, data_dir = server.port, server.data_dir
    try:
        assert dsn == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        connection = await asyncpg.connect(dsn)
        try:
            assert (await connection.fetchval("SELECT version()")).startswith("PostgreSQL 18")
            assert await connection.fetchval("SHOW server_version_num") >= "180000"
            await connection.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
            await connection.execute("INSERT INTO t VALUES (1, 'one')")
            assert await connection.fetchval("SELECT note FROM t WHERE id = 1") == "one"
        finally:
            await connection.close()
    finally:
        await server.stop()
    assert not await port_answers(port)
    assert not data_dir.exists()  # ephemeral files are gone
    await server.stop()  # a second stop is harmless


async def test_restart_on_the_same_data_dir_keeps_the_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    async with embedded_postgres(data_dir) as dsn:
        connection = await asyncpg.connect(dsn)
        await connection.execute("CREATE TABLE kept (n int)")
        await connection.execute("INSERT INTO kept VALUES (42)")
        await connection.close()
    assert (data_dir / "PG_VERSION").exists()
    assert not (data_dir / "postmaster.pid").exists()

    async with embedded_postgres(data_dir) as dsn:
        connection = await asyncpg.connect(dsn)
        assert await connection.fetchval("SELECT n FROM kept") == 42
        await connection.close()
    shutil.rmtree(data_dir)  # 40 MB; pytest keeps three sessions of tmp dirs


async def test_a_server_left_by_a_killed_run_or_its_stale_pid_file_does_not_block_start(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "pgdata"
    killed = EmbeddedPostgres(data_dir)
    await killed.start()
    orphan_port = killed.port
    killed._release()  # what a SIGKILL leaves: the server runs on, its owner's lock is gone

    server = EmbeddedPostgres(data_dir)
    await server.start()
    try:
        assert not await port_answers(orphan_port)  # the orphan was stopped
        with pytest.raises(EmbeddedPostgresError, match="in use by another process"):
            await EmbeddedPostgres(data_dir).start()
        connection = await asyncpg.connect(server.dsn)  # the refused starter left it alone
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close()
    finally:
        await server.stop()

    # A postmaster.pid naming a process that is gone (a killed server) is replaced.
    pid_file = data_dir / "postmaster.pid"
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    pid_file.write_text(f"{dead.pid}\n{data_dir}\n0\n1\n\n\n\n")
    async with embedded_postgres(data_dir) as dsn:
        connection = await asyncpg.connect(dsn)
        assert await connection.fetchval("SELECT 1") == 1
        await connection.close()
    shutil.rmtree(data_dir)

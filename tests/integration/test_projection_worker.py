"""The projection runner in its own process (`projections_worker = "process"`), on a real
PostgreSQL: the child brings the projections to the log's head while the parent serves, ends
when the parent stops (and when the parent is SIGKILLed), survives its sessions being killed
again and again, and is replaced when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from adapters.cli.service import SERVE_PROJECTIONS_WORKER
from adapters.config import Settings
from adapters.http.app import init_app
from adapters.http.projection_worker import PROJECTION_WORKER
from adapters.storage.postgres_store import PostgresEventStore, create_pool
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.runner import ProjectionRunner
from tests.e2e.harness import serve
from tests.histories import HistoryWriter, seeded_history
from tests.integration.test_background_survives import eventually, kill_sessions_until

TOKEN = "worker-token"
FAST = {"background_restart_seconds_min": 0.01, "background_restart_seconds_max": 0.2}
REPOSITORY = Path(__file__).resolve().parents[2]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api": {"tokens": [{"name": "tests", "token": TOKEN, "scopes": ["admin"]}]},
        "expiry_sweep_seconds": 0,
        "balance_poll_seconds": 0,
        "projections_worker": "process",
        **FAST,
    }
    return Settings(**{**values, **overrides})


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaped has ended: it only waits for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


async def ended(pid: int) -> bool:
    return not alive(pid)


async def at_head(http: aiohttp.ClientSession, url: str, store: PostgresEventStore) -> bool:
    """/v1/projections (read from the database) has every projection at the log's head."""
    head = (await store.head()).position
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(f"{url}/v1/projections", headers=headers) as reply:
        body = await reply.json()
    positions = [item["position"] for item in body["items"]]
    return bool(positions) and min(positions) >= head


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async with serve(app) as url, aiohttp.ClientSession() as http:
        yield url, http


def test_ledger_serve_runs_the_projections_in_a_process_of_their_own_unless_configured() -> None:
    assert "process" == SERVE_PROJECTIONS_WORKER
    assert "in_process" == Settings().projections_worker  # what tests and the demo compose
    assert "off" == Settings(projections_worker="off").projections_worker


async def test_the_child_runs_the_projections_to_the_head_while_the_parent_serves(
    store: PostgresEventStore,
) -> None:
    app = init_app(settings(), store=store, adapters={})
    async with served(app) as (url, http):
        await HistoryWriter(store).write(seeded_history(700, length=30))
        await eventually(lambda: at_head(http, url, store))
        async with http.get(f"{url}/readyz") as reply:
            ready = reply.status
        pid = app[PROJECTION_WORKER].pid
        assert pid is not None
        running = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
        child_alive_while_serving = alive(pid)

    assert 200 == ready
    assert "projection worker" in running
    assert "projection runner" not in running  # not on this loop: the child runs it
    assert child_alive_while_serving
    assert pid in children_of(os.getpid()) or not alive(pid)
    await eventually(lambda: ended(pid), seconds=2)  # stopped with the app, not left behind


async def test_the_child_survives_its_sessions_being_killed_repeatedly(
    database_url: str, schema: str, pool: asyncpg.Pool, store: PostgresEventStore
) -> None:
    name = f"outage-{schema}"
    app_pool = await create_pool(
        database_url, schema=schema, min_size=1, max_size=10, application_name=name
    )
    try:
        app = init_app(settings(), store=PostgresEventStore(app_pool), adapters={})
        async with served(app) as (url, http):
            worker = app[PROJECTION_WORKER]
            await eventually(lambda: at_head(http, url, store))
            first = worker.pid
            stop = asyncio.Event()
            # Only the child's sessions: the parent's own pool is left alone.
            killer = asyncio.create_task(kill_sessions_until(pool, f"{name} projections", stop))
            writer = HistoryWriter(store)
            clock = asyncio.get_running_loop()
            storm_ends = clock.time() + 2.5
            seed = 0
            while clock.time() < storm_ends:
                await writer.write(seeded_history(800 + seed, length=10))
                seed += 1
            stop.set()
            killed = await killer
            await eventually(lambda: at_head(http, url, store), seconds=15)
            second = worker.pid
    finally:
        await app_pool.close()

    assert killed > 10, "the kills did not land: a weak test"
    assert first == second  # the child restarted its runner itself, as the service would


async def test_a_child_that_dies_is_replaced_after_a_pause(store: PostgresEventStore) -> None:
    app = init_app(settings(), store=store, adapters={})
    async with served(app) as (url, http):
        worker = app[PROJECTION_WORKER]

        async def started() -> bool:
            return worker.pid is not None

        await eventually(started)
        first = worker.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)

        async def replaced() -> bool:
            return worker.pid not in (None, first)

        await eventually(replaced)
        await HistoryWriter(store).write(seeded_history(900, length=20))
        await eventually(lambda: at_head(http, url, store))
    assert not alive(first)


async def ledger_serve(config: Path) -> tuple[asyncio.subprocess.Process, str]:
    """`ledger serve` as operators run it, in its own process; (the process, its URL)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters.cli.main", "serve", "--config", str(config),
        cwd=REPOSITORY, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(15):
        line = (await process.stdout.readline()).decode()
    assert line.startswith("ledger serving on "), line
    return process, line.split()[3]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_the_child_ends_with_ledger_serve_even_when_serve_is_killed(
    database_url: str,
    schema: str,
    store: PostgresEventStore,
    tmp_path: Path,
    stop: signal.Signals,
) -> None:
    # The schema rides in the URL (asyncpg passes unknown parameters as server settings), so
    # `ledger serve` and its child work in this test's schema like every other test.
    config = tmp_path / "ledger.toml"
    config.write_text(
        f'database_url = "{database_url}?search_path={schema}"\nport = 0\n'
        f"expiry_sweep_seconds = 0\nbalance_poll_seconds = 0\n"
        f'[[api.tokens]]\nname = "tests"\ntoken = "{TOKEN}"\nscopes = ["admin"]\n'
    )
    process, url = await ledger_serve(config)
    try:
        async with aiohttp.ClientSession() as http:
            await HistoryWriter(store).write(seeded_history(950, length=20))
            await eventually(lambda: at_head(http, url, store), seconds=15)
        (child,) = children_of(process.pid)
        process.send_signal(stop)
        await process.wait()
        await eventually(lambda: ended(child), seconds=5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_ledger_projections_run_keeps_the_projections_at_the_head_until_sigterm(
    database_url: str, schema: str, pool: asyncpg.Pool, store: PostgresEventStore, tmp_path: Path
) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{database_url}?search_path={schema}"\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters.cli.main", "projections", "run", "--config", str(config),
        cwd=REPOSITORY, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    runner = ProjectionRunner(pool, all_projections())  # only to read the positions

    async def caught_up() -> bool:
        return all(0 == status.lag for status in await runner.status())

    try:
        async with asyncio.timeout(15):
            started = (await process.stdout.readline()).decode()
        await HistoryWriter(store).write(seeded_history(990, length=20))
        await eventually(caught_up)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            stopped = (await process.stdout.read()).decode()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert started.startswith("projections running")
    assert "projections stopped" in stopped
    assert 0 == code

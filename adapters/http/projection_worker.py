"""The parent's side of the projection runner in its own process (`projections_worker =
"process"`): `ProjectionWorker.run` is a supervised loop like the others (adapters/http/
background.py). It starts the child (adapters/http/projection_child.py), hands it its orders on
stdin, reports healthy once the child's first pass went through, and raises when the child
exits, so that the supervisor starts a new one after the same backoff. Cancelled (the app
stopping), it closes the child's stdin, which the child takes as its stop, and waits for it;
a child that does not stop in time is terminated, then killed.

Why a process: on the service's event loop the runner's folding competes with the HTTP server
for one core (bench/webhook_ingest.py measures both placements); in a child it gets the other.
The runner keeps its state in the database (positions, read models), so nothing is lost with a
child: a new one resumes where the last commit left the positions. /readyz, /v1/projections and
the /metrics projection gauges read that state from the database, wherever the runner runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web

from adapters.config import Settings
from adapters.http.projection_child import READY_LINE, WorkerOrders

log = logging.getLogger(__name__)

CHILD_MODULE = "adapters.http.projection_child"
STOP_SECONDS = 5.0  # the child's current batch commits or rolls back well within this


class WorkerExited(Exception):
    """The child ended while the parent still wanted it: the supervisor starts another."""


def worker_orders(pool: asyncpg.Pool, settings: Settings) -> WorkerOrders:
    """The database the parent's pool opens, as the child must open it. asyncpg keeps what it
    connects with only as private attributes; a pool created from the configuration always has
    the URL there (create_pool passes it first), and the settings' URL is the fallback."""
    arguments: tuple[Any, ...] = getattr(pool, "_connect_args", ())
    keywords: dict[str, Any] = getattr(pool, "_connect_kwargs", {})
    dsn = arguments[0] if arguments and isinstance(arguments[0], str) else settings.database_url
    if dsn is None:
        raise ValueError("the projection worker needs the database URL the service connects to")
    server_settings: dict[str, str] = keywords.get("server_settings") or {}
    return WorkerOrders(
        dsn=dsn,
        schema=server_settings.get("search_path"),
        application_name=f"{server_settings.get('application_name', 'ledger')} projections",
        restart_seconds_min=settings.background_restart_seconds_min,
        restart_seconds_max=settings.background_restart_seconds_max,
        log_level=logging.getLogger().getEffectiveLevel(),
    )


class ProjectionWorker:
    def __init__(self, orders: WorkerOrders, *, stop_seconds: float = STOP_SECONDS) -> None:
        self.orders = orders
        self.stop_seconds = stop_seconds
        # The running child, for tests and operators' logs; None between children.
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def run(self, healthy: Callable[[], None]) -> None:
        """One child, from start to exit (raises WorkerExited) or to cancellation (stops it)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            CHILD_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.process = process
        log.info("projection worker started (pid %d)", process.pid)
        try:
            # Both are pipes: asked for above.
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write(self.orders.line())
            await process.stdin.drain()
            async for line in process.stdout:
                if line == READY_LINE:
                    healthy()
            code = await process.wait()
            raise WorkerExited(f"the projection worker (pid {process.pid}) exited with {code}")
        finally:
            self.process = None
            await self._stop(process)

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        """Closes the child's stdin (its stop) and waits; terminates it, then kills it, if it
        does not end in time."""
        if process.stdin is not None:
            process.stdin.close()
        if await self._ended(process):
            return
        log.warning("projection worker (pid %d) did not stop; terminating it", process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        if await self._ended(process):
            return
        log.warning("projection worker (pid %d) did not terminate; killing it", process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def _ended(self, process: asyncio.subprocess.Process) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.stop_seconds):
                await process.wait()
            return True
        return False


PROJECTION_WORKER = web.AppKey("projection_worker", ProjectionWorker)

__all__ = ["PROJECTION_WORKER", "ProjectionWorker", "worker_orders"]

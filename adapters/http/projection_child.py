"""The projection runner as a process of its own: the child `ledger serve` starts when
`projections_worker = "process"` (adapters/http/projection_worker.py starts, watches and stops
it), and the loop `ledger projections run` runs in the foreground.

The child learns what to open from one JSON line on its stdin (`WorkerOrders`): the URL may hold
a password, which a command line would show to every user of the machine. It then keeps reading
stdin: the parent never writes again, so end-of-file means the parent closed the pipe (a stop)
or died, whatever killed it, SIGKILL included, since the kernel closes a dead process's pipes.
On Linux PR_SET_PDEATHSIG asks the kernel for a SIGTERM too, in case the pipe was inherited by
someone who keeps it open.

Database outages are the runner's supervisor's business, here as in the service: the loop is
restarted with the same backoff, the pool opened (again) inside it, so an outage even at start
only delays the first pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import asyncpg

from adapters.http.background import Backoff, Healthy, supervise
from adapters.observability.logs import configure_logging
from adapters.storage.postgres_store import create_pool
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.runner import ProjectionRunner

log = logging.getLogger(__name__)

# What the child prints on stdout after its first pass went through: the parent's healthy().
READY_LINE = b"ready\n"
RUNNER_NAME = "projection runner"  # as in-process, so that logs read the same either way
PR_SET_PDEATHSIG = 1  # linux/prctl.h
POOL_SIZE_MAX = 4  # the runner's batches, its LISTEN connection and the status reads


@dataclass(frozen=True, slots=True)
class WorkerOrders:
    """What the child opens and how it restarts: the parent's database (its schema too, where
    tests and benches isolate by schema), named so its sessions show as the runner's."""

    dsn: str
    schema: str | None
    application_name: str
    restart_seconds_min: float
    restart_seconds_max: float
    log_level: int = logging.WARNING
    # Added to the child's niceness: above 0, the HTTP server and the database get the CPU first
    # when they want it all, and the runner what they leave.
    niceness: int = 0

    def line(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> WorkerOrders:
        return cls(**json.loads(line))


async def run_projections(
    open_pool: Callable[[], Awaitable[asyncpg.Pool]],
    backoff: Backoff,
    stop: asyncio.Event,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Keeps every projection caught up until `stop` is set, restarting after any failure.
    `open_pool` is called once, in the first attempt that gets that far; the pool stays the
    caller's to close."""
    runner: ProjectionRunner | None = None
    ready = False

    async def loop(healthy: Healthy) -> None:
        nonlocal runner
        if runner is None:
            runner = ProjectionRunner(await open_pool(), all_projections())

        def passed() -> None:
            nonlocal ready
            healthy()
            if not ready:
                ready = True
                on_ready()

        await runner.run_forever(passed)

    task = asyncio.create_task(supervise(RUNNER_NAME, loop, backoff), name=RUNNER_NAME)
    try:
        await stop.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _die_with_parent() -> None:
    """SIGTERM when the parent dies (Linux); elsewhere stdin's end-of-file alone says it."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def _child() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = await reader.readline()
    if not line:
        return  # the parent died (or gave up) before it said what to run
    orders = WorkerOrders.from_line(line)
    configure_logging(level=orders.log_level)
    if orders.niceness > 0:
        os.nice(orders.niceness)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C in a terminal reaches the whole process group: the parent, stopping, closes our
    # stdin; stopping here too would only have it see an exit and start another child.
    loop.add_signal_handler(signal.SIGINT, lambda: None)

    async def parent_gone() -> None:
        await reader.read()  # the parent writes nothing more: this returns at end-of-file
        stop.set()

    def ready() -> None:
        sys.stdout.buffer.write(READY_LINE)
        sys.stdout.buffer.flush()

    pools: list[asyncpg.Pool] = []

    async def open_pool() -> asyncpg.Pool:
        pool = await create_pool(
            orders.dsn,
            schema=orders.schema,
            min_size=1,
            max_size=POOL_SIZE_MAX,
            application_name=orders.application_name,
        )
        pools.append(pool)
        return pool

    watcher = asyncio.create_task(parent_gone())
    backoff = Backoff(orders.restart_seconds_min, orders.restart_seconds_max)
    try:
        await run_projections(open_pool, backoff, stop, ready)
    finally:
        watcher.cancel()
        for pool in pools:
            await pool.close()


def main() -> None:
    _die_with_parent()
    asyncio.run(_child())


if __name__ == "__main__":
    main()

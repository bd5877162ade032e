"""Rebuilds several projections at once, each in its own worker process and its own transaction.

The projections own disjoint tables and position rows, so their rebuilds never wait on each
other; what they share is the CPU, and a rebuild is mostly Python folding events, so parallel
means processes (tasks in one event loop would take turns on one core). Each worker runs
`ProjectionRunner.rebuild`: one transaction, so readers keep the old read model until it
commits, and a worker that fails or is stopped rolls back its own projection only.

Workers are spawned, not forked: a fork would copy the parent's event loop and open sockets.
They report on one queue: a `RebuildProgress` per batch, then one `RebuildOutcome`. A worker
that dies without an outcome (killed, out of memory) is reported as failed; since its
connection dropped mid-transaction, the server rolled its rebuild back as well.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from time import monotonic, perf_counter
from typing import Any

from adapters.storage.postgres_store import create_pool
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.base import Projection
from adapters.storage.read_models.runner import ProjectionRunner, RebuildProgress

POLL_SECONDS = 0.05
# How long a stopped worker gets to roll back and say so before it is killed (a kill rolls
# back too, server side, when its connection drops).
STOP_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RebuildJob:
    """One projection to rebuild in a worker. `projections` must be importable by name (a
    module-level function): the spawned worker imports it anew."""

    name: str
    dsn: str
    schema: str | None = None
    batch_size: int = 2000
    projections: Callable[[], Sequence[Projection]] = all_projections


@dataclass(frozen=True, slots=True)
class RebuildOutcome:
    name: str
    events: int
    seconds: float
    failure: str | None = None  # why it rolled back; None: it committed

    @property
    def committed(self) -> bool:
        return self.failure is None


def default_workers(projections: int) -> int:
    return max(1, min(projections, multiprocessing.cpu_count()))


async def rebuild_in_parallel(
    jobs: Sequence[RebuildJob],
    *,
    workers: int,
    progress: Callable[[RebuildProgress], None] = lambda _: None,
) -> list[RebuildOutcome]:
    """Runs every job, `workers` at a time, and returns their outcomes in the jobs' order; a
    failed job does not stop the others. Cancelled (Ctrl-C, SIGTERM turned into a cancellation
    by the caller), it stops the workers, whose transactions roll back, and re-raises."""
    context = multiprocessing.get_context("spawn")
    messages: Any = context.Queue()
    waiting = list(jobs)
    running: dict[str, BaseProcess] = {}
    outcomes: dict[str, RebuildOutcome] = {}
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                job = waiting.pop(0)
                process = context.Process(
                    target=work, args=(job, messages), name=f"rebuild-{job.name}", daemon=True
                )
                process.start()
                running[job.name] = process
            await asyncio.sleep(POLL_SECONDS)
            # Exits first, then the queue: a worker's last message is in the pipe before it
            # exits, so one that exited and said nothing by now never will.
            exited = {name: p.exitcode for name, p in running.items() if p.exitcode is not None}
            _drain(messages, progress, outcomes)
            for name, code in exited.items():
                running.pop(name).join()
                if name not in outcomes:
                    outcomes[name] = RebuildOutcome(name, 0, 0.0, f"worker exited with {code}")
    finally:
        _stop(list(running.values()), messages)
        messages.close()
    return [outcomes[job.name] for job in jobs]


def _drain(
    messages: Any,
    progress: Callable[[RebuildProgress], None],
    outcomes: dict[str, RebuildOutcome],
) -> None:
    while True:
        try:
            message = messages.get_nowait()
        except queue.Empty:
            return
        if isinstance(message, RebuildOutcome):
            outcomes[message.name] = message
        else:
            progress(message)


def _stop(processes: list[BaseProcess], messages: Any) -> None:
    for process in processes:
        process.terminate()  # SIGTERM: the worker cancels its rebuild, which rolls back
    deadline = monotonic() + STOP_SECONDS
    for process in processes:
        while process.exitcode is None and monotonic() < deadline:
            # Read on: a worker exits only once what it put on the queue is in the pipe.
            _drain(messages, lambda _: None, {})
            process.join(POLL_SECONDS)
        if process.exitcode is None:
            process.kill()
            process.join()


# ------------------------------------------------------------------ in the worker process


def work(job: RebuildJob, messages: Any) -> None:
    """A worker's entry point: rebuilds `job.name` and puts its outcome on `messages`."""
    started = perf_counter()
    events, failure = 0, None
    try:
        events = asyncio.run(_rebuild(job, messages))
    except (KeyboardInterrupt, asyncio.CancelledError):
        failure = "interrupted"
    except Exception as error:  # noqa: BLE001 - any error is this projection's outcome
        failure = f"{type(error).__name__}: {error}"
    messages.put(RebuildOutcome(job.name, events, perf_counter() - started, failure))


async def _rebuild(job: RebuildJob, messages: Any) -> int:
    main = asyncio.current_task()
    assert main is not None, "run by asyncio.run"
    # SIGTERM (the parent stopping us) cancels the rebuild, so its transaction rolls back and
    # the connection closes cleanly; Ctrl-C does the same through asyncio.run's own handler.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    _cancel_when_orphaned(main)
    pool = await create_pool(job.dsn, schema=job.schema, min_size=1, max_size=2)
    try:
        # Its own projection only: the runner inserts missing position rows for every projection
        # it holds, and that INSERT would wait on the rows another worker's rebuild has updated.
        own = [projection for projection in job.projections() if projection.name == job.name]
        runner = ProjectionRunner(pool, own, batch_size=job.batch_size)

        def report(_done: int, _total: int) -> None:
            messages.put(runner.rebuild_progress)

        return await runner.rebuild(job.name, report)
    finally:
        await pool.close()


def _cancel_when_orphaned(main: asyncio.Task[int]) -> None:
    """A parent killed outright (SIGKILL) cannot stop us: a rebuild it no longer waits for
    must not commit behind its back. Its sentinel (a pipe) turns readable when it is gone."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        asyncio.get_running_loop().add_reader(parent.sentinel, main.cancel)

"""Work that lives as long as the service: the delivery applier, the projection runner (on this
event loop, or in a child process: adapters/http/projection_worker.py), the clock sweep, the
balance poll, the recovery of creates whose answer was lost and the queries about unverified
deliveries.
Each runs as a task started and stopped with the app (aiohttp cleanup context), under one
supervisor: whatever a loop raises (a database restart, a connection the server terminated, a
bug), it is logged and the loop starts again after a jittered, capped, growing pause, so that
nothing a fault interrupts stays stopped until someone restarts the process. Cancellation (the
app shutting down) still stops every loop at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from adapters.http.keys import (
    APPLIER,
    CHECKPOINTER,
    POLLER,
    QUERIES,
    RECOVERY,
    RUNNER,
    SETTINGS,
    STORE,
    SWEEPER,
)

log = logging.getLogger(__name__)

# A supervised loop: runs until cancelled, calling `healthy()` after each pass that went
# through; raising means it stopped and wants a restart.
Healthy = Callable[[], None]
Loop = Callable[[Healthy], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Pauses before restart `attempt` (1, 2, ...): doubling from `first_seconds` up to
    `max_seconds`, each drawn from the upper half of its ceiling. The jitter keeps several
    loops (or several ledger processes) that one outage stopped together from hitting the
    database together when it comes back; the lower bound keeps a loop that fails at once
    from spinning."""

    first_seconds: float = 0.1
    max_seconds: float = 5.0

    def seconds(self, attempt: int) -> float:
        ceiling = min(self.max_seconds, self.first_seconds * 2 ** min(attempt - 1, 32))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, no secret


async def supervise(name: str, loop: Loop, backoff: Backoff) -> None:
    """Runs `loop` until cancelled, restarting it after any exception. The attempt count (and
    with it the pause) goes back to zero once a restarted loop reports a healthy pass."""
    attempt = 0

    def healthy() -> None:
        nonlocal attempt
        if attempt:
            log.info("%s is running again after %d restarts", name, attempt)
        attempt = 0

    while True:
        try:
            await loop(healthy)
        except Exception as error:  # any failure: logged below, then restarted
            attempt += 1
            pause = backoff.seconds(attempt)
            log.warning(
                "%s stopped (%r); restart attempt %d in %.2f s",
                name,
                error,
                attempt,
                pause,
                exc_info=error,
                extra={"background": name, "attempt": attempt, "pause_seconds": pause},
            )
            await asyncio.sleep(pause)
        else:
            log.warning("%s returned; it is not restarted", name)
            return


async def background(app: web.Application) -> AsyncIterator[None]:
    """The app's cleanup context for the loops the settings turn on (init_app appends it after
    the one that builds what they run)."""
    settings = app[SETTINGS]
    sweeper, poller = app[SWEEPER], app[POLLER]
    backoff = Backoff(
        settings.background_restart_seconds_min, settings.background_restart_seconds_max
    )
    # The applier is the write path's second half: a received delivery waits for it.
    loops: dict[str, Loop] = {"delivery applier": app[APPLIER].run}
    # Imported here: the worker's child reuses this module's supervisor.
    from adapters.http.projection_worker import (  # noqa: PLC0415
        PROJECTION_WORKER,
        ProjectionWorker,
        worker_orders,
    )

    worker = settings.projections_worker
    if worker == "in_process":
        loops["projection runner"] = app[RUNNER].run_forever
    elif worker == "process":
        app[PROJECTION_WORKER] = ProjectionWorker(worker_orders(app[STORE].pool, settings))
        loops["projection worker"] = app[PROJECTION_WORKER].run
    if settings.expiry_sweep_seconds > 0:
        loops["clock sweeper"] = lambda healthy: sweeper.run_forever(
            settings.expiry_sweep_seconds, healthy
        )
    if settings.balance_poll_seconds > 0:
        loops["balance poller"] = lambda healthy: poller.run_forever(
            settings.balance_poll_seconds, healthy
        )
    if settings.recovery_seconds > 0:
        loops["submission recovery"] = lambda healthy: app[RECOVERY].run_forever(
            settings.recovery_seconds, healthy
        )
    if settings.provider_query_seconds > 0:
        loops["provider queries"] = lambda healthy: app[QUERIES].run_forever(
            settings.provider_query_seconds, healthy
        )
    if settings.audit.checkpoint_every_seconds > 0:
        loops["audit checkpoints"] = lambda healthy: app[CHECKPOINTER].run_forever(
            settings.audit.checkpoint_every_seconds, healthy
        )
    tasks = [
        asyncio.create_task(supervise(name, loop, backoff), name=name)
        for name, loop in loops.items()
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task

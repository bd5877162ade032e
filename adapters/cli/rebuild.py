"""`ledger projections rebuild [NAME] [--jobs N]`: every projection (or NAME) rebuilt in worker
processes (read_models/rebuild.py), one rich bar per projection and one for the total, each with
events/s and the time left.

A projection that fails rolls back alone: the others still commit, and the command exits 1
naming the one that failed and why. Ctrl-C or SIGTERM stops the workers; whatever had not
committed rolls back, and readers keep the old read models.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from time import monotonic

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

from adapters.cli.database import open_checked_pool
from adapters.cli.errors import CliError, ExitCode
from adapters.config import Settings
from adapters.storage.database import database_url
from adapters.storage.read_models.rebuild import RebuildJob, RebuildOutcome, rebuild_in_parallel
from adapters.storage.read_models.runner import RebuildProgress

BATCH_SIZE = 2000


class EventRateColumn(ProgressColumn):
    """Events per second since the rebuild began (rich's TransferSpeedColumn counts bytes)."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text(f"{rate:>9,.0f} events/s" if rate else f"{'-':>9} events/s")


class EtaColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        if task.finished:
            return Text("done")
        return Text(f"ETA {timedelta(seconds=round(eta))}" if eta is not None else "ETA -:--:--")


class RebuildBars:
    """Feeds the bars from the workers' RebuildProgress. Every projection replays the same log,
    so the total is one projection's total times their number, known from the first report."""

    def __init__(self, progress: Progress, names: list[str]) -> None:
        self._progress = progress
        self._tasks = {name: progress.add_task(name, total=None) for name in names}
        self._total = progress.add_task("total", total=None)
        self._latest: dict[str, RebuildProgress] = {}
        self._started = monotonic()

    def __call__(self, step: RebuildProgress) -> None:
        self._latest[step.name] = step
        self._show(self._tasks[step.name], step)
        events = max(each.total for each in self._latest.values()) * len(self._tasks)
        done = sum(each.done for each in self._latest.values())
        self._show(self._total, RebuildProgress("total", done, events, monotonic() - self._started))

    def _show(self, task: TaskID, step: RebuildProgress) -> None:
        self._progress.update(
            task,
            completed=step.done,
            total=step.total,
            rate=step.events_per_second,
            eta=step.eta_seconds,
        )


def verdict(outcomes: list[RebuildOutcome]) -> int:
    """Prints what committed; raises CliError (exit 1) naming what failed and why."""
    for outcome in outcomes:
        if outcome.committed:
            print(f"rebuilt {outcome.name}: {outcome.events} events in {outcome.seconds:.1f} s")
    failed = [outcome for outcome in outcomes if not outcome.committed]
    if failed:
        reasons = "; ".join(f"{outcome.name} ({outcome.failure})" for outcome in failed)
        raise CliError(f"rebuild failed, old read model kept: {reasons}")
    return ExitCode.OK


async def rebuild(settings: Settings, names: list[str], jobs: int) -> int:
    console = Console(stderr=True)
    async with database_url(settings) as url:
        # Checked here (migrations, reachability) so a worker never meets a database we refuse.
        async with open_checked_pool(settings.model_copy(update={"database_url": url})):
            pass
        work = [RebuildJob(name, url, batch_size=BATCH_SIZE) for name in names]
        main = asyncio.current_task()
        assert main is not None, "run by asyncio.run"
        # SIGTERM as a cancellation, as asyncio.run makes of Ctrl-C: the workers are stopped.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        with Progress(
            TextColumn("{task.description:<15}"),
            BarColumn(),
            MofNCompleteColumn(),
            EventRateColumn(),
            EtaColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress:
            try:
                outcomes = await rebuild_in_parallel(
                    work, workers=jobs, progress=RebuildBars(progress, names)
                )
            except asyncio.CancelledError:
                raise CliError("interrupted: every rebuild not yet committed rolled back") from None
    return verdict(outcomes)

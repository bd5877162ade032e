"""Progress of long work (projection rebuilds, audit export and verify): a rich bar on stderr,
so that standard output keeps only the command's result (an export, a verdict)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class EventProgress:
    """One bar counting events; `total` may be learnt late (a rebuild tells it with each step)."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self.done = 0

    def advance(self, count: int) -> None:
        self.done += count
        self._progress.update(self._task, completed=self.done)

    def __call__(self, done: int, total: int) -> None:
        """The (done, total) callback of ProjectionRunner.rebuild."""
        self.done = done
        self._progress.update(self._task, completed=done, total=total)


@contextmanager
def event_progress(label: str, total: int | None) -> Iterator[EventProgress]:
    """A bar labelled `label` on stderr while the block runs; drawn only on a terminal (a log
    file gets the command's own summary line instead)."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description:<15}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        yield EventProgress(progress, progress.add_task(label, total=total))

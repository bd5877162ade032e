"""Reading your writes (API.md): a list or balance read answers at least as fresh as the log was
when the request arrived, so a payment that got its 201 before the list request is on the list.

Every read of a payment or withdrawal, and every list and balance, first waits for the delivery
applier to reach the log's head at arrival (a webhook answered 200 before the read is applied
before it answers), doing the applier's work itself when it is behind, like the projections below.

Lists and balances read projections, which the runner feeds from the log a moment after each
append. A read wrapped here first reads, in one query, the log's head and the positions of the
projections it reads; when they are there already (the usual case) that query is all it costs.
When they are behind, the request does their work itself up to that head (the runner's
`catch_up`, which locks each projection's position row, so neither a request nor the background
runner ever does a batch twice), taking only rows nobody holds: while another request or the
runner holds one, it pauses briefly and looks again rather than holding a pooled connection in a
lock queue. It gives up after `wait_seconds_max` with 503 and Retry-After. A projection stopped
on a failing event never gets there by itself, so that is a 503 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from adapters.http.auth import authorize
from adapters.http.keys import APPLIER, RUNNER, SETTINGS
from adapters.http.problems import RETRY_AFTER_SECONDS, problem
from adapters.ingestion.applier import DeliveryApplier
from adapters.ingestion.reading import ProviderNotConfigured
from adapters.storage.read_models.journal import JournalProjection
from adapters.storage.read_models.readers import projection_positions
from adapters.storage.read_models.reconciliation import ReconciliationProjection
from adapters.storage.read_models.runner import ProjectionFailed, ProjectionRunner
from adapters.storage.read_models.subjects_view import SubjectsView

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What each read reads: payment and withdrawal lists, balances and the journal, reconciliation.
SUBJECTS = SubjectsView.name
JOURNAL = JournalProjection.name
RECONCILIATION = ReconciliationProjection.name

# Pauses while another holds a projection's row: its batch usually commits within milliseconds.
PAUSE_FIRST_SECONDS = 0.005
PAUSE_MAX_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class ProjectionPosition:
    name: str
    partition: int
    position: int
    head: int  # the log's head in that partition when read
    failed_position: int | None


def fresh(handler: Handler, scope: str, *projections: str) -> Handler:
    """`handler`, answering only once the applier and `projections` reached the log's head at
    arrival.
    The caller is authorized first: an anonymous request must not make the ledger work. The
    runner and the bound are the app's (read per request: routes are listed before the app
    starts and opens its database)."""

    @functools.wraps(handler)
    async def fresh_read(request: web.Request) -> web.StreamResponse:
        authorize(request, scope)
        return await refusal(request, projections) or await handler(request)

    return fresh_read


async def refusal(request: web.Request, projections: Sequence[str]) -> web.Response | None:
    """None once the applier and `projections` reached the log's head at the request's arrival;
    else the 503 to send (the API sends it, the console shows its own page)."""
    app = request.config_dict
    applier = app[APPLIER]
    wait_seconds_max = app[SETTINGS].read_your_writes_wait_seconds_max
    if not projections:
        position, head = await applier.lag()
        return None if position >= head else await _applied(applier, wait_seconds_max, head)
    reads = FreshReads(app[RUNNER], wait_seconds_max)
    # One query in the usual case: the projections' positions come with the log's head, which
    # is all the applier's check needs. When the applier had to catch up, its effects lie past
    # that head, so the projections are asked again.
    positions = await reads.positions(projections)
    head = next(p.head for p in positions if p.partition == applier.partition)
    if applier.position < head:
        stopped = await _applied(applier, wait_seconds_max, head)
        if stopped is not None:
            return stopped
        positions = await reads.positions(projections)
    return await reads.refusal(projections, positions)


async def _applied(
    applier: DeliveryApplier, wait_seconds_max: float, head: int
) -> web.Response | None:
    """None once the applier, behind, has caught up to `head`; else the 503 to send."""
    try:
        async with asyncio.timeout(wait_seconds_max):
            await applier.catch_up(head)
    except ProviderNotConfigured as stopped:
        return problem(503, "Service Unavailable", str(stopped), code="applier_stopped")
    except TimeoutError:
        response = problem(
            503,
            "Service Unavailable",
            f"the delivery applier did not reach the log position this request arrived at"
            f" within {wait_seconds_max:g} s; retry later",
            code="applier_behind",
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return None


class FreshReads:
    def __init__(self, runner: ProjectionRunner, wait_seconds_max: float) -> None:
        self.runner = runner
        self.wait_seconds_max = wait_seconds_max

    async def positions(self, names: Sequence[str]) -> list[ProjectionPosition]:
        await self.runner.ensure_positions()  # a query only the first time
        return await self._positions(names)

    async def refusal(
        self, names: Sequence[str], positions: list[ProjectionPosition]
    ) -> web.Response | None:
        """None once `names` have reached the log's head as it was when `positions` were read;
        else the 503 to send."""
        arrival = {p.partition: p.head for p in positions}
        clock = asyncio.get_running_loop()
        deadline = clock.time() + self.wait_seconds_max
        pause = PAUSE_FIRST_SECONDS
        while behind := [p for p in positions if p.position < arrival[p.partition]]:
            stopped = [p for p in behind if p.failed_position is not None]
            if stopped:
                return _stopped(stopped)
            remaining = deadline - clock.time()
            if remaining <= 0:
                return _behind(behind, arrival, self.wait_seconds_max)
            try:
                async with asyncio.timeout(remaining) as budget:
                    # A failure is recorded on its position row: the next read sees it stopped.
                    with contextlib.suppress(ProjectionFailed):
                        names_behind = sorted({p.name for p in behind})
                        if not await self.runner.catch_up(names_behind, wait=False):
                            # Another holds the rows: let its batch commit, then look again.
                            await asyncio.sleep(pause)
                            pause = min(2 * pause, PAUSE_MAX_SECONDS)
            except TimeoutError:
                if not budget.expired():
                    raise  # the database's own timeout: an outage, the middleware's 503
                return _behind(behind, arrival, self.wait_seconds_max)
            positions = await self._positions(names)
        return None

    async def _positions(self, names: Sequence[str]) -> list[ProjectionPosition]:
        rows = await projection_positions(self.runner.pool, names)
        return [ProjectionPosition(**dict(row)) for row in rows]


def _stopped(stopped: list[ProjectionPosition]) -> web.Response:
    names = ", ".join(sorted({p.name for p in stopped}))
    return problem(
        503,
        "Service Unavailable",
        f"projection {names} stopped on an event it cannot apply; this read would miss"
        " what was recorded since (see /readyz)",
        code="projection_stopped",
        projections=[
            {"name": p.name, "partition": p.partition, "failed_position": p.failed_position}
            for p in stopped
        ],
    )


def _behind(
    behind: list[ProjectionPosition], arrival: dict[int, int], waited: float
) -> web.Response:
    names = ", ".join(sorted({p.name for p in behind}))
    response = problem(
        503,
        "Service Unavailable",
        f"projection {names} did not reach the log position this request arrived at within"
        f" {waited:g} s; retry later",
        code="projection_behind",
        projections=[
            {
                "name": p.name,
                "partition": p.partition,
                "position": p.position,
                "target": arrival[p.partition],
            }
            for p in behind
        ],
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response

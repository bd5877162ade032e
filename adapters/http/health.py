"""`/healthz` (the process answers) and `/readyz` (the database answers and reads are fresh)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from adapters.http.keys import APPLIER, RUNNER, SETTINGS, STORE
from adapters.http.problems import DATABASE_OUTAGES, problem


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers, no projection has stopped on an event, and none lags
    beyond the configured bounds (`readiness_lag_events_max` events, or its oldest event not
    yet projected older than `readiness_lag_seconds_max`): reads would be stale otherwise."""
    settings = request.app[SETTINGS]
    # InternalClientError: asyncpg's word for a connection the server terminated mid-query.
    unreachable: tuple[type[Exception], ...] = (
        *DATABASE_OUTAGES,
        asyncpg.PostgresError,
        asyncpg.InternalClientError,
    )
    try:
        head = await request.app[STORE].head()
        statuses = await request.app[RUNNER].status()
        applier = request.app[APPLIER]
        applier_position, applier_head = await applier.lag()
        applier_lag = await applier.pending(settings.readiness_lag_events_max + 1)
    except unreachable:
        return problem(503, "Service Unavailable", "database not reachable")
    projections = [
        {
            "name": s.name,
            "partition": s.partition,
            "position": s.position,
            "head": s.head,
            "lag_events": s.lag,
            "lag_seconds": round(s.lag_seconds, 3),
            "failed_position": s.failed_position,
            "failure": s.failure,
        }
        for s in statuses
    ]
    lag = {s.name: s.lag for s in statuses}
    # Applied deliveries show in the subjects' streams a moment after their receipt; the
    # applier's lag is bounded like a projection's (in events: it has no failed state, a
    # delivery that breaks a rule is recorded as not applied).
    applier_view = {"position": applier_position, "head": applier_head, "lag_events": applier_lag}
    stopped = sorted({s.name for s in statuses if s.failed_position is not None})
    events, seconds = settings.readiness_lag_events_max, settings.readiness_lag_seconds_max
    lagging = sorted({s.name for s in statuses if s.lags_beyond(events, seconds)})
    if applier_lag > events:
        lagging.append(applier.name)
    if stopped or lagging:
        said = [f"projection {name} stopped on an event it cannot apply" for name in stopped]
        bound = f"{events} events or {seconds:g} s"
        said += [f"{name} lags beyond {bound}" for name in lagging]
        return problem(
            503,
            "Service Unavailable",
            "; ".join(said),
            stopped=stopped,
            lagging=lagging,
            projections=projections,
            projection_lag=lag,
            applier=applier_view,
        )
    return web.json_response(
        {
            "status": "ready",
            "log_position": head.position,
            "projection_lag": lag,
            "projections": projections,
            "applier": applier_view,
        }
    )

"""`GET /metrics`: Prometheus text format, without authentication, like /healthz and /readyz.

It says how busy and how far behind the ledger is, never whose money moved: counts by provider,
route template, outcome and reason, no ids or amounts. It is meant for the internal port a
scraper reaches; a deployment that exposes the port further restricts /metrics at its proxy.

What is counted as it happens is counted by the wrappers and middleware; the projections'
positions and lag (the runner's status) and the open reconciliation items by reason are read from
the database when scraped, so a scrape shows the state at that moment.
"""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from adapters.http.keys import METRICS, RUNNER, STORE
from adapters.http.problems import DATABASE_OUTAGES
from adapters.observability.metrics import LedgerMetrics
from adapters.storage.read_models.readers import open_items_by_reason

log = logging.getLogger(__name__)

_UNREACHABLE: tuple[type[Exception], ...] = (*DATABASE_OUTAGES, asyncpg.PostgresError)


async def serve_metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        await _read_database(request.app, metrics)
    except _UNREACHABLE as outage:
        # The counters still say something while the database is away: serve them.
        log.warning("metrics scrape could not read the database: %r", outage)
        metrics.scrape_database_up.set(0)
    else:
        metrics.scrape_database_up.set(1)
    # 0.0.4 is the text format every Prometheus and prometheus-client's parser read.
    return web.Response(
        body=generate_latest(metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4},
    )


async def _read_database(app: web.Application, metrics: LedgerMetrics) -> None:
    gauges = (
        metrics.projection_position,
        metrics.projection_lag_events,
        metrics.projection_lag_seconds,
        metrics.reconciliation_open_items,
    )
    # Cleared first: a projection or reason gone since the last scrape must not linger.
    for gauge in gauges:
        gauge.clear()
    for status in await app[RUNNER].status():
        labels = (status.name, str(status.partition))
        metrics.projection_position.labels(*labels).set(status.position)
        metrics.projection_lag_events.labels(*labels).set(status.lag)
        metrics.projection_lag_seconds.labels(*labels).set(status.lag_seconds)
    for row in await open_items_by_reason(app[STORE].pool):
        metrics.reconciliation_open_items.labels(row["reason"]).set(row["items"])

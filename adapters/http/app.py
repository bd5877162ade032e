"""The internal HTTP API and the webhook endpoints (aiohttp). `init_app` is the composition root."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from adapters.config import Settings
from adapters.http.audit import add_audit_routes
from adapters.http.auth import SETTINGS
from adapters.http.background import add_background
from adapters.http.finance import add_finance_routes
from adapters.http.keys import (
    ADAPTERS,
    INGESTION,
    METRICS,
    PAYMENTS,
    QUERIES,
    RECOVERY,
    STORE,
    WITHDRAWALS,
)
from adapters.http.metrics import add_metrics
from adapters.http.middleware import access_log, http_metrics, problems, request_ids
from adapters.http.openapi.routes import add_openapi
from adapters.http.problems import DATABASE_OUTAGES, problem, unavailable
from adapters.http.queries import RUNNER, add_query_routes
from adapters.http.subjects import add_subject_routes
from adapters.observability.metered import MeteredEventStore, metered_adapters
from adapters.providers.contract import (
    ProviderAdapter,
)
from adapters.services.ingestion import WebhookIngestion
from adapters.services.payments import PaymentService
from adapters.services.provider_queries import ProviderQueries
from adapters.services.recovery import SubmissionRecovery
from adapters.services.withdrawals import WithdrawalService
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.funds import JournalFundsGuard
from adapters.storage.read_models.runner import ProjectionRunner
from ledger.errors import ConcurrencyConflict

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- middleware
# `request_ids` and `problems` live in adapters/http/middleware.py; request bodies are read by
# adapters/http/requests.py (read_payment_request, read_withdrawal_request).


# ---------------------------------------------------------------- webhooks


async def receive_webhook(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    settings = request.app[SETTINGS]
    if provider not in request.app[ADAPTERS]:
        return problem(404, "Not Found", f"provider {provider!r} is unknown or not configured")
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return problem(413, "Payload Too Large", f"body over {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        return problem(413, "Payload Too Large", f"body over {limit} bytes")
    try:
        result = await request.app[INGESTION].ingest(
            provider, body, dict(request.headers), request.match_info.get("token")
        )
    except ConcurrencyConflict:
        # More concurrent writers on one payment than retries: nothing was recorded.
        return unavailable("too many concurrent deliveries for one subject; retry later")
    request.app[METRICS].deliveries.labels(provider, result.outcome).inc()
    if result.status == 200:
        return web.json_response({"received": True, "outcome": result.outcome})
    title = {400: "Bad Request", 401: "Unauthorized"}.get(result.status, "Error")
    return problem(result.status, title, result.detail)


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
    stopped = sorted({s.name for s in statuses if s.failed_position is not None})
    events, seconds = settings.readiness_lag_events_max, settings.readiness_lag_seconds_max
    lagging = sorted({s.name for s in statuses if s.lags_beyond(events, seconds)})
    if stopped or lagging:
        said = [f"projection {name} stopped on an event it cannot apply" for name in stopped]
        bound = f"{events} events or {seconds:g} s"
        said += [f"projection {name} lags beyond {bound}" for name in lagging]
        return problem(
            503,
            "Service Unavailable",
            "; ".join(said),
            stopped=stopped,
            lagging=lagging,
            projections=projections,
            projection_lag=lag,
        )
    return web.json_response(
        {
            "status": "ready",
            "log_position": head.position,
            "projection_lag": lag,
            "projections": projections,
        }
    )


def init_app(
    settings: Settings,
    store: PostgresEventStore,
    adapters: Mapping[str, ProviderAdapter],
    *,
    clock: Callable[[], datetime] | None = None,
) -> web.Application:
    """`clock` is the ledger's own time (expiry, lateness); tests pass one they can move."""
    app = web.Application(
        middlewares=[request_ids, access_log, http_metrics, problems],
        client_max_size=settings.max_body_bytes + 1,
    )
    metrics = add_metrics(app)  # /metrics; the store and provider clients report to it
    store, adapters = MeteredEventStore(store, metrics), metered_adapters(adapters, metrics)
    now = clock or (lambda: datetime.now(UTC))
    ingestion = WebhookIngestion(store, adapters, clock=now)
    app[SETTINGS] = settings
    app[STORE] = store
    app[ADAPTERS] = dict(adapters)
    app[INGESTION] = ingestion
    runner = ProjectionRunner(store.pool, all_projections())
    app[RUNNER] = runner
    payments = PaymentService(store, adapters, settings, ingestion, clock=now)
    app[PAYMENTS] = payments
    withdrawals = WithdrawalService(
        store, adapters, settings, ingestion, funds=JournalFundsGuard(store.pool, runner)
    )
    app[WITHDRAWALS] = withdrawals
    app[RECOVERY] = SubmissionRecovery(adapters, payments, withdrawals)
    queries = ProviderQueries(store, adapters, clock=now)
    ingestion.on_unverified = queries.wake
    app[QUERIES] = queries
    add_query_routes(app)
    add_finance_routes(app, payments)
    add_audit_routes(app, settings, store)  # export, head, checkpoints, public key
    add_background(app, settings, store, payments, dict(adapters), now)

    async def close_clients(_: web.Application) -> None:
        for adapter in adapters.values():
            await adapter.client.close()

    app.on_cleanup.append(close_clients)
    app.router.add_post("/v1/webhooks/{provider}", receive_webhook)
    app.router.add_post("/v1/webhooks/{provider}/{token}", receive_webhook)
    add_subject_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_openapi(app)  # /v1/openapi.json and the page at /v1/docs/
    return app


__all__ = ["init_app"]

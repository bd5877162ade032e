"""The internal HTTP API and the webhook endpoints (aiohttp). `init_app` is the composition root:
the one place that builds a running ledger (STYLE.md, "One composition root").

Nothing is built at import time. `init_app` builds what needs no database (settings, metrics,
the OpenAPI document, the routes); the database and everything that reads or writes through it
(the pool, the store, the provider adapters, the projection runner, the services, the background
loops) are opened when the app starts and closed when it stops, in its cleanup contexts, in
that order and the reverse.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta

from aiohttp import web

from adapters.audit.signing import Signer
from adapters.config import Settings
from adapters.http.audit import build_checkpointer, build_signer
from adapters.http.background import background
from adapters.http.keys import (
    ADAPTERS,
    APPLIER,
    CHECKPOINTER,
    METRICS,
    OPENAPI_DOCUMENT,
    PAYMENTS,
    POLLER,
    QUERIES,
    RECEIPT,
    RECOVERY,
    RUNNER,
    SETTINGS,
    STORE,
    SWEEPER,
    WITHDRAWALS,
)
from adapters.http.middleware import access_log, http_metrics, problems, request_ids
from adapters.http.openapi.document import openapi_document
from adapters.http.routes import add_routes
from adapters.ingestion.applier import DeliveryApplier
from adapters.ingestion.receipt import DeliveryReceipt
from adapters.observability.metered import MeteredEventStore, metered_adapters
from adapters.observability.metrics import LedgerMetrics
from adapters.providers.contract import ProviderAdapter
from adapters.providers.registry import build_adapters
from adapters.services.balances import BalancePoller
from adapters.services.payments import PaymentService
from adapters.services.provider_queries import ProviderQueries
from adapters.services.recovery import SubmissionRecovery
from adapters.services.sweeper import ClockSweeper
from adapters.services.withdrawals import WithdrawalService
from adapters.storage.database import open_pool
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.funds import JournalFundsGuard
from adapters.storage.read_models.runner import ProjectionRunner

log = logging.getLogger(__name__)


def init_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] | None = None,
    store: PostgresEventStore | None = None,
    adapters: Mapping[str, ProviderAdapter] | None = None,
) -> web.Application:
    """The ledger as it runs. Without `store`, the app opens the configured (or embedded)
    database, migrated, at start-up and closes it at cleanup (`ledger serve`); tests and benches
    that hold a store pass it, and it stays theirs to close. Without `adapters`, they are built
    from `settings.providers`. The app closes its adapters' clients at cleanup, given or built.
    `clock` is the ledger's own time (expiry, lateness); tests pass one they can move."""
    app = web.Application(
        middlewares=[request_ids, access_log, http_metrics, problems],
        client_max_size=settings.max_body_bytes + 1,
    )
    app[SETTINGS] = settings
    app[METRICS] = LedgerMetrics()  # served at /metrics; the store and provider clients report
    app[OPENAPI_DOCUMENT] = openapi_document()
    signer = build_signer(settings)  # a configured key that cannot be read stops start-up
    now = clock or (lambda: datetime.now(UTC))

    async def database(app: web.Application) -> AsyncIterator[None]:
        if store is not None:
            app[STORE] = MeteredEventStore(store, app[METRICS])
            yield
            return
        # The configured (or embedded) database, migrated, as `ledger serve` always opened it.
        async with open_pool(settings) as pool:
            opened = PostgresEventStore(pool)
            app[STORE] = MeteredEventStore(opened, app[METRICS])
            try:
                yield
            finally:
                await opened.close()

    async def providers(app: web.Application) -> AsyncIterator[None]:
        given = adapters if adapters is not None else build_adapters(settings.providers)
        app[ADAPTERS] = dict(metered_adapters(given, app[METRICS]))
        try:
            yield
        finally:
            for adapter in given.values():
                await adapter.client.close()

    async def services(app: web.Application) -> AsyncIterator[None]:
        compose_services(app, settings, signer, now)
        yield

    # Entered in this order at start-up, left in the reverse at cleanup: the loops stop first,
    # the database closes last.
    app.cleanup_ctx.extend([database, providers, services, background])
    add_routes(app)
    return app


def compose_services(
    app: web.Application, settings: Settings, signer: Signer, now: Callable[[], datetime]
) -> None:
    """The runner, the services and the background work, over the app's store and adapters."""
    store, adapters = app[STORE], app[ADAPTERS]
    runner = ProjectionRunner(store.pool, all_projections())
    app[RUNNER] = runner
    queries = ProviderQueries(store, adapters, clock=now)
    app[QUERIES] = queries
    metrics = app[METRICS]
    applier = DeliveryApplier(
        store, adapters, on_unverified=queries.wake, on_pass=metrics.observe_applied
    )
    app[APPLIER] = applier
    app[RECEIPT] = DeliveryReceipt(store, adapters, clock=now, on_received=applier.wake)
    payments = PaymentService(store, adapters, settings, clock=now)
    app[PAYMENTS] = payments
    withdrawals = WithdrawalService(
        store, adapters, settings, funds=JournalFundsGuard(store.pool, runner, applier.catch_up)
    )
    app[WITHDRAWALS] = withdrawals
    app[RECOVERY] = SubmissionRecovery(adapters, payments, withdrawals)
    stuck_after = timedelta(minutes=settings.withdrawal_stuck_after_minutes)
    app[SWEEPER] = ClockSweeper(store, payments, now, stuck_after)
    app[POLLER] = BalancePoller(store, adapters, now)
    app[CHECKPOINTER] = build_checkpointer(store, signer)


__all__ = ["init_app"]

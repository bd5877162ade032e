"""Every route of the app, in one list. The handlers live in their resource modules."""

from __future__ import annotations

from aiohttp import web

from adapters.http import audit, finance, health, metrics, queries, subjects, webhooks
from adapters.http.console import console_app, to_console
from adapters.http.freshness import JOURNAL, RECONCILIATION, SUBJECTS, fresh
from adapters.http.openapi import routes as openapi


def add_routes(app: web.Application) -> None:
    router = app.router
    # Webhooks: a provider's deliveries (the token form for providers that sign nothing).
    router.add_post("/v1/webhooks/{provider}", webhooks.receive_webhook)
    router.add_post("/v1/webhooks/{provider}/{token}", webhooks.receive_webhook)
    # Payments and withdrawals: create (intent first, idempotent), read, their events.
    router.add_post("/v1/payments", subjects.create_payment)
    # Reads of one subject wait for the applier (deliveries answered before them are applied).
    router.add_get("/v1/payments/{payment_id}", fresh(subjects.get_payment, "payments:read"))
    router.add_get(
        "/v1/payments/{payment_id}/events", fresh(subjects.subject_events, "payments:read")
    )
    router.add_post("/v1/withdrawals", subjects.create_withdrawal)
    router.add_get(
        "/v1/withdrawals/{withdrawal_id}", fresh(subjects.get_withdrawal, "withdrawals:read")
    )
    router.add_get(
        "/v1/withdrawals/{withdrawal_id}/events",
        fresh(subjects.subject_events, "withdrawals:read"),
    )
    # Lists and finance's reads. Reading your writes (API.md): each waits for the projections
    # it reads to reach the log's head as it was when the request arrived (freshness.py).
    router.add_get("/v1/payments", fresh(queries.list_payments, "payments:read", SUBJECTS))
    router.add_get("/v1/withdrawals", fresh(queries.list_withdrawals, "withdrawals:read", SUBJECTS))
    router.add_get("/v1/balances", fresh(queries.balances, "finance:read", JOURNAL))
    router.add_get("/v1/journal", fresh(queries.journal, "finance:read", JOURNAL))
    router.add_get(
        "/v1/reconciliation/items",
        fresh(finance.reconciliation_items, "finance:read", RECONCILIATION),
    )
    router.add_get(
        "/v1/reconciliation/summary",
        fresh(finance.reconciliation_summary, "finance:read", RECONCILIATION),
    )
    router.add_get("/v1/projections", queries.projections_status)
    # Finance's acts.
    router.add_post("/v1/payments/{payment_id}/settle", finance.settle_payment)
    # Audit: the streamed export, the head, signed checkpoints, the public key.
    router.add_get("/v1/audit/events", audit.export_events)
    router.add_get("/v1/audit/head", audit.audit_head)
    router.add_post("/v1/audit/checkpoints", audit.make_checkpoint)
    router.add_get("/v1/audit/checkpoints", audit.list_checkpoints)
    router.add_get("/v1/audit/public-key", audit.public_key)
    # The API's description and its browsable page (no token).
    router.add_get("/v1/openapi.json", openapi.serve_document)
    router.add_get("/v1/docs", openapi.to_page)
    router.add_get("/v1/docs/", openapi.serve_page)
    router.add_static("/v1/docs/static/", openapi.swagger_ui_static())
    # Operations (no token): Prometheus metrics, liveness, readiness.
    router.add_get("/metrics", metrics.serve_metrics)
    router.add_get("/healthz", health.healthz)
    router.add_get("/readyz", health.readyz)
    # The finance console: read-only HTML pages signed in with a finance:read token.
    router.add_get("/console", to_console)
    app.add_subapp("/console/", console_app())

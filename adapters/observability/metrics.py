"""The ledger's Prometheus metrics, in a registry of their own per app.

One registry per app (never prometheus-client's global one): tests run several apps in one
process, and each must count only its own traffic. What is counted as it happens lives here;
what is read from the database at scrape time is in adapters/observability/scrape.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.providers.contract import ProviderExchange

if TYPE_CHECKING:
    from adapters.ingestion.applier import AppliedPass

# Appends carry one command's events: a handful, rarely more than a batch of deliveries.
_BATCH_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)
_DATABASE_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Provider calls cross the internet and are retried with backoff: seconds, not milliseconds.
_PROVIDER_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LedgerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.deliveries = Counter(
            "ledger_webhook_deliveries",
            "Webhook deliveries answered, by provider and receipt (received, duplicate, "
            "rejected, invalid).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.deliveries_applied = Counter(
            "ledger_deliveries_applied",
            "Facts of received deliveries applied by the applier, by outcome (accepted, "
            "unverified, duplicate, unmatched, not_applied).",
            ["outcome"],
            registry=registry,
        )
        self.applier_lag_seconds = Histogram(
            "ledger_applier_lag_seconds",
            "From a delivery's durable receipt to the commit of its effects, in seconds.",
            buckets=_DATABASE_SECONDS,
            registry=registry,
        )
        self.applier_position = Gauge(
            "ledger_applier_position",
            "The log position the applier has applied up to.",
            registry=registry,
        )
        self.append_seconds = Histogram(
            "ledger_event_store_append_seconds",
            "Time to append one batch of events to the log, in seconds.",
            buckets=_DATABASE_SECONDS,
            registry=registry,
        )
        self.append_batch_events = Histogram(
            "ledger_event_store_append_batch_events",
            "Events per append.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.http_requests = Counter(
            "ledger_http_requests",
            "HTTP requests served, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_seconds = Histogram(
            "ledger_http_request_seconds",
            "Time to answer an HTTP request, by method and route template, in seconds.",
            ["method", "route"],
            registry=registry,
        )
        self.provider_calls = Counter(
            "ledger_provider_calls",
            "Outbound provider HTTP attempts, by provider, operation and outcome "
            "(2xx, 4xx, 5xx, or error when no answer came).",
            ["provider", "operation", "outcome"],
            registry=registry,
        )
        self.provider_call_seconds = Histogram(
            "ledger_provider_call_seconds",
            "Time of one outbound provider HTTP attempt, in seconds.",
            ["provider", "operation"],
            buckets=_PROVIDER_SECONDS,
            registry=registry,
        )
        self.projection_position = Gauge(
            "ledger_projection_position",
            "The log position a projection has applied, read at scrape time.",
            ["projection", "partition"],
            registry=registry,
        )
        self.projection_lag_events = Gauge(
            "ledger_projection_lag_events",
            "Events in the log not yet applied by a projection, read at scrape time.",
            ["projection", "partition"],
            registry=registry,
        )
        self.projection_lag_seconds = Gauge(
            "ledger_projection_lag_seconds",
            "Age of the oldest event a projection has not applied yet (0: none), in seconds.",
            ["projection", "partition"],
            registry=registry,
        )
        self.reconciliation_open_items = Gauge(
            "ledger_reconciliation_open_items",
            "Open reconciliation items by reason, read at scrape time.",
            ["reason"],
            registry=registry,
        )
        self.scrape_database_up = Gauge(
            "ledger_scrape_database_up",
            "1 when the scrape-time database reads succeeded; the gauges read from the "
            "database are absent when it is 0.",
            registry=registry,
        )

    def observe_applied(self, applied: AppliedPass) -> None:
        self.applier_position.set(applied.position)
        for outcome in applied.outcomes:
            self.deliveries_applied.labels(outcome.value).inc()
        for seconds in applied.lag_seconds:
            self.applier_lag_seconds.observe(seconds)

    def provider_exchange(self, exchange: ProviderExchange) -> None:
        outcome = "error" if exchange.status is None else f"{exchange.status // 100}xx"
        labels = (exchange.provider, exchange.operation)
        self.provider_calls.labels(*labels, outcome).inc()
        self.provider_call_seconds.labels(*labels).observe(exchange.duration_ms / 1000)

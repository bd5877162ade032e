"""Every operation of the API as the OpenAPI document states it: path, scope, the models read
(body, query) and answered (success and the problems it may answer).

The statuses are the ones API.md promises: 400 a request that is not one, 422 one that breaks a
rule, 401/403 token and scope, 404 unknown ids, 409 idempotency and conflicts, 502/504 a
provider that refused or did not answer a create, 503 the database (or projections) unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from adapters.http.finance import ReconciliationItemsRequest
from adapters.http.openapi import views
from adapters.http.query_params import (
    BalancesQuery,
    JournalQuery,
    PaymentListQuery,
    ReconciliationFilters,
    WithdrawalListQuery,
)
from adapters.http.requests import PaymentRequest, WithdrawalRequest

# Every operation behind a bearer token may answer these.
AUTHENTICATED = (401, 403, 503)


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    status: int
    answer: type[BaseModel] | None  # None: not JSON (documented by `media_type`)
    scope: str | None = None  # None: no bearer token (webhooks, probes)
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    problems: tuple[int, ...] = ()
    media_types: tuple[str, ...] = ("application/json",)
    idempotent_create: bool = False


def _read(path: str, summary: str, tag: str, answer: type[BaseModel], scope: str) -> Operation:
    """A GET of one subject or its events: 404 for an unknown id."""
    return Operation("get", path, summary, tag, 200, answer, scope, problems=(*AUTHENTICATED, 404))


def _list(
    path: str, summary: str, tag: str, answer: type[BaseModel], scope: str, query: type[BaseModel]
) -> Operation:
    problems = (*AUTHENTICATED, 400, 422)
    return Operation("get", path, summary, tag, 200, answer, scope, query=query, problems=problems)


def _create(path: str, summary: str, tag: str, answer: type[BaseModel], scope: str,
            body: type[BaseModel]) -> Operation:
    problems = (*AUTHENTICATED, 400, 409, 413, 422, 502, 504)
    return Operation(
        "post", path, summary, tag, 201, answer, scope, body, problems=problems,
        idempotent_create=True,
    )


OPERATIONS: tuple[Operation, ...] = (
    _create("/v1/payments", "Create a payment at a provider", "payments", views.PaymentView,
            "payments:write", PaymentRequest),
    _list("/v1/payments", "List payments, newest first", "payments", views.PaymentPage,
          "payments:read", PaymentListQuery),
    _read("/v1/payments/{payment_id}", "A payment", "payments", views.PaymentView,
          "payments:read"),
    _read("/v1/payments/{payment_id}/events", "A payment's events, oldest first", "payments",
          views.EventList, "payments:read"),
    Operation(
        "post", "/v1/payments/{payment_id}/settle", "Settle a payment", "finance", 200,
        views.PaymentView, "finance:write", problems=(*AUTHENTICATED, 404, 409, 422),
    ),
    _create("/v1/withdrawals", "Request a withdrawal at a provider", "withdrawals",
            views.WithdrawalView, "withdrawals:write", WithdrawalRequest),
    _list("/v1/withdrawals", "List withdrawals, newest first", "withdrawals",
          views.WithdrawalPage, "withdrawals:read", WithdrawalListQuery),
    _read("/v1/withdrawals/{withdrawal_id}", "A withdrawal", "withdrawals",
          views.WithdrawalView, "withdrawals:read"),
    _read("/v1/withdrawals/{withdrawal_id}/events", "A withdrawal's events, oldest first",
          "withdrawals", views.EventList, "withdrawals:read"),
    _list("/v1/balances", "Balances by account and currency", "finance", views.BalanceList,
          "finance:read", BalancesQuery),
    _list("/v1/journal", "Balanced journal entries with their postings", "finance",
          views.JournalPage, "finance:read", JournalQuery),
    Operation(
        "get", "/v1/reconciliation/items", "Reconciliation items (JSON, or CSV per RFC 4180)",
        "finance", 200, views.ReconciliationPage, "finance:read",
        query=ReconciliationItemsRequest, problems=(*AUTHENTICATED, 400, 422),
        media_types=("application/json", "text/csv"),
    ),
    _list("/v1/reconciliation/summary", "Counts and amounts per reason", "finance",
          views.ReconciliationSummary, "finance:read", ReconciliationFilters),
    Operation(
        "get", "/v1/projections", "Each projection's position and lag", "operations", 200,
        views.ProjectionList, "finance:read", problems=AUTHENTICATED,
    ),
    Operation(
        "post", "/v1/webhooks/{provider}", "A provider's webhook delivery", "webhooks", 200,
        views.DeliveryReceived, problems=(400, 401, 404, 413, 503),
    ),
    Operation(
        "post", "/v1/webhooks/{provider}/{token}",
        "A delivery of a provider that signs nothing, with the token of its callback URL",
        "webhooks", 200, views.DeliveryReceived, problems=(400, 401, 404, 413, 503),
    ),
    Operation("get", "/healthz", "Liveness", "operations", 200, views.Health),
    Operation(
        "get", "/readyz", "Readiness: database reachable, projections caught up", "operations",
        200, views.Readiness, problems=(503,),
    ),
    Operation(
        "get", "/metrics", "Prometheus metrics (text format 0.0.4)", "operations", 200, None,
        media_types=("text/plain",),
    ),
    Operation(
        "get", "/v1/audit/events", "The event log, streamed (JSON lines or CSV per RFC 4180)",
        "audit", 200, None, "audit:export", query=views.AuditExportQuery,
        problems=(*AUTHENTICATED, 400, 422), media_types=("application/x-ndjson", "text/csv"),
    ),
    Operation(
        "get", "/v1/audit/head", "Position and hash of the newest event", "audit", 200,
        views.AuditHead, "audit:export", problems=AUTHENTICATED,
    ),
    Operation(
        "post", "/v1/audit/checkpoints", "Sign a checkpoint of the head now", "audit", 201,
        views.CheckpointView, "admin", problems=AUTHENTICATED,
    ),
    Operation(
        "get", "/v1/audit/checkpoints", "Signed checkpoints, oldest first", "audit", 200,
        views.CheckpointPage, "audit:export", query=views.CheckpointListQuery,
        problems=(*AUTHENTICATED, 400),
    ),
    Operation(
        "get", "/v1/audit/public-key", "The checkpoints' Ed25519 public key and its id",
        "audit", 200, views.PublicKeyView, "audit:export", problems=AUTHENTICATED,
    ),
)

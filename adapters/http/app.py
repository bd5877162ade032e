"""The internal HTTP API and the webhook endpoints (aiohttp). `init_app` is the composition root."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.config import Settings
from adapters.http.auth import SETTINGS, authorize
from adapters.http.background import add_background
from adapters.http.finance import add_finance_routes
from adapters.http.problems import DATABASE_OUTAGES, problem, unavailable
from adapters.http.queries import RUNNER, add_query_routes
from adapters.providers.contract import (
    OperationNotSupported,
    ProviderAdapter,
    ProviderCallFailed,
)
from adapters.services.ingestion import WebhookIngestion
from adapters.services.payments import OrderAlreadyExists, PaymentService, UnknownProvider
from adapters.storage.postgres_store import PostgresEventStore
from adapters.storage.read_models import all_projections
from adapters.storage.read_models.funds import JournalFundsGuard
from adapters.storage.read_models.runner import ProjectionRunner
from adapters.storage.repository import AggregateRepository
from ledger.errors import ConcurrencyConflict, LedgerError
from ledger.money import loads_exact, to_decimal
from ledger.payment import Payment
from ledger.ports import Claim, ClaimTaken
from ledger.withdrawal import Withdrawal
from projections.views import event_view, payment_view, withdrawal_view

log = logging.getLogger(__name__)

STORE = web.AppKey("store", PostgresEventStore)
INGESTION = web.AppKey("ingestion", WebhookIngestion)
PAYMENTS = web.AppKey("payments", PaymentService)
ADAPTERS = web.AppKey("adapters", dict)
REQUEST_ID = web.RequestKey("request_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("amount", mode="before", check_fields=False)
    @classmethod
    def _exact_amount(cls, value: Any) -> Decimal:
        return to_decimal(value)


class PaymentRequest(_Request):
    provider: str
    order_id: str = Field(min_length=1, max_length=128)
    amount: Decimal
    currency: str
    pay_currency: str | None = None
    expires_in_minutes: int | None = Field(default=None, gt=0, le=7 * 24 * 60)
    customer_id: str | None = None
    metadata: dict[str, Any] | None = None


class WithdrawalRequest(_Request):
    provider: str
    request_id: str = Field(min_length=1, max_length=128)
    amount: Decimal
    currency: str
    address: str = Field(min_length=1)
    pay_currency: str | None = None
    customer_id: str | None = None


# ---------------------------------------------------------------- middleware


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    return response


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as RFC 9457 problem+json; a database outage is a 503."""
    try:
        return await handler(request)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        return problem(http_error.status, http_error.reason, http_error.text or "")
    except DATABASE_OUTAGES as outage:
        log.warning("database unavailable: %r", outage)
        return unavailable("the database is unavailable; retry later")
    except ConcurrencyConflict as conflict:
        # Handlers retry conflicts themselves; one that reaches here outlasted the retries.
        return problem(409, "Conflict", str(conflict), code=conflict.code)


async def _json_body(request: web.Request, model: type[_Request]) -> tuple[Any, bytes]:
    raw = await request.read()
    try:
        parsed = loads_exact(raw)
    except ValueError as error:
        raise web.HTTPBadRequest(reason="Bad Request", text=f"body is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise web.HTTPBadRequest(reason="Bad Request", text="body must be a JSON object")
    try:
        return model.model_validate(parsed), raw
    except ValidationError as error:
        missing = any(
            e["type"] == "missing" or e["type"] == "extra_forbidden" for e in error.errors()
        )
        status = web.HTTPBadRequest if missing else web.HTTPUnprocessableEntity
        raise status(reason=status.__name__.removeprefix("HTTP"), text=str(error)) from None


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
    if result.status == 200:
        return web.json_response({"received": True, "outcome": result.outcome})
    title = {400: "Bad Request", 401: "Unauthorized"}.get(result.status, "Error")
    return problem(result.status, title, result.detail)


# ---------------------------------------------------------------- payments and withdrawals


async def _idempotent(
    request: web.Request, caller: str, raw: bytes
) -> tuple[Claim | None, str | None]:
    """Returns (claim to take, existing resource id). Same key with another body is a 409."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        return None, None
    fingerprint = hashlib.sha256(raw).hexdigest()
    claim_key = f"{caller}:{request.path}:{key}"
    existing = await request.app[STORE].find_claim("idempotency", claim_key)
    if existing is None:
        return Claim("idempotency", claim_key, "", fingerprint), None
    if existing.value != fingerprint:
        raise web.HTTPConflict(reason="Conflict", text="Idempotency-Key reused with another body")
    return None, existing.stream_id


async def _take_idempotency_claim(request: web.Request, claim: Claim | None, stream: str) -> None:
    if claim is None:
        return
    # A concurrent retry with the same key may take it first; both answer the same order.
    with contextlib.suppress(ClaimTaken):
        await request.app[STORE].append(
            [],
            expected_versions={},
            claims=[Claim(claim.namespace, claim.key, stream, claim.value)],
        )


async def _create_subject(
    request: web.Request,
    scope: str,
    model: type[_Request],
    kind: str,
    create: Callable[[Any], Awaitable[Any]],
    load: Callable[[str], Awaitable[Any]],
    view: Callable[[Any], dict[str, Any]],
) -> web.Response:
    """POST of a payment or withdrawal: idempotency, creation at the provider, error mapping."""
    caller = authorize(request, scope)
    body, raw = await _json_body(request, model)
    claim, existing_id = await _idempotent(request, caller, raw)
    if existing_id:
        return web.json_response(view(await load(existing_id)), status=201)
    try:
        subject = await create(body)
    except UnknownProvider:
        return problem(422, "Unprocessable Entity", f"provider {body.provider!r} is not configured")
    except OrderAlreadyExists as exists:
        return problem(
            409, "Conflict", f"{kind} already exists", **{f"{kind}_id": exists.existing_stream}
        )
    except (ProviderCallFailed, OperationNotSupported) as failure:
        return _provider_problem(failure)
    except LedgerError as broken:
        return problem(422, "Unprocessable Entity", str(broken), code=broken.code)
    await _take_idempotency_claim(request, claim, str(subject.id))
    return web.json_response(view(subject), status=201)


def _provider_problem(failure: ProviderCallFailed | OperationNotSupported) -> web.Response:
    """A provider that gave no usable answer is a 502; one that cannot take the request, 422."""
    if isinstance(failure, OperationNotSupported):
        return problem(422, "Unprocessable Entity", str(failure), code="operation_not_supported")
    return problem(502, "Bad Gateway", str(failure))


async def create_payment(request: web.Request) -> web.Response:
    service = request.app[PAYMENTS]
    return await _create_subject(
        request,
        "payments:write",
        PaymentRequest,
        "payment",
        lambda body: service.create_payment(**body.model_dump()),
        service.load_payment,
        payment_view,
    )


async def get_payment(request: web.Request) -> web.Response:
    authorize(request, "payments:read")
    payment = await request.app[PAYMENTS].load_payment(_id(request, "payment_id"))
    if payment is None:
        return problem(404, "Not Found", "no such payment")
    return web.json_response(payment_view(payment))


async def subject_events(request: web.Request) -> web.Response:
    kind = "payment" if "payment_id" in request.match_info else "withdrawal"
    authorize(request, f"{kind}s:read")
    subject_id = _id(request, f"{kind}_id")
    aggregate_type = Payment if kind == "payment" else Withdrawal
    if await AggregateRepository(request.app[STORE]).load(aggregate_type, subject_id) is None:
        return problem(404, "Not Found", f"no such {kind}")
    events = await request.app[STORE].read_stream(subject_id)
    return web.json_response({"items": [event_view(e) for e in events]})


async def create_withdrawal(request: web.Request) -> web.Response:
    service = request.app[PAYMENTS]
    repository = AggregateRepository(request.app[STORE])
    return await _create_subject(
        request,
        "withdrawals:write",
        WithdrawalRequest,
        "withdrawal",
        lambda body: service.create_withdrawal(**body.model_dump()),
        lambda withdrawal_id: repository.load(Withdrawal, withdrawal_id),
        withdrawal_view,
    )


async def get_withdrawal(request: web.Request) -> web.Response:
    authorize(request, "withdrawals:read")
    repository = AggregateRepository(request.app[STORE])
    withdrawal = await repository.load(Withdrawal, _id(request, "withdrawal_id"))
    if withdrawal is None:
        return problem(404, "Not Found", "no such withdrawal")
    return web.json_response(withdrawal_view(withdrawal))


def _id(request: web.Request, name: str) -> str:
    try:
        return str(uuid.UUID(request.match_info[name]))
    except ValueError:
        raise web.HTTPNotFound(reason="Not Found", text=f"no such {name}") from None


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and no projection has stopped on an event."""
    try:
        head = await request.app[STORE].head()
        projections = await request.app[RUNNER].status()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return problem(503, "Service Unavailable", "database not reachable")
    lag = {p.name: p.lag for p in projections}
    failed = {p.name: p.failure for p in projections if p.failure}
    if failed:
        return problem(503, "Service Unavailable", "a projection stopped", failed=failed, lag=lag)
    return web.json_response(
        {"status": "ready", "log_position": head.position, "projection_lag": lag}
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
        middlewares=[request_ids, problems], client_max_size=settings.max_body_bytes + 1
    )
    now = clock or (lambda: datetime.now(UTC))
    ingestion = WebhookIngestion(store, adapters, clock=now)
    app[SETTINGS] = settings
    app[STORE] = store
    app[ADAPTERS] = dict(adapters)
    app[INGESTION] = ingestion
    runner = ProjectionRunner(store.pool, all_projections())
    app[RUNNER] = runner
    payments = PaymentService(
        store, adapters, settings, ingestion, clock=now, funds=JournalFundsGuard(store.pool, runner)
    )
    app[PAYMENTS] = payments
    add_query_routes(app)
    add_finance_routes(app, payments)
    add_background(app, settings, store, payments, dict(adapters), now)

    async def close_clients(_: web.Application) -> None:
        for adapter in adapters.values():
            await adapter.client.close()

    app.on_cleanup.append(close_clients)
    app.router.add_post("/v1/webhooks/{provider}", receive_webhook)
    app.router.add_post("/v1/webhooks/{provider}/{token}", receive_webhook)
    app.router.add_post("/v1/payments", create_payment)
    app.router.add_get("/v1/payments/{payment_id}", get_payment)
    app.router.add_get("/v1/payments/{payment_id}/events", subject_events)
    app.router.add_post("/v1/withdrawals", create_withdrawal)
    app.router.add_get("/v1/withdrawals/{withdrawal_id}", get_withdrawal)
    app.router.add_get("/v1/withdrawals/{withdrawal_id}/events", subject_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


__all__ = ["init_app"]

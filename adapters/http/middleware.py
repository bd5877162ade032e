"""Request ids and problem+json for every failure (API.md: "every error, 5xx included, is
problem+json with a request id").

`request_ids` gives each request an id (the caller's X-Request-Id when it is a sane token, else a
new one), binds it to every log line written while the request is served (structlog
contextvars) and returns it in the X-Request-Id header. `access_log` writes one line per request
and `http_metrics` counts and times it, both by route template: the path itself can carry a
webhook token (/v1/webhooks/{provider}/{token}) and has unbounded variety. `problems` turns
whatever a handler raises into RFC 9457 problem+json, and stamps the request id into every
problem body, whether raised or returned by a handler: a caller quoting the id lets an operator
find the logged traceback.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from adapters.http.keys import METRICS, REQUEST_ID
from adapters.http.problems import (
    DATABASE_OUTAGES,
    RETRY_AFTER_SECONDS,
    ProblemError,
    problem,
    unavailable,
)
from adapters.http.rules import shown
from adapters.observability.logs import ACCESS_LOGGER
from ledger.errors import ConcurrencyConflict

log = logging.getLogger(__name__)
access = logging.getLogger(ACCESS_LOGGER)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A caller's id is echoed in a header and in bodies: only a short token of safe characters.
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PROBLEM_JSON = "application/problem+json"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _CALLER_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    # Bound for this request only: a keep-alive connection serves its next request in the same
    # task, which must not inherit this id.
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
        except web.HTTPException as passed_on:  # a redirect `problems` let through
            passed_on.headers["X-Request-Id"] = request_id
            raise
    response.headers["X-Request-Id"] = request_id
    return response


def _route(request: web.Request) -> str:
    """The route template (`/v1/payments/{payment_id}`), never the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request (inside `request_ids`, so the line carries the request id; outside
    `problems`, so it sees the status the caller got)."""
    started = time.perf_counter()
    status = 500  # what the server answers when the handler fails past `problems`
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as passed_on:  # a redirect `problems` let through
        status = passed_on.status
        raise
    finally:
        access.info(
            "request",
            extra={
                "method": request.method,
                "route": _route(request),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )
    return response


@web.middleware
async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app.get(METRICS)
    if metrics is None:
        return await handler(request)
    started = time.perf_counter()
    status = 500  # what the server answers when the handler fails past `problems`
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as passed_on:  # a redirect `problems` let through
        status = passed_on.status
        raise
    finally:
        route = _route(request)
        # Any token is a method to HTTP: a caller must not be able to mint label values.
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.http_requests.labels(method, route, str(status)).inc()
        metrics.http_seconds.labels(method, route).observe(time.perf_counter() - started)
    return response


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as problem+json: a refused request as its rule says, a database
    outage as 503, a conflict that outlasted its retries as 409, anything unexpected as 500
    (logged with its traceback, never described to the caller)."""
    try:
        response = await handler(request)
    except ProblemError as refused:
        response = refused.response()
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        response = _http_problem(request, http_error)
    except DATABASE_OUTAGES as outage:
        log.warning("database unavailable: %r", outage)
        response = unavailable("the database is unavailable; retry later")
    except ConcurrencyConflict as conflict:
        # Handlers retry conflicts themselves; one that reaches here outlasted the retries.
        response = problem(409, "Conflict", str(conflict), code="concurrency-conflict")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    except Exception:
        log.exception(
            "unexpected failure of %s %s (request %s)",
            request.method,
            request.path,
            request.get(REQUEST_ID),
        )
        detail = "the ledger failed unexpectedly; quote the request_id when reporting it"
        response = problem(500, "Internal Server Error", detail, code="internal-error")
    return _with_request_id(response, request.get(REQUEST_ID))


def _http_problem(request: web.Request, http_error: web.HTTPException) -> web.Response:
    """aiohttp's own 4xx/5xx (no route, method not allowed, body too large) and the ones
    handlers raise (401, 403, 404), as problems; aiohttp's bare "404: Not Found" text becomes
    a sentence."""
    detail = http_error.text or ""
    if detail == f"{http_error.status}: {http_error.reason}":
        detail = {
            404: f"there is nothing at {shown(request.path)}",
            405: f"{request.method} is not allowed at {shown(request.path)}",
        }.get(http_error.status, http_error.reason)
    response = problem(http_error.status, http_error.reason, detail)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in http_error.headers:
            response.headers[header] = http_error.headers[header]
    return response


def _with_request_id(response: web.StreamResponse, request_id: str | None) -> web.StreamResponse:
    if request_id is None or not isinstance(response, web.Response):
        return response
    if response.content_type != _PROBLEM_JSON or not isinstance(response.body, bytes):
        return response
    try:
        document = json.loads(response.body)
    except ValueError:
        return response
    if isinstance(document, dict) and "request_id" not in document:
        document["request_id"] = request_id
        response.text = json.dumps(document)
    return response

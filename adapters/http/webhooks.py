"""`POST /v1/webhooks/{provider}[/{token}]`: a provider's delivery, read within the body limit
and handed to ingestion (verify, record, answer)."""

from __future__ import annotations

from aiohttp import web

from adapters.http.keys import ADAPTERS, INGESTION, METRICS, SETTINGS
from adapters.http.problems import problem, unavailable
from ledger.errors import ConcurrencyConflict


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

"""`POST /v1/webhooks/{provider}[/{token}]`: a provider's delivery, read within the body limit,
recorded on receipt and answered once durable (API.md's table maps receipts to statuses here and
only here); the applier applies it right after."""

from __future__ import annotations

from aiohttp import web

from adapters.http.keys import ADAPTERS, METRICS, RECEIPT, SETTINGS
from adapters.http.problems import problem
from ledger.deliveries import ReceiptKind

_ANSWERS = {
    ReceiptKind.RECEIVED: "received",
    ReceiptKind.DUPLICATE: "duplicate",
    ReceiptKind.REJECTED: "rejected",
    ReceiptKind.INVALID: "invalid",
}


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
    receipt = await request.app[RECEIPT].receive(
        provider, body, dict(request.headers), request.match_info.get("token")
    )
    answer = _ANSWERS[receipt.kind]
    request.app[METRICS].deliveries.labels(provider, answer).inc()
    if receipt.kind is ReceiptKind.REJECTED:
        return problem(401, "Unauthorized", receipt.detail)
    if receipt.kind is ReceiptKind.INVALID:
        return problem(400, "Bad Request", receipt.detail)
    return web.json_response({"received": True, "outcome": answer})

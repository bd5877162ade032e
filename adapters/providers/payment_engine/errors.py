"""Payment Engine's error envelope: `{"error": {code, message, details, timestamp, requestId}}`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.providers.http_client import HttpResponse

_DETAIL_LIMIT = 500


def describe_error(response: HttpResponse) -> str:
    """`CODE: message (requestId)` when the envelope is there, else the start of the body."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        text = f"{error['code']}: {error.get('message', '')}"
        if isinstance(error.get("requestId"), str):
            text += f" (requestId {error['requestId']})"
        return text
    return response.body[:_DETAIL_LIMIT].decode("utf-8", "replace")

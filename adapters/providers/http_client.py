"""Outbound HTTP shared by every provider client: timeouts, retries with backoff, recording.

Only 429, 5xx and connection errors/timeouts are retried; a 4xx other than 429 is the caller's
mistake and retrying it would only repeat it. Every attempt, answered or not, is recorded.

A create (payment or withdrawal) is retried only where the provider surely did not act on it:
the connection could not be made, or it answered 429 or 503. After a timeout, a dropped
connection or another 5xx it may have created the object, and none of the five providers
dedupes a create by our id, so a retry could create a second one: the ledger leaves such a
create `submitting` and asks the provider later instead (adapters/services/recovery.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp

from adapters.providers.contract import (
    ExchangeRecorder,
    Operation,
    ProviderCallFailed,
    ProviderExchange,
)
from ledger.money import loads_exact

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Answers that say the request was not acted on, so that even a create may be sent again.
NOT_ACTED_ON_STATUSES = frozenset({429, 503})
CREATES = frozenset({Operation.CREATE_PAYMENT.value, Operation.CREATE_WITHDRAWAL.value})
_SECRET_HEADERS = frozenset({"authorization", "cc-sign", "x-api-key"})
_SECRET_FIELDS = (
    "password",
    "clientSecret",
    "client_secret",
    "refresh_token",
    "signature",
    "token",
    "access_token",
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    base_delay_seconds: float = 0.2
    max_delay_seconds: float = 5.0
    timeout_seconds: float = 10.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so that retrying clients do not march in step."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        """The body parsed with exact decimals (never float)."""
        return loads_exact(self.body)


def redact_body(body: str | None) -> str | None:
    """Blanks secret fields of a JSON or form body before it is recorded."""
    if body is None:
        return None
    try:
        parsed = loads_exact(body)  # exact: a recorded 100.50 stays 100.50
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        if not any(key in parsed for key in _SECRET_FIELDS):
            return body  # nothing to hide: keep the bytes exactly as sent
        for key in _SECRET_FIELDS:
            if key in parsed:
                parsed[key] = "***"
        return dumps_exact(parsed)
    # Form-encoded bodies (OAuth2 client credentials).
    parts = []
    for pair in body.split("&"):
        key, _, value = pair.partition("=")
        parts.append(f"{key}=***" if key in _SECRET_FIELDS else f"{key}={value}")
    return "&".join(parts)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: ("***" if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()}


class ProviderHttp:
    """One aiohttp session per provider client, with the retry policy and the recorder."""

    def __init__(self, provider: str, base_url: str, policy: RetryPolicy | None = None) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self._session: aiohttp.ClientSession | None = None

    def _session_or_new(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.policy.timeout_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout)
            # When the provider drops the connection, aiohttp sends a GET (an idempotent method)
            # once more by itself: a call the provider sees and nobody records. Every attempt is
            # ours to make and to record (the retry policy above). aiohttp has no public switch
            # for this; tests/e2e/test_provider_faults.py catches it if the attribute changes.
            self._session._retry_connection = False  # noqa: SLF001
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        operation: str,
        method: str,
        path: str,
        record: ExchangeRecorder,
        *,
        json_body: Any = None,
        form_body: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> HttpResponse:
        """Sends one request, retrying retryable failures; returns the final answer.

        Raises ProviderCallFailed when no response came after the last attempt. A non-2xx
        response is returned (not raised) so the caller can map the provider's error shape.
        `json_body` must already hold exact types: Decimals are written as JSON numbers.
        """
        url = f"{self.base_url}{path}"
        body_text, content_type = _encode_body(json_body, form_body)
        send_headers = {"Accept": "application/json", **(headers or {})}
        if content_type:
            send_headers["Content-Type"] = content_type
        attempts = self.policy.attempts if retry else 1
        create = operation in CREATES
        retryable = NOT_ACTED_ON_STATUSES if create else RETRYABLE_STATUSES
        last_error = ""
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            # The attempt's record, whatever its outcome: status, body or error complete it.
            exchange = functools.partial(
                self._exchange,
                operation,
                method,
                url,
                attempt,
                body_text,
                send_headers,
                datetime.now(UTC),
                started,
            )
            try:
                async with self._session_or_new().request(
                    method, url, data=body_text, headers=send_headers
                ) as response:
                    raw = await response.read()
                    result = HttpResponse(response.status, raw, dict(response.headers))
            except (aiohttp.ClientError, TimeoutError) as error:
                last_error = f"{type(error).__name__}: {error}"
                await record(exchange(status=None, response_body=None, error=last_error))
                if create and not isinstance(error, aiohttp.ClientConnectorError):
                    break  # it may have been acted on: never send a create twice
                if attempt < attempts:
                    await asyncio.sleep(self.policy.delay(attempt))
                continue
            response_text = raw.decode("utf-8", "replace")
            await record(exchange(status=result.status, response_body=response_text, error=None))
            if result.status in retryable and attempt < attempts:
                last_error = f"HTTP {result.status}"
                await asyncio.sleep(self.policy.delay(attempt))
                continue
            return result
        raise ProviderCallFailed(self.provider, operation, None, last_error)

    def _exchange(  # noqa: PLR0913 - a record has many parts
        self,
        operation: str,
        method: str,
        url: str,
        attempt: int,
        body_text: str | None,
        headers: Mapping[str, str],
        at: datetime,
        started: float,
        *,
        status: int | None,
        response_body: str | None,
        error: str | None,
    ) -> ProviderExchange:
        return ProviderExchange(
            provider=self.provider,
            operation=operation,
            method=method,
            url=url,
            attempt=attempt,
            request_body=redact_body(body_text),
            status=status,
            response_body=redact_body(response_body)
            if operation.startswith("login")
            else response_body,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            at=at,
            request_headers=redact_headers(headers),
        )


def _encode_body(
    json_body: Any, form_body: Mapping[str, str] | None
) -> tuple[str | None, str | None]:
    if form_body is not None:
        return urlencode(dict(form_body)), "application/x-www-form-urlencoded"
    if json_body is None:
        return None, None
    return dumps_exact(json_body), "application/json"


def dumps_exact(value: Any) -> str:
    """JSON with Decimals written as numbers, digit for digit (no float on the way out either)."""
    return _render(value)


def _render(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(str(k))}: {_render(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return json.dumps(value)

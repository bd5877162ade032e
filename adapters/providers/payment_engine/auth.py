"""Payment Engine authentication: an API key, or login tokens kept fresh.

With `api_key` configured every call carries `X-API-Key` and nothing is logged in. Otherwise the
client logs in (`POST /api/v1/auth/login`), reuses the access token until shortly before its
`expires_in`, renews it with `POST /api/v1/auth/refresh`, and logs in again when that fails.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from adapters.providers.contract import ExchangeRecorder, ProviderCallFailed
from adapters.providers.payment_engine.errors import describe_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from adapters.providers.http_client import HttpResponse, ProviderHttp

LOGIN_PATH = "/api/v1/auth/login"
REFRESH_PATH = "/api/v1/auth/refresh"
# Renew a little before the provider's deadline so that a token does not expire in flight.
_EARLY_RENEWAL_SECONDS = 30
_EARLY_RENEWAL_FRACTION = Decimal("0.1")


class Authenticator(Protocol):
    renewable: bool

    async def headers(self, record: ExchangeRecorder) -> dict[str, str]: ...

    async def renew(self, rejected: dict[str, str], record: ExchangeRecorder) -> None: ...


class ApiKeyAuthenticator:
    """A fixed key: a 401 means the key is wrong, and asking again would not help."""

    renewable = False

    def __init__(self, api_key: str) -> None:
        self._headers = {"X-API-Key": api_key}

    async def headers(self, record: ExchangeRecorder) -> dict[str, str]:  # noqa: ARG002 - protocol
        return dict(self._headers)

    async def renew(self, rejected: dict[str, str], record: ExchangeRecorder) -> None:  # noqa: ARG002 - protocol
        raise AssertionError("an API key cannot be renewed")


@dataclass(slots=True)
class _Tokens:
    access_token: str
    refresh_token: str | None
    renew_at: float | None  # monotonic seconds; None when the provider gave no lifetime


class LoginAuthenticator:
    renewable = True

    def __init__(
        self,
        http: ProviderHttp,
        username: str,
        password: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._credentials = {"username": username, "password": password}
        self._clock = clock
        self._tokens: _Tokens | None = None
        # One renewal at a time: concurrent calls that find the token stale share one login.
        self._lock = asyncio.Lock()

    async def headers(self, record: ExchangeRecorder) -> dict[str, str]:
        async with self._lock:
            tokens = self._tokens
            if tokens is None or (tokens.renew_at is not None and self._clock() >= tokens.renew_at):
                tokens = await self._obtain(record)
            return {"Authorization": f"Bearer {tokens.access_token}"}

    async def renew(self, rejected: dict[str, str], record: ExchangeRecorder) -> None:
        """Called after a 401: renews unless another call already replaced the rejected token."""
        async with self._lock:
            current = self._tokens
            if current is not None and rejected.get("Authorization") == (
                f"Bearer {current.access_token}"
            ):
                await self._obtain(record)

    async def _obtain(self, record: ExchangeRecorder) -> _Tokens:
        refresh_token = self._tokens.refresh_token if self._tokens else None
        self._tokens = None
        if refresh_token is not None:
            # The request and response bodies hold tokens; operations named "login..." have
            # their recorded bodies redacted by ProviderHttp.
            response = await self._http.request(
                "login_refresh",
                "POST",
                REFRESH_PATH,
                record,
                json_body={"refresh_token": refresh_token},
            )
            if 200 <= response.status < 300:
                self._tokens = self._read(response, "login_refresh", refresh_token)
                return self._tokens
        response = await self._http.request(
            "login", "POST", LOGIN_PATH, record, json_body=self._credentials
        )
        if not 200 <= response.status < 300:
            raise ProviderCallFailed(
                self._http.provider, "login", response.status, describe_error(response)
            )
        self._tokens = self._read(response, "login", None)
        return self._tokens

    def _read(self, response: HttpResponse, operation: str, previous: str | None) -> _Tokens:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        access_token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access_token, str) or not access_token:
            raise ProviderCallFailed(
                self._http.provider, operation, response.status, "answer without access_token"
            )
        refresh_token = body.get("refresh_token")
        expires_in = body.get("expires_in")
        renew_at = None
        if isinstance(expires_in, int | Decimal) and not isinstance(expires_in, bool):
            lifetime = Decimal(expires_in)
            early = min(Decimal(_EARLY_RENEWAL_SECONDS), lifetime * _EARLY_RENEWAL_FRACTION)
            renew_at = self._clock() + float(lifetime - early)
        return _Tokens(
            access_token=access_token,
            # A refresh answer may omit a new refresh token: the old one then stays usable.
            refresh_token=refresh_token if isinstance(refresh_token, str) else previous,
            renew_at=renew_at,
        )

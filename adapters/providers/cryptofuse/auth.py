"""OAuth2 client credentials for Cryptofuse: `POST /o/token/`, form-encoded, scope "read write".

The token is kept until shortly before its `expires_in` (seconds) runs out, so a call never
leaves with a token about to lapse; a 401 on a call throws it away (see the client).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from adapters.providers.contract import ExchangeRecorder, ProviderCallFailed
from adapters.providers.cryptofuse.settings import PROVIDER_ID

if TYPE_CHECKING:
    from collections.abc import Callable

    from adapters.providers.http_client import ProviderHttp

TOKEN_PATH = "/o/token/"  # noqa: S105 - a path, not a password
# The shared client redacts secrets (access_token too) in the answers of operations named login*.
TOKEN_OPERATION = "login"  # noqa: S105 - an operation name, not a password
SCOPE = "read write"
_LONGEST_EARLY_REFRESH_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_after: float  # monotonic clock


class ClientCredentialsToken:
    def __init__(
        self,
        http: ProviderHttp,
        client_id: str,
        client_secret: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._token: _Token | None = None
        # One fetch at a time: concurrent calls with no token wait for the same fetch.
        self._lock = asyncio.Lock()

    async def bearer(self, record: ExchangeRecorder) -> str:
        token = self._token
        if token is not None and self._clock() < token.refresh_after:
            return token.value
        async with self._lock:
            token = self._token
            if token is None or self._clock() >= token.refresh_after:
                token = await self._fetch(record)
                self._token = token
            return token.value

    def invalidate(self, value: str) -> None:
        """Forgets `value` if it is still the cached token (another call may have replaced it)."""
        if self._token is not None and self._token.value == value:
            self._token = None

    async def _fetch(self, record: ExchangeRecorder) -> _Token:
        started = self._clock()
        response = await self._http.request(
            TOKEN_OPERATION,
            "POST",
            TOKEN_PATH,
            record,
            form_body={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret,
                "scope": SCOPE,
            },
        )
        if not 200 <= response.status < 300:
            raise ProviderCallFailed(
                PROVIDER_ID, TOKEN_OPERATION, response.status, _error_detail(response.body)
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        access_token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access_token, str) or not access_token:
            raise ProviderCallFailed(
                PROVIDER_ID, TOKEN_OPERATION, response.status, "answer has no access_token"
            )
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        lifetime = _seconds(expires_in)
        # Refresh early by a tenth of the lifetime, at most a minute: a token without a lifetime
        # is used for the one call that fetched it.
        early = min(_LONGEST_EARLY_REFRESH_SECONDS, lifetime / 10)
        return _Token(access_token, started + lifetime - early)


def _seconds(value: object) -> float:
    """`expires_in` as seconds (a duration, not money: a float is fine); unusable means zero."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        return 0.0
    return seconds if seconds > 0 and seconds != float("inf") else 0.0


def _error_detail(body: bytes) -> str:
    return body[:500].decode("utf-8", "replace")

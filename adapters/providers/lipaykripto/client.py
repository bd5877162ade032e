"""LiPayKripto's API: a fresh token per payment request, HMAC-signed withdrawals, POST only.

- Payment: POST /api/auth/token {clientId, clientSecret} -> {token, expiresIn}, then
  POST /api/external-payment-request with `Authorization: Bearer <token>`. The document demands a
  NEW token for each payment request, so nothing is cached; a token is never reused.
- Withdrawal: POST /api/withdraw, no bearer token; the body carries clientId and an HMAC-SHA256
  signature (see signing.py).
- The document offers no status query, no lookup by paymentId or requestId and no balance
  endpoint; its only hint that a payment exists is refusing a second one with the same
  paymentId ("Invalid paymentId"), which names nothing and so resolves nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from adapters.providers.contract import (
    CreatedPayment,
    CreatedWithdrawal,
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    ExchangeRecorder,
    Operation,
    OperationNotSupported,
    ProviderCallFailed,
    ProviderExchange,
)
from adapters.providers.http_client import HttpResponse, ProviderHttp, RetryPolicy, dumps_exact
from adapters.providers.lipaykripto.signing import (
    TRY_CURRENCY,
    WithdrawalSigningFields,
    format_created_at,
    format_try_amount,
    sign_withdrawal,
)
from ledger.money import loads_exact

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.commands import ProviderBalanceReport, Translation

PROVIDER_ID = "lipaykripto"
LOGIN_PATH = "/api/auth/token"
PAYMENT_PATH = "/api/external-payment-request"
WITHDRAW_PATH = "/api/withdraw"
COIN_TYPES = frozenset({"TRX", "USDT", "ETH"})


class LiPayKriptoRequestError(ValueError):
    """A request LiPayKripto cannot take (not TRY, unknown coin type); nothing was sent."""


class LiPayKriptoClient:
    # What the methods below refuse whatever the request (ProviderAdapter.supports).
    unsupported_operations: ClassVar[frozenset[Operation]] = frozenset(
        {
            Operation.QUERY_PAYMENT,
            Operation.FETCH_BALANCES,
            Operation.FIND_PAYMENT,
            Operation.FIND_WITHDRAWAL,
        }
    )

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        hmac_secret: str,
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._http = ProviderHttp(PROVIDER_ID, base_url, policy)
        self._client_id = client_id
        self._client_secret = client_secret
        self._hmac_secret = hmac_secret
        self._clock = clock or (lambda: datetime.now(UTC))

    async def create_payment(
        self, request: CreatePaymentRequest, record: ExchangeRecorder
    ) -> CreatedPayment:
        _require_try(request.currency)
        amount = _positive_try_amount(request.amount)
        body = {
            "tryAmount": amount,
            "paymentId": request.order_id,
            "webhookUrl": request.callback_url,
        }
        response = await self._post_payment(body, record)
        if response.status == 401:
            # The token may have lapsed between issue and use (or been spent); a 401 means the
            # request was not taken, so one more try with another fresh token is safe.
            response = await self._post_payment(body, record)
        answer = _json_object(response, "create_payment")
        if not _succeeded(response, answer):
            raise _failure("create_payment", response, answer)
        request_id = answer.get("paymentRequestId")
        if isinstance(request_id, bool) or not isinstance(request_id, int | str) or not request_id:
            raise ProviderCallFailed(
                PROVIDER_ID, "create_payment", response.status, "response has no paymentRequestId"
            )
        payment_url = answer.get("paymentUrl")
        return CreatedPayment(
            # paymentRequestId is the provider's own id; webhooks name our paymentId instead,
            # which the ledger keeps as the order id.
            provider_ref=str(request_id),
            expected_amount=amount,
            expected_currency=TRY_CURRENCY,
            expires_at=None,  # the document states no payment lifetime
            provider_status=str(answer.get("status", "")),
            payment_url=payment_url if isinstance(payment_url, str) else None,
        )

    async def create_withdrawal(
        self, request: CreateWithdrawalRequest, record: ExchangeRecorder
    ) -> CreatedWithdrawal:
        _require_try(request.currency)
        amount = _positive_try_amount(request.amount)
        coin_type = (request.pay_currency or "").upper()
        if coin_type not in COIN_TYPES:
            raise LiPayKriptoRequestError(
                f"coin_type must be one of {sorted(COIN_TYPES)}, got {request.pay_currency!r}"
            )
        fields = WithdrawalSigningFields(
            try_amount=format_try_amount(amount),
            client_id=self._client_id,
            request_id=request.request_id,
            wallet_address=request.address,
            coin_type=coin_type,
            webhook_url=request.callback_url,
            created_at=format_created_at(self._clock()),
        )
        body = {
            # Decimal("100.00") goes out as the JSON number 100.00: the digits that were signed.
            "try_amount": Decimal(fields.try_amount),
            "clientId": fields.client_id,
            "requestId": fields.request_id,
            "wallet_address": fields.wallet_address,
            "coin_type": fields.coin_type,
            "signature": sign_withdrawal(fields, self._hmac_secret),
            "webhook_url": fields.webhook_url,
            "created_at": fields.created_at,
        }
        response = await self._http.request(
            "create_withdrawal", "POST", WITHDRAW_PATH, record, json_body=body
        )
        answer = _json_object(response, "create_withdrawal")
        data = answer.get("data")
        if not _succeeded(response, answer) or not isinstance(data, dict):
            raise _failure("create_withdrawal", response, answer)
        withdraw_id = data.get("withdrawId")
        if isinstance(withdraw_id, bool) or not isinstance(withdraw_id, int | str):
            raise ProviderCallFailed(
                PROVIDER_ID, "create_withdrawal", response.status, "response has no withdrawId"
            )
        return CreatedWithdrawal(
            provider_ref=str(withdraw_id), provider_status=str(data.get("status", ""))
        )

    async def query_payment(
        self,
        provider_ref: str,  # noqa: ARG002 - the contract's signature; there is nothing to ask
        order_id: str,  # noqa: ARG002
        record: ExchangeRecorder,  # noqa: ARG002
    ) -> Translation:
        raise OperationNotSupported("LiPayKripto documents no payment status query")

    async def fetch_balances(
        self,
        record: ExchangeRecorder,  # noqa: ARG002 - the contract's signature; nothing to ask
    ) -> list[ProviderBalanceReport]:
        raise OperationNotSupported("LiPayKripto documents no balance endpoint")

    async def find_payment(
        self,
        order_id: str,  # noqa: ARG002 - the contract's signature; there is nothing to ask
        record: ExchangeRecorder,  # noqa: ARG002
    ) -> CreatedPayment | None:
        raise OperationNotSupported("LiPayKripto documents no payment lookup")

    async def find_withdrawal(
        self,
        request_id: str,  # noqa: ARG002 - the contract's signature; there is nothing to ask
        record: ExchangeRecorder,  # noqa: ARG002
    ) -> CreatedWithdrawal | None:
        raise OperationNotSupported("LiPayKripto documents no withdrawal lookup")

    async def close(self) -> None:
        await self._http.close()

    async def _post_payment(self, body: dict[str, Any], record: ExchangeRecorder) -> HttpResponse:
        token = await self._new_token(record)
        return await self._http.request(
            "create_payment",
            "POST",
            PAYMENT_PATH,
            record,
            json_body=body,
            headers={"Authorization": f"Bearer {token}"},
        )

    async def _new_token(self, record: ExchangeRecorder) -> str:
        """A token used for exactly one payment request, as the document requires."""

        async def record_without_token(exchange: ProviderExchange) -> None:
            # The recorder redacts clientSecret but not the issued token; keep it out of the log.
            await record(replace(exchange, response_body=_redact_token(exchange.response_body)))

        response = await self._http.request(
            "login",
            "POST",
            LOGIN_PATH,
            record_without_token,
            json_body={"clientId": self._client_id, "clientSecret": self._client_secret},
        )
        answer = _json_object(response, "login")
        token = answer.get("token")
        if not 200 <= response.status < 300 or not isinstance(token, str) or not token:
            raise _failure("login", response, answer)
        return token


def _require_try(currency: str) -> None:
    if currency.upper() != TRY_CURRENCY:
        raise LiPayKriptoRequestError(f"LiPayKripto takes amounts in TRY only, got {currency}")


def _positive_try_amount(amount: Decimal) -> Decimal:
    formatted = Decimal(format_try_amount(amount))
    if formatted <= 0:
        raise LiPayKriptoRequestError(f"amount must be greater than zero, got {amount}")
    return formatted


def _json_object(response: HttpResponse, operation: str) -> dict[str, Any]:
    try:
        parsed = response.json()
    except (ValueError, UnicodeDecodeError):
        raise ProviderCallFailed(
            PROVIDER_ID, operation, response.status, "answer is not JSON"
        ) from None
    if not isinstance(parsed, dict):
        raise ProviderCallFailed(PROVIDER_ID, operation, response.status, "answer is not an object")
    return parsed


def _succeeded(response: HttpResponse, answer: dict[str, Any]) -> bool:
    # A 2xx with "success": false is still a refusal.
    return 200 <= response.status < 300 and answer.get("success") is True


def _failure(operation: str, response: HttpResponse, answer: dict[str, Any]) -> ProviderCallFailed:
    error = answer.get("error")
    detail = error if isinstance(error, str) else response.body.decode("utf-8", "replace")[:500]
    return ProviderCallFailed(PROVIDER_ID, operation, response.status, detail)


def _redact_token(body: str | None) -> str | None:
    if body is None:
        return None
    try:
        parsed = loads_exact(body)
    except ValueError:
        return body
    if isinstance(parsed, dict) and "token" in parsed:
        parsed["token"] = "***"  # noqa: S105 - a placeholder, not a password
        return dumps_exact(parsed)
    return body

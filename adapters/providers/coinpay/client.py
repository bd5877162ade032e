"""CoinPay's API: JWT login, payment (transaction) creation and query, payouts, wallet balance.

Auth as the document shows it: `POST /api/auth/login {username, password}` answers
`{token, expiresIn}` with `expiresIn` in MINUTES; the token is sent as `Authorization: Bearer` and
cached until shortly before it expires. A 401 on a call means the provider dropped the token
earlier than announced: log in again once and repeat the call once.

Lookups by our id: a payment by our order id through the document's `listTransactions(filters)`
(`GET /api/transactions?...`, see `find_payment`); payouts have no list or query in the
document, so a withdrawal cannot be looked up (`find_withdrawal` is not supported).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlencode

from adapters.providers.canonical import canonical_json
from adapters.providers.coinpay.webhooks import PROVIDER_ID, dedupe_key, parse_time
from adapters.providers.contract import (
    CreatedPayment,
    CreatedWithdrawal,
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    ExchangeRecorder,
    Operation,
    OperationNotSupported,
    ProviderCallFailed,
)
from ledger.commands import (
    PaymentReference,
    PaymentStatusReport,
    PaymentUpdate,
    ProviderBalanceReport,
    ProviderPaymentOutcome,
    Translation,
)
from ledger.money import to_decimal

if TYPE_CHECKING:
    from collections.abc import Mapping
    from decimal import Decimal

    from adapters.providers.http_client import HttpResponse, ProviderHttp

# Refresh this long before the announced expiry (never more than a tenth of the lifetime), so
# a request does not leave with a token that dies on the way.
_REFRESH_MARGIN_SECONDS = 60.0
_ERROR_DETAIL_LIMIT = 500

# The document shows no transaction status words (its own code writes 'pending'/'completed'/
# 'failed' for orders). These are matched case-insensitively; anything else is UNKNOWN.
_PAYMENT_OUTCOMES: Mapping[str, ProviderPaymentOutcome] = {
    "pending": ProviderPaymentOutcome.PENDING,
    "created": ProviderPaymentOutcome.PENDING,
    "processing": ProviderPaymentOutcome.CONFIRMING,
    "confirming": ProviderPaymentOutcome.CONFIRMING,
    "completed": ProviderPaymentOutcome.PAID,
    "failed": ProviderPaymentOutcome.FAILED,
    "expired": ProviderPaymentOutcome.EXPIRED,
}


def payment_outcome(status_word: str) -> ProviderPaymentOutcome:
    return _PAYMENT_OUTCOMES.get(status_word.strip().lower(), ProviderPaymentOutcome.UNKNOWN)


class CoinPayClient:
    """Implements `ProviderClient` for CoinPay."""

    # What the methods below refuse whatever the request (ProviderAdapter.supports).
    unsupported_operations: ClassVar[frozenset[Operation]] = frozenset(
        {Operation.FIND_WITHDRAWAL}
    )

    def __init__(self, http: ProviderHttp, username: str, password: str) -> None:
        self._http = http
        self._username = username
        self._password = password
        self._token: str | None = None
        self._token_valid_until = 0.0  # time.monotonic() deadline
        self._login_lock = asyncio.Lock()

    async def create_payment(
        self, request: CreatePaymentRequest, record: ExchangeRecorder
    ) -> CreatedPayment:
        _refuse_other_pay_currency(request.currency, request.pay_currency)
        metadata: dict[str, Any] = {"orderId": request.order_id}
        if request.customer_id is not None:
            metadata["customerId"] = request.customer_id
        # No callback URL goes out: CoinPay's webhook URL is set once in its portal.
        body = {
            "amount": request.amount,
            "currency": request.currency,
            "type": "Payment",
            "description": request.description or f"Payment for Order #{request.order_id}",
            "metadata": metadata,
        }
        answer = await self._call("create_payment", "POST", "/api/transactions", record, body)
        # CoinPay states no expiry; the ledger expires the payment by its own clock when asked to.
        expires_at = None
        if request.expires_in_minutes is not None:
            expires_at = datetime.now(UTC) + timedelta(minutes=request.expires_in_minutes)
        return _created_payment(
            _object(answer, "create_payment"), answer, "create_payment", expires_at
        )

    async def find_payment(self, order_id: str, record: ExchangeRecorder) -> CreatedPayment | None:
        """The transaction created for our order id, through `GET /api/transactions?orderId=`.

        The document lists transactions with `listTransactions(filters)` and shows neither the
        filters nor the answer. Our order id travels in `metadata.orderId` (as its own example
        does), so `orderId` is the filter an engineer would try; the answer is read as a list
        of transactions, bare or under `transactions`, `items`, `data` or `results`. The list
        is checked here too (metadata.orderId must be ours), so a provider that ignores an
        unknown filter cannot hand us another order's payment. Where two were created for one
        order, the earliest is the one our first create made.
        """
        path = "/api/transactions?" + urlencode({"orderId": order_id})
        answer = await self._call("find_payment", "GET", path, record)
        ours = [
            transaction
            for transaction in _listed(answer, "find_payment")
            if isinstance(transaction.get("metadata"), dict)
            and transaction["metadata"].get("orderId") == order_id
        ]
        if not ours:
            return None
        earliest = min(ours, key=lambda transaction: _created_at(transaction.get("createdAt")))
        # The lookup cannot know the expiry asked for: None keeps the ledger's own.
        return _created_payment(earliest, answer, "find_payment", None)

    async def find_withdrawal(
        self,
        request_id: str,
        record: ExchangeRecorder,  # noqa: ARG002 - the contract's signature; nothing to ask
    ) -> CreatedWithdrawal | None:
        raise OperationNotSupported(
            f"CoinPay documents no payout list or query: withdrawal {request_id} cannot be "
            "looked up"
        )

    async def create_withdrawal(
        self, request: CreateWithdrawalRequest, record: ExchangeRecorder
    ) -> CreatedWithdrawal:
        _refuse_other_pay_currency(request.currency, request.pay_currency)
        # CoinPay's payout is a fiat off-ramp to a bank account registered with CoinPay; our
        # withdrawal names an `address`, which is sent as that `bankAccountId`.
        body = {
            "amount": request.amount,
            "currency": request.currency,
            "bankAccountId": request.address,
            "description": f"Withdrawal {request.request_id}",
        }
        answer = await self._call("create_withdrawal", "POST", "/api/payouts", record, body)
        payload = _object(answer, "create_withdrawal")
        status = payload.get("status")
        return CreatedWithdrawal(
            provider_ref=_identifier(payload, "id", answer, "create_withdrawal"),
            provider_status=status if isinstance(status, str) else "",
        )

    async def query_payment(
        self, provider_ref: str, order_id: str, record: ExchangeRecorder
    ) -> Translation:
        path = f"/api/transactions/{quote(provider_ref, safe='')}"
        answer = await self._call("query_payment", "GET", path, record)
        payload = _object(answer, "query_payment")
        status_word = _response_text(payload, "status", answer, "query_payment")
        # Only the status is taken: whether `amount` here is the amount asked or the amount paid
        # is not documented, so it is not reported as money received.
        return Translation(
            dedupe_key=dedupe_key(payload, prefix=f"{PROVIDER_ID}:query"),
            facts=(
                PaymentUpdate(
                    reference=PaymentReference(
                        provider=PROVIDER_ID,
                        provider_ref=_identifier(payload, "transactionId", answer, "query_payment"),
                        order_id=order_id or None,
                    ),
                    status=PaymentStatusReport(
                        status_word=status_word,
                        outcome=payment_outcome(status_word),
                        reported_at=parse_time(payload.get("completedAt")),
                    ),
                ),
            ),
            event_type=f"query:{status_word}",
        )

    async def fetch_balances(self, record: ExchangeRecorder) -> list[ProviderBalanceReport]:
        # The document names GET /api/wallet/balance but shows no response. Accepted: a list of
        # balance objects, or an object holding one under `balances`, or one balance object, each
        # with `currency` and `available` (or `balance`), optionally `pending`.
        answer = await self._call("fetch_balances", "GET", "/api/wallet/balance", record)
        payload = answer.json()
        if isinstance(payload, dict) and isinstance(payload.get("balances"), list):
            entries = payload["balances"]
        elif isinstance(payload, list):
            entries = payload
        else:
            entries = [payload]
        return [_balance(entry, answer) for entry in entries]

    async def close(self) -> None:
        await self._http.close()

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        record: ExchangeRecorder,
        body: Any = None,
    ) -> HttpResponse:
        token = await self._valid_token(record)
        answer = await self._send(operation, method, path, record, body, token)
        if answer.status == 401:
            self._forget(token)
            token = await self._valid_token(record)
            answer = await self._send(operation, method, path, record, body, token)
        if not 200 <= answer.status < 300:
            raise ProviderCallFailed(PROVIDER_ID, operation, answer.status, _detail(answer))
        return answer

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        record: ExchangeRecorder,
        body: Any,
        token: str,
    ) -> HttpResponse:
        return await self._http.request(
            operation,
            method,
            path,
            record,
            json_body=body,
            headers={"Authorization": f"Bearer {token}"},
        )

    async def _valid_token(self, record: ExchangeRecorder) -> str:
        async with self._login_lock:
            if self._token is not None and time.monotonic() < self._token_valid_until:
                return self._token
            answer = await self._http.request(
                "login",
                "POST",
                "/api/auth/login",
                record,
                json_body={"username": self._username, "password": self._password},
            )
            if not 200 <= answer.status < 300:
                raise ProviderCallFailed(PROVIDER_ID, "login", answer.status, _detail(answer))
            payload = _object(answer, "login")
            token = _response_text(payload, "token", answer, "login")
            lifetime_seconds = float(_response_amount(payload, "expiresIn", answer, "login")) * 60
            margin = min(_REFRESH_MARGIN_SECONDS, lifetime_seconds / 10)
            self._token = token
            self._token_valid_until = time.monotonic() + lifetime_seconds - margin
            return token

    def _forget(self, token: str) -> None:
        # Only the token that was refused: a concurrent call may already have a fresh one.
        if self._token == token:
            self._token = None
            self._token_valid_until = 0.0


def _refuse_other_pay_currency(currency: str, pay_currency: str | None) -> None:
    if pay_currency is not None and pay_currency != currency:
        raise OperationNotSupported(
            f"CoinPay is paid in the currency it prices in; pay_currency {pay_currency} "
            f"differs from currency {currency}"
        )


def _created_payment(
    payload: Mapping[str, Any], answer: HttpResponse, operation: str, expires_at: datetime | None
) -> CreatedPayment:
    status = payload.get("status")
    receiver = payload.get("receiverName")
    return CreatedPayment(
        provider_ref=_identifier(payload, "transactionId", answer, operation),
        expected_amount=_response_amount(payload, "amount", answer, operation),
        expected_currency=_response_text(payload, "currency", answer, operation),
        expires_at=expires_at,
        provider_status=status if isinstance(status, str) else "",
        # The document shows `receiverName` to the customer as the "recipient address".
        pay_address=receiver if isinstance(receiver, str) and receiver else None,
    )


def _listed(answer: HttpResponse, operation: str) -> list[dict[str, Any]]:
    """The transactions of a list answer: a JSON array, or an object holding one."""
    try:
        payload = answer.json()
    except (ValueError, UnicodeDecodeError) as error:
        raise ProviderCallFailed(PROVIDER_ID, operation, answer.status, "not JSON") from error
    if isinstance(payload, dict):
        lists = [payload.get(key) for key in ("transactions", "items", "data", "results")]
        payload = next((found for found in lists if isinstance(found, list)), None)
    if not isinstance(payload, list):
        raise ProviderCallFailed(PROVIDER_ID, operation, answer.status, "not a list")
    return [item for item in payload if isinstance(item, dict)]


def _created_at(value: Any) -> datetime:
    """When a listed transaction was created; undated ones sort last."""
    moment = parse_time(value)
    return moment if moment is not None else datetime.max.replace(tzinfo=UTC)


def _object(answer: HttpResponse, operation: str) -> dict[str, Any]:
    try:
        payload = answer.json()
    except (ValueError, UnicodeDecodeError) as error:
        raise ProviderCallFailed(PROVIDER_ID, operation, answer.status, "not JSON") from error
    if not isinstance(payload, dict):
        raise ProviderCallFailed(PROVIDER_ID, operation, answer.status, "not a JSON object")
    return payload


def _identifier(payload: Mapping[str, Any], key: str, answer: HttpResponse, operation: str) -> str:
    value = payload.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _response_text(payload, key, answer, operation)


def _response_text(
    payload: Mapping[str, Any], key: str, answer: HttpResponse, operation: str
) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise ProviderCallFailed(
            PROVIDER_ID, operation, answer.status, f"response has no string `{key}`"
        )
    return value


def _response_amount(
    payload: Mapping[str, Any], key: str, answer: HttpResponse, operation: str
) -> Decimal:
    try:
        amount = to_decimal(payload.get(key))
    except (TypeError, ValueError, ArithmeticError) as error:
        raise ProviderCallFailed(
            PROVIDER_ID, operation, answer.status, f"response `{key}` is not an amount"
        ) from error
    if amount <= 0:
        raise ProviderCallFailed(
            PROVIDER_ID, operation, answer.status, f"response `{key}` is not positive"
        )
    return amount


def _balance(entry: Any, answer: HttpResponse) -> ProviderBalanceReport:
    if not isinstance(entry, dict):
        raise ProviderCallFailed(PROVIDER_ID, "fetch_balances", answer.status, "not a balance")
    available_key = "available" if "available" in entry else "balance"
    try:
        available = to_decimal(entry.get(available_key))
        pending = None if entry.get("pending") is None else to_decimal(entry["pending"])
    except (TypeError, ValueError, ArithmeticError) as error:
        detail = f"unreadable balance {canonical_json(entry)}"
        raise ProviderCallFailed(PROVIDER_ID, "fetch_balances", answer.status, detail) from error
    currency = _response_text(entry, "currency", answer, "fetch_balances")
    return ProviderBalanceReport(
        provider=PROVIDER_ID,
        account="wallet",
        currency=currency,
        available=available,
        pending=pending,
        reported_at=datetime.now(UTC),
    )


def _detail(answer: HttpResponse) -> str:
    return answer.body.decode("utf-8", "replace")[:_ERROR_DETAIL_LIMIT]

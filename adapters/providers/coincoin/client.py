"""CoinCoin's API as the ledger uses it: creating orders. It documents nothing else.

There is no status query, no lookup of an order, no withdrawal and no balance endpoint in
CoinCoin's document, so those operations raise OperationNotSupported. (What a second create
with the same payment_id does is not documented either; the sandbox answers the existing order,
but the ledger does not build on that.) There is no session token either: every request is signed
with a fresh millisecond timestamp, so nothing is cached and nothing needs refreshing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from adapters.providers.coincoin.protocol import (
    CREATE_ORDER_PATH,
    PROVIDER_ID,
    expiry_hours,
    payment_id_for_order,
    signed_headers,
)
from adapters.providers.coincoin.states import status_word
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
from ledger.money import to_decimal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from adapters.providers.http_client import HttpResponse, ProviderHttp
    from ledger.commands import ProviderBalanceReport, Translation

_DETAIL_LIMIT = 500


def wall_clock_milliseconds() -> int:
    return time.time_ns() // 1_000_000


class CoinCoinClient:
    # What the methods below refuse whatever the request (ProviderAdapter.supports).
    unsupported_operations: ClassVar[frozenset[Operation]] = frozenset(
        {
            Operation.CREATE_WITHDRAWAL,
            Operation.QUERY_PAYMENT,
            Operation.FETCH_BALANCES,
            Operation.FIND_PAYMENT,
            Operation.FIND_WITHDRAWAL,
        }
    )

    def __init__(
        self,
        http: ProviderHttp,
        app_id: str,
        secret_key: str,
        *,
        now_milliseconds: Callable[[], int] = wall_clock_milliseconds,
    ) -> None:
        self._http = http
        self._app_id = app_id
        self._secret_key = secret_key
        self._now_milliseconds = now_milliseconds

    async def create_payment(
        self, request: CreatePaymentRequest, record: ExchangeRecorder
    ) -> CreatedPayment:
        """POST /order/create. The price goes out as sent; CoinCoin names no price currency
        (its orders are in the coin of the response, USDT in every example), and refuses prices
        under 10 itself, which surfaces as ProviderCallFailed with its status."""
        body = {
            "payment_id": payment_id_for_order(request.order_id),
            "price": request.amount,
            "expired": expiry_hours(request.expires_in_minutes),
        }
        # The timestamp is taken once per call: retries of it stay well inside CoinCoin's
        # five-minute window (the backoff is capped at seconds).
        response = await self._http.request(
            "create_payment",
            "POST",
            CREATE_ORDER_PATH,
            record,
            json_body=body,
            headers=signed_headers(self._app_id, self._secret_key, self._now_milliseconds()),
        )
        order = _successful_object(response, "create_payment")
        try:
            return _created_payment(order)
        except (KeyError, TypeError, ValueError) as error:
            raise ProviderCallFailed(
                PROVIDER_ID, "create_payment", response.status, f"unexpected response: {error}"
            ) from None

    # The unused arguments below are the contract's signature; CoinCoin offers no such call.
    async def create_withdrawal(
        self,
        request: CreateWithdrawalRequest,  # noqa: ARG002
        record: ExchangeRecorder,  # noqa: ARG002
    ) -> CreatedWithdrawal:
        raise OperationNotSupported("CoinCoin documents no withdrawal endpoint")

    async def query_payment(
        self,
        provider_ref: str,  # noqa: ARG002
        order_id: str,  # noqa: ARG002
        record: ExchangeRecorder,  # noqa: ARG002
    ) -> Translation:
        raise OperationNotSupported("CoinCoin documents no order status query")

    async def fetch_balances(
        self,
        record: ExchangeRecorder,  # noqa: ARG002
    ) -> list[ProviderBalanceReport]:
        raise OperationNotSupported("CoinCoin documents no balance endpoint")

    async def find_payment(
        self,
        order_id: str,  # noqa: ARG002
        record: ExchangeRecorder,  # noqa: ARG002
    ) -> CreatedPayment | None:
        raise OperationNotSupported("CoinCoin documents no order lookup")

    async def find_withdrawal(
        self,
        request_id: str,  # noqa: ARG002
        record: ExchangeRecorder,  # noqa: ARG002
    ) -> CreatedWithdrawal | None:
        raise OperationNotSupported("CoinCoin documents no withdrawals")

    async def close(self) -> None:
        await self._http.close()


def _successful_object(response: HttpResponse, operation: str) -> Mapping[str, Any]:
    detail = response.body[:_DETAIL_LIMIT].decode("utf-8", "replace")
    if not 200 <= response.status < 300:
        raise ProviderCallFailed(PROVIDER_ID, operation, response.status, detail)
    try:
        parsed = response.json()
    except (ValueError, UnicodeDecodeError):
        raise ProviderCallFailed(PROVIDER_ID, operation, response.status, "not JSON") from None
    if not isinstance(parsed, dict):
        raise ProviderCallFailed(PROVIDER_ID, operation, response.status, "not a JSON object")
    return parsed


def _created_payment(order: Mapping[str, Any]) -> CreatedPayment:
    payment_id = _text(order, "payment_id")
    coin = _text(order, "coin")
    amount = to_decimal(order["amount"])
    if amount <= 0:
        raise ValueError("amount must be positive")
    state = order.get("state", "")
    return CreatedPayment(
        provider_ref=payment_id,
        expected_amount=amount,
        expected_currency=coin.upper(),
        expires_at=_from_milliseconds(order["expired_time"]),
        provider_status=status_word(state),
        pay_address=_text(order, "address"),
    )


def _text(order: Mapping[str, Any], key: str) -> str:
    value = order[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _from_milliseconds(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise TypeError("expired_time must be a number of milliseconds")
    return datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=int(value))

"""Outbound calls to Payment Engine's transaction API.

A payment is a transaction into the merchant account (`toAccountId`), a withdrawal a transaction
out of it to the address (`fromAccountId` merchant, `toAccountId` address); `externalReference`
carries the ledger's order id or request id. The document names the SDK's `getStatus` but no
path: the client reads `GET /api/v1/transactions/{id}`, the REST form of its resources.

Lookups by our id (`find_payment`, `find_withdrawal`) list `GET /api/v1/transactions`, which the
guide shows (in its auth examples) without filters or answer: the client filters on the
transaction's own field names, `externalReference` and the merchant account on the side that
tells a payment (`toAccountId`) from a withdrawal (`fromAccountId`), reads the answer as a list
(bare or under `data`, `items`, `transactions` or `results`) and checks both again itself.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from adapters.providers.contract import (
    CreatedPayment,
    CreatedWithdrawal,
    CreatePaymentRequest,
    CreateWithdrawalRequest,
    ExchangeRecorder,
    ProviderCallFailed,
    WebhookBodyInvalid,
)
from adapters.providers.payment_engine.errors import describe_error
from adapters.providers.payment_engine.payloads import (
    TransactionView,
    content_key,
    optional_amount,
    optional_text,
    optional_timestamp,
    payment_update,
    require_text,
)
from adapters.providers.payment_engine.vocabulary import PROVIDER_ID
from ledger.commands import ProviderBalanceReport, Translation

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adapters.providers.http_client import HttpResponse, ProviderHttp
    from adapters.providers.payment_engine.auth import Authenticator

TRANSACTIONS_PATH = "/api/v1/transactions"


class PaymentEngineClient:
    def __init__(
        self,
        http: ProviderHttp,
        authenticator: Authenticator,
        *,
        merchant_account_id: str,
        payment_type_id: str,
        withdrawal_payment_type_id: str,
        balance_account_ids: Sequence[str],
    ) -> None:
        self._http = http
        self._auth = authenticator
        self._merchant_account_id = merchant_account_id
        self._payment_type_id = payment_type_id
        self._withdrawal_payment_type_id = withdrawal_payment_type_id
        self._balance_account_ids = tuple(balance_account_ids)

    async def create_payment(
        self, request: CreatePaymentRequest, record: ExchangeRecorder
    ) -> CreatedPayment:
        # The payer's account is unknown when a deposit is requested, so `fromAccountId` is left
        # out; the callback URL is set in the provider's portal, not per request.
        metadata = _present(
            orderId=request.order_id,
            customerId=request.customer_id,
            payCurrency=request.pay_currency,
        )
        body = {
            "toAccountId": self._merchant_account_id,
            "paymentTypeId": self._payment_type_id,
            "amount": request.amount,
            "currencyCode": request.currency,
            "description": request.description or f"Payment for order {request.order_id}",
            "externalReference": request.order_id,
            "metadata": metadata,
        }
        answer = await self._send("create_payment", "POST", TRANSACTIONS_PATH, record, body)
        # The engine has no expiry of its own: the deadline is the ledger's, from the request.
        expires_at = (
            datetime.now(UTC) + timedelta(minutes=request.expires_in_minutes)
            if request.expires_in_minutes
            else None
        )
        view = self._view(answer, "create_payment")
        return CreatedPayment(
            provider_ref=view.transaction_id,
            expected_amount=view.amount if view.amount is not None else request.amount,
            expected_currency=view.currency or request.currency,
            expires_at=expires_at,
            provider_status=_status(answer),
        )

    async def create_withdrawal(
        self, request: CreateWithdrawalRequest, record: ExchangeRecorder
    ) -> CreatedWithdrawal:
        body = {
            "fromAccountId": self._merchant_account_id,
            "toAccountId": request.address,
            "paymentTypeId": self._withdrawal_payment_type_id,
            "amount": request.amount,
            "currencyCode": request.currency,
            "description": f"Withdrawal {request.request_id}",
            "externalReference": request.request_id,
            "metadata": _present(requestId=request.request_id, payCurrency=request.pay_currency),
        }
        answer = await self._send("create_withdrawal", "POST", TRANSACTIONS_PATH, record, body)
        view = self._view(answer, "create_withdrawal")
        return CreatedWithdrawal(
            provider_ref=view.transaction_id,
            provider_status=_status(answer),
            amount_to_send=view.amount,
        )

    async def find_payment(self, order_id: str, record: ExchangeRecorder) -> CreatedPayment | None:
        """The payment's transaction: into the merchant account, `externalReference` our order
        id. Later transfers for the same order (how the sandbox reads further deposits) carry
        the same reference, so the earliest created is the one our create made. Its `amount` is
        the one asked while it is pending (the guide's completed transaction says what arrived)."""
        query = {"externalReference": order_id, "toAccountId": self._merchant_account_id}
        found = await self._find("find_payment", query, record, outgoing=False)
        if found is None:
            return None
        view = self._view(found, "find_payment")
        if view.amount is None or view.currency is None:
            raise ProviderCallFailed(PROVIDER_ID, "find_payment", 200, "no amount or currencyCode")
        return CreatedPayment(
            provider_ref=view.transaction_id,
            expected_amount=view.amount,
            expected_currency=view.currency,
            expires_at=None,  # the engine has none: the ledger keeps the one it asked for
            provider_status=_status(found),
        )

    async def find_withdrawal(
        self, request_id: str, record: ExchangeRecorder
    ) -> CreatedWithdrawal | None:
        """The withdrawal's transaction: out of the merchant account, `externalReference` our
        request id."""
        query = {"externalReference": request_id, "fromAccountId": self._merchant_account_id}
        found = await self._find("find_withdrawal", query, record, outgoing=True)
        if found is None:
            return None
        view = self._view(found, "find_withdrawal")
        return CreatedWithdrawal(
            provider_ref=view.transaction_id,
            provider_status=_status(found),
            amount_to_send=view.amount,
        )

    async def query_payment(
        self, provider_ref: str, order_id: str, record: ExchangeRecorder
    ) -> Translation:
        path = f"{TRANSACTIONS_PATH}/{quote(provider_ref, safe='')}"
        answer = await self._send("query_payment", "GET", path, record)
        view = self._view(answer, "query_payment")
        # The answer names the order as the webhooks do; the caller's order id fills a gap.
        view = replace(view, order_reference=view.order_reference or order_id)
        try:
            update = payment_update(view, require_text(answer, "status"))
        except WebhookBodyInvalid as error:
            raise ProviderCallFailed(PROVIDER_ID, "query_payment", 200, str(error)) from None
        return Translation(
            dedupe_key=content_key(answer, prefix=f"{PROVIDER_ID}:query:"),
            facts=(update,),
            event_type="transaction.status",
        )

    async def fetch_balances(self, record: ExchangeRecorder) -> list[ProviderBalanceReport]:
        reports = []
        for account in self._balance_account_ids:
            path = f"/api/v1/accounts/{quote(account, safe='')}/balance"
            answer = await self._send("fetch_balances", "GET", path, record)
            try:
                available = optional_amount(answer, "availableBalance")
                currency = optional_text(answer, "currencyCode")
            except WebhookBodyInvalid as error:
                raise ProviderCallFailed(PROVIDER_ID, "fetch_balances", 200, str(error)) from None
            if available is None or currency is None:
                raise ProviderCallFailed(
                    PROVIDER_ID, "fetch_balances", 200, "answer without availableBalance"
                )
            reports.append(
                ProviderBalanceReport(
                    provider=PROVIDER_ID,
                    account=account,
                    currency=currency,
                    available=available,
                    reported_at=datetime.now(UTC),
                )
            )
        return reports

    async def close(self) -> None:
        await self._http.close()

    async def _find(
        self, operation: str, query: dict[str, str], record: ExchangeRecorder, *, outgoing: bool
    ) -> dict[str, Any] | None:
        """The earliest listed transaction with our reference, in the direction asked."""
        path = f"{TRANSACTIONS_PATH}?{urlencode(query)}"
        response = await self._respond(operation, "GET", path, record)
        listed = _listed(response, operation)
        reference = query["externalReference"]
        ours = [
            transaction
            for transaction in listed
            if reference in {transaction.get("externalReference"),
                             transaction.get("transactionReference")}
            and (transaction.get("fromAccountId") == self._merchant_account_id) == outgoing
        ]
        return min(ours, key=_created_at) if ours else None

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        record: ExchangeRecorder,
        json_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        response = await self._respond(operation, method, path, record, json_body)
        return _answer(response, operation)

    async def _respond(
        self,
        operation: str,
        method: str,
        path: str,
        record: ExchangeRecorder,
        json_body: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """One authorized call; a 401 renews the credentials once and tries again."""
        headers = await self._auth.headers(record)
        response = await self._http.request(
            operation, method, path, record, json_body=json_body, headers=headers
        )
        if response.status == 401 and self._auth.renewable:
            await self._auth.renew(headers, record)
            headers = await self._auth.headers(record)
            response = await self._http.request(
                operation, method, path, record, json_body=json_body, headers=headers
            )
        return response

    def _view(self, answer: dict[str, Any], operation: str) -> TransactionView:
        try:
            return TransactionView.read(
                answer, id_field="id", at=optional_timestamp(answer, "updatedAt")
            )
        except WebhookBodyInvalid as error:
            raise ProviderCallFailed(PROVIDER_ID, operation, 200, str(error)) from None


def _answer(response: HttpResponse, operation: str) -> dict[str, Any]:
    if not 200 <= response.status < 300:
        raise ProviderCallFailed(PROVIDER_ID, operation, response.status, describe_error(response))
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderCallFailed(PROVIDER_ID, operation, response.status, "answer is not an object")
    return body


def _listed(response: HttpResponse, operation: str) -> list[dict[str, Any]]:
    if not 200 <= response.status < 300:
        raise ProviderCallFailed(PROVIDER_ID, operation, response.status, describe_error(response))
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        lists = [body.get(key) for key in ("data", "items", "transactions", "results")]
        body = next((found for found in lists if isinstance(found, list)), None)
    if not isinstance(body, list):
        raise ProviderCallFailed(PROVIDER_ID, operation, response.status, "answer is not a list")
    return [item for item in body if isinstance(item, dict)]


def _created_at(transaction: dict[str, Any]) -> datetime:
    """When a listed transaction was created; undated (or unreadably dated) ones sort last."""
    try:
        moment = optional_timestamp(transaction, "createdAt")
    except WebhookBodyInvalid:
        moment = None
    return moment if moment is not None else datetime.max.replace(tzinfo=UTC)


def _status(answer: dict[str, Any]) -> str:
    status = answer.get("status")
    return status if isinstance(status, str) else ""


def _present(**values: str | None) -> dict[str, str]:
    return {key: value for key, value in values.items() if value is not None}

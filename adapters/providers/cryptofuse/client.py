"""Outbound calls to Cryptofuse: payments, payment status, balances and withdrawals.

Every call carries the OAuth2 bearer token; a 401 means the token was revoked or lapsed early,
so it is fetched again once and the call repeated once. Every attempt goes through ProviderHttp
and so is recorded.

The document offers no lookup by our ids: a payment's status is asked by Cryptofuse's own
`transaction_id` only (`POST /payments/status/`), although the create carries our `order_id`,
and a withdrawal can be neither listed nor queried. So `find_payment` and `find_withdrawal` are
not supported: a create whose answer was lost stays for a person to resolve.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
    WebhookBodyInvalid,
)
from adapters.providers.cryptofuse import fields
from adapters.providers.cryptofuse.auth import ClientCredentialsToken
from adapters.providers.cryptofuse.fields import PayloadShapeError
from adapters.providers.cryptofuse.settings import PROVIDER_ID, CryptofuseSettings
from adapters.providers.http_client import HttpResponse, ProviderHttp, RetryPolicy
from ledger.commands import ProviderBalanceReport, Translation

if TYPE_CHECKING:
    from collections.abc import Mapping
    from decimal import Decimal

    from adapters.providers.cryptofuse.translate import PayloadTranslator

BALANCE_ACCOUNT = f"{PROVIDER_ID}:main"


class CryptofuseClient:
    # What the methods below refuse whatever the request (ProviderAdapter.supports).
    unsupported_operations: ClassVar[frozenset[Operation]] = frozenset(
        {Operation.FIND_PAYMENT, Operation.FIND_WITHDRAWAL}
    )

    def __init__(
        self,
        settings: CryptofuseSettings,
        translator: PayloadTranslator,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._settings = settings
        self._translator = translator
        self._http = ProviderHttp(PROVIDER_ID, settings.base_url, policy)
        self._token = ClientCredentialsToken(self._http, settings.client_id, settings.client_secret)

    async def close(self) -> None:
        await self._http.close()

    async def create_payment(
        self, request: CreatePaymentRequest, record: ExchangeRecorder
    ) -> CreatedPayment:
        pay_currency = request.pay_currency or self._settings.default_pay_currency
        body: dict[str, Any] = {
            "amount": request.amount,
            "currency": pay_currency,
            "price_currency": request.currency,
            "callback_url": request.callback_url,
            "order_id": request.order_id,
            "order_description": request.description or f"Order {request.order_id}",
            # The ledger expects the amount quoted at creation: a fixed rate, fees on us.
            "is_fixed_rate": True,
            "is_fee_paid_by_user": False,
        }
        if request.expires_in_minutes is not None:
            body["expiry_minutes"] = request.expires_in_minutes  # else the provider's 30
        operation = "create_payment"
        response = await self._call(operation, "POST", "/payments/", record, json_body=body)
        try:
            return _created_payment(_object(response, operation), pay_currency)
        except PayloadShapeError as error:
            raise ProviderCallFailed(PROVIDER_ID, operation, response.status, str(error)) from None

    async def query_payment(
        self, provider_ref: str, order_id: str, record: ExchangeRecorder
    ) -> Translation:
        if not provider_ref:
            raise OperationNotSupported(
                f"cryptofuse looks payments up by transaction_id only (order {order_id})"
            )
        operation = "query_payment"
        response = await self._call(
            operation,
            "POST",
            "/payments/status/",
            record,
            json_body={"transaction_id": provider_ref},
        )
        try:
            return self._translator.translate_status(response.body, provider_ref)
        except WebhookBodyInvalid as error:
            raise ProviderCallFailed(PROVIDER_ID, operation, response.status, str(error)) from None

    async def find_payment(
        self,
        order_id: str,
        record: ExchangeRecorder,  # noqa: ARG002 - the contract's signature; nothing to ask
    ) -> CreatedPayment | None:
        raise OperationNotSupported(
            f"cryptofuse looks payments up by its transaction_id only, not by order {order_id}"
        )

    async def find_withdrawal(
        self,
        request_id: str,
        record: ExchangeRecorder,  # noqa: ARG002 - the contract's signature; nothing to ask
    ) -> CreatedWithdrawal | None:
        raise OperationNotSupported(
            f"cryptofuse documents no withdrawal list or query (request {request_id})"
        )

    async def fetch_balances(self, record: ExchangeRecorder) -> list[ProviderBalanceReport]:
        operation = "fetch_balances"
        response = await self._call(operation, "GET", "/user/balances/", record)
        try:
            return _balance_reports(_object(response, operation), datetime.now(UTC))
        except PayloadShapeError as error:
            raise ProviderCallFailed(PROVIDER_ID, operation, response.status, str(error)) from None

    async def create_withdrawal(
        self, request: CreateWithdrawalRequest, record: ExchangeRecorder
    ) -> CreatedWithdrawal:
        # The amount is in the crypto sent (`currency`); Cryptofuse has no separate pay currency.
        estimate = await self._estimate_withdrawal(request, record)
        operation = "create_withdrawal"
        response = await self._call(
            operation,
            "POST",
            "/withdrawal/",
            record,
            json_body={
                "amount": request.amount,
                "currency": request.currency,
                "address": request.address,
                "callback_url": request.callback_url,
            },
            # Not retried: the document offers no idempotency key for withdrawals, and repeating
            # a request whose answer was lost (502/504/timeout) could pay out twice.
            retry=False,
        )
        try:
            return _created_withdrawal(_object(response, operation), estimate)
        except PayloadShapeError as error:
            raise ProviderCallFailed(PROVIDER_ID, operation, response.status, str(error)) from None

    async def _estimate_withdrawal(
        self, request: CreateWithdrawalRequest, record: ExchangeRecorder
    ) -> Mapping[str, Any]:
        """The fee split (platform, network) in crypto, which only the estimate gives: the create
        answer's `fee` is documented as USD. Best effort: without it the split is unknown."""
        operation = "estimate_withdrawal"
        try:
            response = await self._call(
                operation,
                "POST",
                "/withdrawal/estimate/",
                record,
                json_body={
                    "amount": request.amount,
                    "currency": request.currency,
                    "address": request.address,
                },
            )
            return _object(response, operation)
        except ProviderCallFailed:
            return {}

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        record: ExchangeRecorder,
        *,
        json_body: Any = None,
        retry: bool = True,
    ) -> HttpResponse:
        """A 2xx answer, or ProviderCallFailed."""
        response = None
        for _ in range(2):
            token = await self._token.bearer(record)
            response = await self._http.request(
                operation,
                method,
                path,
                record,
                json_body=json_body,
                headers={"Authorization": f"Bearer {token}"},
                retry=retry,
            )
            if response.status != 401:
                break
            self._token.invalidate(token)
        assert response is not None
        if not 200 <= response.status < 300:
            detail = response.body[:500].decode("utf-8", "replace")
            raise ProviderCallFailed(PROVIDER_ID, operation, response.status, detail)
        return response


def _object(response: HttpResponse, operation: str) -> Mapping[str, Any]:
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ProviderCallFailed(
            PROVIDER_ID, operation, response.status, "answer is not a JSON object"
        )
    return parsed


def _created_payment(answer: Mapping[str, Any], pay_currency: str) -> CreatedPayment:
    provider_ref = fields.text(answer, "transaction_id")
    expected = fields.amount(answer, "amount_crypto")
    status = fields.text(answer, "status")
    if not provider_ref or expected is None or status is None:
        raise PayloadShapeError("answer needs transaction_id, amount_crypto and status")
    return CreatedPayment(
        provider_ref=provider_ref,
        # Kept as given ("100.00000000", 8 places even for 6-place USDT); the domain puts it on
        # the currency's scale and refuses it if non-zero digits would be lost.
        expected_amount=expected,
        expected_currency=fields.text(answer, "currency") or pay_currency,
        expires_at=fields.timestamp(answer, "expiry_time"),
        provider_status=status,
        pay_address=fields.text(answer, "blockchain_address"),
    )


def _balance_reports(
    answer: Mapping[str, Any], reported_at: datetime
) -> list[ProviderBalanceReport]:
    """`{account: {CUR: {amount, pending_amount, currency: {...}}}}`; `amount` is what the
    document calls "your available funds"."""
    reports = []
    for currency, entry in fields.mapping_or_empty(answer, "account").items():
        if not isinstance(entry, dict):
            raise PayloadShapeError(f"balance of {currency} is not an object")
        available = fields.amount(entry, "amount")
        if available is None:
            raise PayloadShapeError(f"balance of {currency} has no amount")
        reports.append(
            ProviderBalanceReport(
                provider=PROVIDER_ID,
                account=BALANCE_ACCOUNT,
                currency=currency,
                available=available,
                pending=fields.amount(entry, "pending_amount"),
                reported_at=reported_at,
            )
        )
    return reports


def _created_withdrawal(
    answer: Mapping[str, Any], estimate: Mapping[str, Any]
) -> CreatedWithdrawal:
    withdrawal_id = fields.text(answer, "withdrawal_id")
    status = fields.text(answer, "status")
    if not withdrawal_id or status is None:
        raise PayloadShapeError("answer needs withdrawal_id and status")
    to_send = fields.amount(answer, "amount")
    requested = fields.amount(answer, "requested_amount")
    fee_total = requested - to_send if requested is not None and to_send is not None else None
    platform, network = _fee_split(fee_total, estimate)
    return CreatedWithdrawal(
        provider_ref=withdrawal_id,
        provider_status=status,
        amount_to_send=to_send,
        fee_platform=platform,
        fee_network=network,
    )


def _fee_split(
    fee_total: Decimal | None, estimate: Mapping[str, Any]
) -> tuple[Decimal | None, Decimal | None]:
    """Platform and network fee in the withdrawal's crypto.

    The total is what the create answer withholds (requested_amount - amount, both crypto); its
    `fee` field is ignored because the document calls it USD. The estimate's platform fee (a
    percentage, so stable) splits the total; the network fee is the rest, so the parts always
    add up to what was withheld. Without an estimate the whole fee is booked as platform fee.
    """
    try:
        platform = fields.amount(estimate, "platform_fee")
        network = fields.amount(estimate, "network_fee")
    except PayloadShapeError:
        platform = network = None
    if fee_total is None:
        return platform, network
    if platform is None or not 0 <= platform <= fee_total:
        return fee_total, None
    return platform, fee_total - platform

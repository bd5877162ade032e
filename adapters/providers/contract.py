"""The shape every provider adapter has: webhook authentication and translation, and a client.

Each provider package (`adapters/providers/<name>/`) exports a `build_adapter(settings, http)`
returning a `ProviderAdapter`. The ingestion service and the HTTP API speak only this contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from ledger.commands import ProviderBalanceReport, Translation
from ledger.deliveries import Verification
from ledger.money import is_registered, loads_exact


class TokenScope(StrEnum):
    """Where the unguessable callback-URL token of an unsigned provider comes from."""

    NONE = "none"  # the provider signs its deliveries
    PROVIDER = "provider"  # one configured webhook_token (CoinCoin: URL set once in a portal)
    PER_SUBJECT = "per_subject"  # one token per payment/withdrawal (LiPayKripto webhookUrl)


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """A webhook exactly as it arrived. `headers` keys are lower-case."""

    provider: str
    body: bytes
    headers: Mapping[str, str]
    path_token: str | None = None
    received_at: datetime | None = None


class WebhookBodyInvalid(Exception):
    """The body is not JSON, or not this provider's shape (400). `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def parse_webhook_object(body: bytes) -> dict[str, Any]:
    """A delivery body as a JSON object with exact amounts, else WebhookBodyInvalid: `not_json`
    (not UTF-8, not JSON, NaN/Infinity, nested past the parser's depth) or `wrong_shape`."""
    try:
        parsed = loads_exact(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise WebhookBodyInvalid("not_json", str(error)) from None
    if not isinstance(parsed, dict):
        raise WebhookBodyInvalid("wrong_shape", "body is not a JSON object")
    return parsed


@dataclass(frozen=True, slots=True)
class CreatePaymentRequest:
    order_id: str
    amount: Decimal  # the price as asked, in `currency`
    currency: str
    callback_url: str
    pay_currency: str | None = None
    expires_in_minutes: int | None = None
    description: str = ""
    customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedPayment:
    provider_ref: str  # the provider's id for the payment
    expected_amount: Decimal  # what must arrive, per the provider's response
    expected_currency: str
    expires_at: datetime | None
    provider_status: str
    pay_address: str | None = None
    payment_url: str | None = None


@dataclass(frozen=True, slots=True)
class CreateWithdrawalRequest:
    request_id: str
    amount: Decimal
    currency: str
    address: str
    callback_url: str
    pay_currency: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedWithdrawal:
    provider_ref: str
    provider_status: str
    amount_to_send: Decimal | None = None
    fee_platform: Decimal | None = None
    fee_network: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ProviderExchange:
    """One outbound HTTP attempt, recorded as an event whatever its outcome. Secrets redacted."""

    provider: str
    operation: str  # e.g. "create_payment", "login"
    method: str
    url: str
    attempt: int
    request_body: str | None
    status: int | None  # None when no response came (timeout, connection error)
    response_body: str | None
    error: str | None
    duration_ms: int
    at: datetime
    request_headers: dict[str, str] = field(default_factory=dict)


class ExchangeRecorder(Protocol):
    async def __call__(self, exchange: ProviderExchange) -> None: ...


class ProviderCallFailed(Exception):
    """An outbound call ended without a usable answer (after retries where they apply)."""

    def __init__(self, provider: str, operation: str, status: int | None, detail: str) -> None:
        super().__init__(f"{provider} {operation} failed ({status}): {detail}")
        self.provider = provider
        self.operation = operation
        self.status = status
        self.detail = detail


class OperationNotSupported(Exception):
    """The provider's document offers no such operation (e.g. no status query), or not for
    this request (e.g. CoinPay paid in another currency than it prices in)."""


class Operation(StrEnum):
    """The outbound calls of a ProviderClient, for asking beforehand whether it offers one."""

    CREATE_PAYMENT = "create_payment"
    CREATE_WITHDRAWAL = "create_withdrawal"
    QUERY_PAYMENT = "query_payment"
    FETCH_BALANCES = "fetch_balances"
    FIND_PAYMENT = "find_payment"
    FIND_WITHDRAWAL = "find_withdrawal"


class ProviderClient(Protocol):
    async def create_payment(
        self, request: CreatePaymentRequest, record: ExchangeRecorder
    ) -> CreatedPayment: ...

    async def create_withdrawal(
        self, request: CreateWithdrawalRequest, record: ExchangeRecorder
    ) -> CreatedWithdrawal: ...

    async def query_payment(
        self, provider_ref: str, order_id: str, record: ExchangeRecorder
    ) -> Translation:
        """Asks the provider for the payment's state.

        Raises OperationNotSupported where the provider documents no status query."""
        ...

    async def fetch_balances(self, record: ExchangeRecorder) -> list[ProviderBalanceReport]:
        """Provider-reported balances; raises OperationNotSupported if the provider has none."""
        ...

    async def find_payment(self, order_id: str, record: ExchangeRecorder) -> CreatedPayment | None:
        """The payment the provider holds for our order id (as its create answer would have
        said it), None when it holds none: how the ledger resolves a create whose answer was
        lost. Raises OperationNotSupported where the document offers no lookup by our id."""
        ...

    async def find_withdrawal(
        self, request_id: str, record: ExchangeRecorder
    ) -> CreatedWithdrawal | None:
        """The withdrawal the provider holds for our request id, None when it holds none.
        Raises OperationNotSupported where the document offers no lookup by our id."""
        ...

    async def close(self) -> None: ...


class WebhookAdapter(Protocol):
    token_scope: TokenScope

    def authenticate(self, delivery: WebhookDelivery) -> Verification:
        """Checks the signature/token/client id. May raise WebhookBodyInvalid where the scheme
        needs the parsed body first (CoinPay signs re-serialized JSON)."""
        ...

    def translate(self, delivery: WebhookDelivery) -> Translation:
        """Turns the body into ledger facts; raises WebhookBodyInvalid for a wrong shape."""
        ...


def each_paid_in_itself(codes: Iterable[str]) -> dict[str, frozenset[str]]:
    """Currencies each paid (or sent) in itself: a pay_currency, if named, must be the same."""
    return {code: frozenset({code}) for code in codes}


@dataclass(frozen=True, slots=True)
class ProviderCurrencies:
    """What a provider prices in, pays in and pays out in, as its adapter declares it, so that
    the API refuses (422 `currency-not-supported`) a request the provider cannot take before
    anything is recorded, reserved or sent.

    `payments` maps each currency a payment may be priced in (`currency`) to the pay currencies
    the merchant may name for it (`pay_currency`; empty: none can be named, e.g. the customer
    picks the coin on the provider's page). `withdrawals` does the same for a withdrawal's amount
    currency and the crypto sent. Every priced or withdrawn code must be registered in
    `ledger.money` (its scale bounds the amount's fraction digits)."""

    payments: Mapping[str, frozenset[str]]
    withdrawals: Mapping[str, frozenset[str]]
    # The pay currency the client asks for when a payment names none (Cryptofuse's setting):
    # it must then be one the price currency may be paid in.
    default_pay_currency: str | None = None
    # The provider needs the crypto sent named (LiPayKripto `coin_type`).
    withdrawal_pay_required: bool = False
    # The smallest price the provider takes, in any of its price currencies (CoinCoin's 10).
    payment_minimum: Decimal | None = None

    def __post_init__(self) -> None:
        unregistered = sorted(
            code for code in (*self.payments, *self.withdrawals) if not is_registered(code)
        )
        if unregistered:
            raise ValueError(f"currencies without a registered scale: {unregistered}")
        # Read-only views: one declaration is shared by every request.
        object.__setattr__(self, "payments", MappingProxyType(dict(self.payments)))
        object.__setattr__(self, "withdrawals", MappingProxyType(dict(self.withdrawals)))


@dataclass(frozen=True, slots=True)
class ProviderAdapter:
    name: str
    webhooks: WebhookAdapter
    client: ProviderClient
    settings: Mapping[str, Any]
    currencies: ProviderCurrencies

    def supports(self, operation: Operation) -> bool:
        """False when the client says (`unsupported_operations`, a frozenset of Operation) that
        its provider offers no such call at all, so that nothing is recorded for a request that
        cannot go out; True otherwise. The call may still raise OperationNotSupported for one
        request it cannot take."""
        unsupported: frozenset[Operation] = getattr(
            self.client, "unsupported_operations", frozenset()
        )
        return operation not in unsupported

"""Request bodies of the internal API, validated at the edge (API.md "Amounts in requests",
"Malformed internal requests").

`read_payment_request` and `read_withdrawal_request` take the raw body and the configured
provider adapters, and return a typed request or raise ProblemError: 400 for a body that is not
a request at all, 422 for one that breaks a rule (adapters/http/rules.py names each). Everything
checked here is checked before anything is recorded, reserved or sent to a provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.http.amounts import fraction_digits
from adapters.http.fields import (
    Address,
    Amount,
    CurrencyCode,
    ExpiresInMinutes,
    Identifier,
    Metadata,
    Provider,
)
from adapters.http.json_body import parse_object
from adapters.http.rules import refusal_from, refuse, shown
from adapters.providers.contract import Operation, ProviderAdapter, ProviderCurrencies
from ledger.money import currency_scale


class _Request(BaseModel):
    # Strict: a JSON number is not a string, true is not an integer; every field's own
    # validator sees the raw value first and names the rule it breaks.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Model = TypeVar("Model", bound=_Request)


class PaymentRequest(_Request):
    provider: Provider
    order_id: Identifier
    amount: Amount
    currency: CurrencyCode
    pay_currency: CurrencyCode | None = None
    expires_in_minutes: ExpiresInMinutes | None = None
    customer_id: Identifier | None = None
    metadata: Metadata | None = None


class WithdrawalRequest(_Request):
    provider: Provider
    request_id: Identifier
    amount: Amount
    currency: CurrencyCode
    address: Address
    pay_currency: CurrencyCode | None = None
    customer_id: Identifier | None = None


def read_payment_request(raw: bytes, adapters: Mapping[str, ProviderAdapter]) -> PaymentRequest:
    request = _validated(raw, PaymentRequest)
    adapter = _adapter(adapters, request.provider, Operation.CREATE_PAYMENT)
    terms = adapter.currencies
    pay_currencies = _currency(adapter.name, "payment", request.currency, terms.payments)
    if request.pay_currency is not None:
        _pay_currency(adapter.name, request.currency, request.pay_currency, pay_currencies)
    elif terms.default_pay_currency not in (None, *pay_currencies):
        detail = (
            f"{adapter.name} asks for {terms.default_pay_currency} when no pay_currency is named,"
            f" and a price in {request.currency} is paid in one of {sorted(pay_currencies)}"
        )
        raise refuse("pay-currency-required", detail, supported=sorted(pay_currencies))
    _fraction(request.amount, request.currency)
    _minimum(adapter.name, request.amount, request.currency, terms)
    return request


def read_withdrawal_request(
    raw: bytes, adapters: Mapping[str, ProviderAdapter]
) -> WithdrawalRequest:
    request = _validated(raw, WithdrawalRequest)
    adapter = _adapter(adapters, request.provider, Operation.CREATE_WITHDRAWAL)
    terms = adapter.currencies
    pay_currencies = _currency(adapter.name, "withdrawal", request.currency, terms.withdrawals)
    if request.pay_currency is not None:
        _pay_currency(adapter.name, request.currency, request.pay_currency, pay_currencies)
    elif terms.withdrawal_pay_required:
        detail = (
            f"{adapter.name} needs the crypto sent named: pay_currency one of"
            f" {sorted(pay_currencies)}"
        )
        raise refuse("pay-currency-required", detail, supported=sorted(pay_currencies))
    _fraction(request.amount, request.currency)
    return request


def _validated(raw: bytes, model: type[Model]) -> Model:
    body = parse_object(raw)
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise refusal_from(error, "field") from None


def _adapter(
    adapters: Mapping[str, ProviderAdapter], provider: str, operation: Operation
) -> ProviderAdapter:
    adapter = adapters.get(provider)
    if adapter is None:
        detail = f"provider {shown(provider)} is not configured"
        raise refuse("provider-not-configured", detail, configured=sorted(adapters))
    if not adapter.supports(operation):
        detail = f"{provider} offers no {operation.value.replace('_', ' ')}"
        raise refuse("operation-not-supported", detail)
    return adapter


def _currency(
    provider: str, kind: str, currency: str, supported: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """The pay currencies `currency` may be paid in at the provider; refused if it has none."""
    pay_currencies = supported.get(currency)
    if pay_currencies is None:
        detail = f"{provider} takes no {kind} in {shown(currency)}"
        raise refuse(
            "currency-not-supported", detail, field="currency", supported=sorted(supported)
        )
    return pay_currencies


def _pay_currency(
    provider: str, currency: str, pay_currency: str, pay_currencies: frozenset[str]
) -> None:
    if pay_currency not in pay_currencies:
        named = sorted(pay_currencies) or "none can be named"
        detail = f"{provider} cannot pay {shown(pay_currency)} for {currency}: {named}"
        raise refuse(
            "currency-not-supported", detail, field="pay_currency", supported=sorted(pay_currencies)
        )


def _fraction(amount: Decimal, currency: str) -> None:
    scale = currency_scale(currency)  # declared currencies are registered (ProviderCurrencies)
    if fraction_digits(amount) > scale:
        detail = f"amount has {fraction_digits(amount)} fraction digits; {currency} has {scale}"
        raise refuse("amount-too-many-fraction-digits", detail)


def _minimum(provider: str, amount: Decimal, currency: str, terms: ProviderCurrencies) -> None:
    minimum = terms.payment_minimum
    if minimum is not None and amount < minimum:
        detail = f"{provider} takes prices of at least {minimum} {currency}"
        raise refuse("amount-below-provider-minimum", detail, minimum=str(minimum))


__all__ = ["PaymentRequest", "WithdrawalRequest", "read_payment_request", "read_withdrawal_request"]

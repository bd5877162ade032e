"""Request bodies of the internal API, validated at the edge.

(Interim: the models as they were in app.py; the validation layer replaces this module.)
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.providers.contract import ProviderAdapter
from ledger.money import loads_exact, to_decimal


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("amount", mode="before", check_fields=False)
    @classmethod
    def _exact_amount(cls, value: Any) -> Decimal:
        return to_decimal(value)


class PaymentRequest(_Request):
    provider: str
    order_id: str = Field(min_length=1, max_length=128)
    amount: Decimal
    currency: str
    pay_currency: str | None = None
    expires_in_minutes: int | None = Field(default=None, gt=0, le=7 * 24 * 60)
    customer_id: str | None = None
    metadata: dict[str, Any] | None = None


class WithdrawalRequest(_Request):
    provider: str
    request_id: str = Field(min_length=1, max_length=128)
    amount: Decimal
    currency: str
    address: str = Field(min_length=1)
    pay_currency: str | None = None
    customer_id: str | None = None




def _read(raw: bytes, model: type[BaseModel]) -> Any:
    try:
        parsed = loads_exact(raw)
    except (ValueError, RecursionError) as error:
        raise web.HTTPBadRequest(reason="Bad Request", text=f"body is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise web.HTTPBadRequest(reason="Bad Request", text="body must be a JSON object")
    try:
        return model.model_validate(parsed)
    except ValidationError as error:
        raise web.HTTPUnprocessableEntity(reason="Unprocessable Entity", text=str(error)) from None


def read_payment_request(raw: bytes, adapters: Mapping[str, ProviderAdapter]) -> PaymentRequest:  # noqa: ARG001
    return _read(raw, PaymentRequest)  # type: ignore[no-any-return]


def read_withdrawal_request(raw: bytes, adapters: Mapping[str, ProviderAdapter]) -> WithdrawalRequest:  # noqa: ARG001
    return _read(raw, WithdrawalRequest)  # type: ignore[no-any-return]

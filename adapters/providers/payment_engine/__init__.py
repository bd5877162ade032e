"""Payment Engine: a generic transaction API (OAuth2-style login or API key, signed webhooks).

Settings (the `[providers.payment_engine]` table): `base_url`, `username` + `password` or
`api_key`, `webhook_secret`; optional `merchant_account_id` (default "merchant"),
`payment_type_id` (default "crypto_deposit"), `withdrawal_payment_type_id` (default
"crypto_withdrawal") and `balance_account_ids` (default: the merchant account).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.providers.contract import ProviderAdapter
from adapters.providers.http_client import ProviderHttp, RetryPolicy
from adapters.providers.payment_engine.auth import (
    ApiKeyAuthenticator,
    Authenticator,
    LoginAuthenticator,
)
from adapters.providers.payment_engine.client import PaymentEngineClient
from adapters.providers.payment_engine.vocabulary import PROVIDER_ID
from adapters.providers.payment_engine.webhooks import PaymentEngineWebhooks

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PROVIDER_ID", "build_adapter"]

DEFAULT_MERCHANT_ACCOUNT_ID = "merchant"
DEFAULT_PAYMENT_TYPE_ID = "crypto_deposit"
DEFAULT_WITHDRAWAL_PAYMENT_TYPE_ID = "crypto_withdrawal"


def build_adapter(
    settings: Mapping[str, Any], *, policy: RetryPolicy | None = None
) -> ProviderAdapter:
    merchant_account_id = _text(settings, "merchant_account_id", DEFAULT_MERCHANT_ACCOUNT_ID)
    http = ProviderHttp(PROVIDER_ID, _text(settings, "base_url"), policy)
    balance_accounts = settings.get("balance_account_ids") or [merchant_account_id]
    if isinstance(balance_accounts, str):  # from an environment override: comma-separated
        balance_accounts = [a.strip() for a in balance_accounts.split(",") if a.strip()]
    if not balance_accounts or not all(isinstance(a, str) and a for a in balance_accounts):
        raise ValueError("payment_engine balance_account_ids must be a list of account ids")
    client = PaymentEngineClient(
        http,
        _authenticator(settings, http),
        merchant_account_id=merchant_account_id,
        payment_type_id=_text(settings, "payment_type_id", DEFAULT_PAYMENT_TYPE_ID),
        withdrawal_payment_type_id=_text(
            settings, "withdrawal_payment_type_id", DEFAULT_WITHDRAWAL_PAYMENT_TYPE_ID
        ),
        balance_account_ids=list(balance_accounts),
    )
    webhooks = PaymentEngineWebhooks(_text(settings, "webhook_secret"), merchant_account_id)
    return ProviderAdapter(name=PROVIDER_ID, webhooks=webhooks, client=client, settings=settings)


def _authenticator(settings: Mapping[str, Any], http: ProviderHttp) -> Authenticator:
    # The document offers the API key "for server-to-server integrations": when one is
    # configured it wins, and no login happens.
    if settings.get("api_key"):
        return ApiKeyAuthenticator(_text(settings, "api_key"))
    return LoginAuthenticator(http, _text(settings, "username"), _text(settings, "password"))


def _text(settings: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = settings.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"payment_engine setting {key!r} must be a non-empty string")
    return value

"""Payment Engine: a generic transaction API (OAuth2-style login or API key, signed webhooks).

Settings (the `[providers.payment_engine]` table): `base_url`, `username` + `password` or
`api_key`, `webhook_secret`; optional `merchant_account_id` (default "merchant"),
`payment_type_id` (default "crypto_deposit"), `withdrawal_payment_type_id` (default
"crypto_withdrawal"), `balance_account_ids` (default: the merchant account) and `currencies`
(default: DEFAULT_CURRENCIES).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.providers.contract import ProviderAdapter, ProviderCurrencies, each_paid_in_itself
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
    from collections.abc import Mapping, Sequence

__all__ = ["PROVIDER_ID", "build_adapter"]

DEFAULT_MERCHANT_ACCOUNT_ID = "merchant"
DEFAULT_PAYMENT_TYPE_ID = "crypto_deposit"
DEFAULT_WITHDRAWAL_PAYMENT_TYPE_ID = "crypto_withdrawal"
# The guide is a generic transaction API whose examples are in USD (`currencyCode`); which
# currencies an account holds is its operator's configuration, so it is a setting. The default
# is what this ledger's runs take through it: USD and EUR, and ETH, USDT and USDC. Anything else
# (BTC, say) must be configured before it is accepted. A transaction is in one currency, so a
# pay_currency, if named, must be that currency.
DEFAULT_CURRENCIES = ("USD", "EUR", "ETH", "USDT", "USDC")


def build_adapter(
    settings: Mapping[str, Any], *, policy: RetryPolicy | None = None
) -> ProviderAdapter:
    merchant_account_id = _text(settings, "merchant_account_id", DEFAULT_MERCHANT_ACCOUNT_ID)
    http = ProviderHttp(PROVIDER_ID, _text(settings, "base_url"), policy)
    balance_accounts = _text_list(settings, "balance_account_ids", [merchant_account_id])
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
    return ProviderAdapter(
        name=PROVIDER_ID,
        webhooks=webhooks,
        client=client,
        settings=settings,
        currencies=_currencies(settings),
    )


def _currencies(settings: Mapping[str, Any]) -> ProviderCurrencies:
    codes = _text_list(settings, "currencies", DEFAULT_CURRENCIES)
    each = each_paid_in_itself(codes)
    return ProviderCurrencies(payments=each, withdrawals=each)


def _authenticator(settings: Mapping[str, Any], http: ProviderHttp) -> Authenticator:
    # The document offers the API key "for server-to-server integrations": when one is
    # configured it wins, and no login happens.
    if settings.get("api_key"):
        return ApiKeyAuthenticator(_text(settings, "api_key"))
    return LoginAuthenticator(http, _text(settings, "username"), _text(settings, "password"))


def _text_list(settings: Mapping[str, Any], key: str, default: Sequence[str]) -> list[str]:
    """A list of non-empty strings; an environment override gives one comma-separated."""
    values = settings.get(key) or default
    if isinstance(values, str):
        values = [value.strip() for value in values.split(",") if value.strip()]
    if not values or not all(isinstance(value, str) and value for value in values):
        raise ValueError(f"payment_engine {key} must be a list of non-empty strings")
    return list(values)


def _text(settings: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = settings.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"payment_engine setting {key!r} must be a non-empty string")
    return value

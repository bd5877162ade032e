"""Cryptofuse: OAuth2 client credentials, raw-body HMAC-SHA256 webhooks, crypto priced in USD."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.providers.contract import ProviderAdapter, ProviderCurrencies, each_paid_in_itself
from adapters.providers.cryptofuse.client import CryptofuseClient
from adapters.providers.cryptofuse.settings import PROVIDER_ID, CryptofuseSettings
from adapters.providers.cryptofuse.translate import PayloadTranslator
from adapters.providers.cryptofuse.webhooks import CryptofuseWebhooks

if TYPE_CHECKING:
    from collections.abc import Mapping

    from adapters.providers.http_client import RetryPolicy

__all__ = ["PROVIDER_ID", "build_adapter"]

# The document lists an account's currencies at GET /currencies/ (per account, "ensure currency is
# enabled for your account") and shows USDTTRC20 only; these are the ones its examples and the
# sandbox name. Add a code here (and to ledger.money's registry) once the account has it.
_CRYPTO = ("USDTTRC20", "USDTERC20", "USDCERC20", "TRX", "BTC", "ETH")


def _currencies(default_pay_currency: str) -> ProviderCurrencies:
    """A payment is priced in USD (the document's `price_currency`) and paid in any of its
    cryptos (`currency`, our pay_currency), or priced in one crypto and paid in that same crypto:
    Cryptofuse converts from USD only. A withdrawal's amount is in the crypto sent."""
    crypto = frozenset({*_CRYPTO, default_pay_currency})
    return ProviderCurrencies(
        payments={"USD": crypto, **each_paid_in_itself(crypto)},
        withdrawals=each_paid_in_itself(crypto),
        default_pay_currency=default_pay_currency,
    )


def build_adapter(
    settings: Mapping[str, Any], *, policy: RetryPolicy | None = None
) -> ProviderAdapter:
    """`settings` is the `[providers.cryptofuse]` table: base_url, client_id, client_secret,
    webhook_secret (optional: default_pay_currency, confirmations_required)."""
    parsed = CryptofuseSettings.from_mapping(settings)
    translator = PayloadTranslator(parsed.default_pay_currency, parsed.confirmations_required)
    return ProviderAdapter(
        name=PROVIDER_ID,
        webhooks=CryptofuseWebhooks(parsed.webhook_secret, translator),
        client=CryptofuseClient(parsed, translator, policy),
        settings=settings,
        currencies=_currencies(parsed.default_pay_currency),
    )

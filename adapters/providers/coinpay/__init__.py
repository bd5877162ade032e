"""CoinPay: JWT-authenticated API, webhooks signed over re-serialized JSON (`x-signature`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.providers.coinpay.client import CoinPayClient
from adapters.providers.coinpay.webhooks import PROVIDER_ID, CoinPayWebhooks
from adapters.providers.contract import ProviderAdapter, ProviderCurrencies, each_paid_in_itself
from adapters.providers.http_client import ProviderHttp

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PROVIDER_ID", "CoinPayClient", "CoinPayWebhooks", "build_adapter"]

_REQUIRED_SETTINGS = ("base_url", "username", "password", "webhook_secret")

# CoinPay's guide lists no currencies: its examples price and pay in USDC (the default it shows)
# on Polygon, and its API has no way to price in one currency and be paid in another (the client
# refuses such a pay_currency). A merchant prices in the stablecoins its CoinPay wallet holds,
# USDC and USDT, never in fiat (USD at CoinPay would be taken as a token code it does not have);
# a payout spends wallet funds, so it is in one of the same. Add a code here once the account
# holds it.
_STABLECOINS = ("USDC", "USDT")
CURRENCIES = ProviderCurrencies(
    payments=each_paid_in_itself(_STABLECOINS), withdrawals=each_paid_in_itself(_STABLECOINS)
)


def build_adapter(settings: Mapping[str, Any], http: ProviderHttp | None = None) -> ProviderAdapter:
    """Builds the adapter from the `[providers.coinpay]` table (base_url, username, password,
    webhook_secret). `http` lets the caller pass its own transport (e.g. a test retry policy)."""
    missing = [key for key in _REQUIRED_SETTINGS if not settings.get(key)]
    if missing:
        raise ValueError(f"coinpay settings lack {', '.join(missing)}")
    transport = http or ProviderHttp(PROVIDER_ID, str(settings["base_url"]))
    return ProviderAdapter(
        name=PROVIDER_ID,
        webhooks=CoinPayWebhooks(str(settings["webhook_secret"])),
        client=CoinPayClient(transport, str(settings["username"]), str(settings["password"])),
        settings=settings,
        currencies=CURRENCIES,
    )

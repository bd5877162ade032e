"""CoinCoin: HMAC-SHA1 signed order creation, unsigned cumulative webhooks to a portal URL.

Settings (the `[providers.coincoin]` table): `base_url` is the document's "API path" including
its version (https://api.coin2.cc/v1), `app_id` and `secret_key` are the API key pair, and
`webhook_token` is the token the ledger put in the callback URL entered in CoinCoin's portal.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from adapters.providers.coincoin.client import CoinCoinClient
from adapters.providers.coincoin.protocol import MINIMUM_PRICE, PROVIDER_ID
from adapters.providers.coincoin.webhooks import CoinCoinWebhooks
from adapters.providers.contract import ProviderAdapter, ProviderCurrencies, each_paid_in_itself
from adapters.providers.http_client import ProviderHttp

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PROVIDER_ID", "build_adapter"]

_REQUIRED_SETTINGS = ("base_url", "app_id", "secret_key", "webhook_token")

# An order takes a bare `price` and answers in the coin it collects: USDT on TRON in every example
# of CoinCoin's document (its webhook comment also names eth, trx, btc and bnb, chosen in its
# portal, never per order). So a price is in USDT and is paid in USDT; no pay currency can be
# asked for, and the document's "Minimum 10" price is refused before anything is recorded.
# CoinCoin documents no withdrawal (`supports` refuses one first); were it to offer one, it
# would pay out the coin it collects.
CURRENCIES = ProviderCurrencies(
    payments=each_paid_in_itself(["USDT"]),
    withdrawals=each_paid_in_itself(["USDT"]),
    payment_minimum=Decimal(MINIMUM_PRICE),
)


def build_adapter(settings: Mapping[str, Any], http: ProviderHttp | None = None) -> ProviderAdapter:
    missing = [key for key in _REQUIRED_SETTINGS if not settings.get(key)]
    if missing:
        raise ValueError(f"providers.coincoin is missing {', '.join(missing)}")
    client = CoinCoinClient(
        http or ProviderHttp(PROVIDER_ID, str(settings["base_url"])),
        str(settings["app_id"]),
        str(settings["secret_key"]),
    )
    return ProviderAdapter(
        name=PROVIDER_ID,
        webhooks=CoinCoinWebhooks(str(settings["webhook_token"])),
        client=client,
        settings=settings,
        currencies=CURRENCIES,
    )

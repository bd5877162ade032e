"""LiPayKripto: TRY-priced crypto payments and withdrawals, unsigned webhooks.

Settings (the `[providers.lipaykripto]` table): base_url, client_id, client_secret, hmac_secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.providers.contract import ProviderAdapter, ProviderCurrencies
from adapters.providers.lipaykripto.client import COIN_TYPES, LiPayKriptoClient
from adapters.providers.lipaykripto.webhooks import LiPayKriptoWebhooks

if TYPE_CHECKING:
    from collections.abc import Mapping

    from adapters.providers.http_client import RetryPolicy

PROVIDER_ID = "lipaykripto"
SETTING_KEYS = ("base_url", "client_id", "client_secret", "hmac_secret")

# LiPayKripto takes amounts in TRY only. A payment's coin is chosen by the customer on its payment
# page, so no pay_currency can be asked for; a withdrawal must name the coin sent (`coin_type`:
# TRX, USDT or ETH), which is checked before its funds are reserved.
CURRENCIES = ProviderCurrencies(
    payments={"TRY": frozenset()},
    withdrawals={"TRY": COIN_TYPES},
    withdrawal_pay_required=True,
)

__all__ = ["PROVIDER_ID", "LiPayKriptoClient", "LiPayKriptoWebhooks", "build_adapter"]


def build_adapter(
    settings: Mapping[str, Any], *, retry_policy: RetryPolicy | None = None
) -> ProviderAdapter:
    missing = [key for key in SETTING_KEYS if not settings.get(key)]
    if missing:
        raise ValueError(f"providers.{PROVIDER_ID} lacks {', '.join(missing)}")
    client = LiPayKriptoClient(
        base_url=str(settings["base_url"]),
        client_id=str(settings["client_id"]),
        client_secret=str(settings["client_secret"]),
        hmac_secret=str(settings["hmac_secret"]),
        policy=retry_policy,
    )
    return ProviderAdapter(
        name=PROVIDER_ID,
        webhooks=LiPayKriptoWebhooks(client_id=str(settings["client_id"])),
        client=client,
        settings=settings,
        currencies=CURRENCIES,
    )

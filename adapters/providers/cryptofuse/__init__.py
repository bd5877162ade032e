"""Cryptofuse: OAuth2 client credentials, raw-body HMAC-SHA256 webhooks, crypto priced in USD."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapters.providers.contract import ProviderAdapter
from adapters.providers.cryptofuse.client import CryptofuseClient
from adapters.providers.cryptofuse.settings import PROVIDER_ID, CryptofuseSettings
from adapters.providers.cryptofuse.translate import PayloadTranslator
from adapters.providers.cryptofuse.webhooks import CryptofuseWebhooks

if TYPE_CHECKING:
    from collections.abc import Mapping

    from adapters.providers.http_client import RetryPolicy

__all__ = ["PROVIDER_ID", "build_adapter"]


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
    )

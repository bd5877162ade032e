"""Cryptofuse configuration: the `[providers.cryptofuse]` table of API.md, read once and checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

PROVIDER_ID = "cryptofuse"

# The document's own default and only example crypto: a payment request without `pay_currency`
# is paid in it, and a delivery that names no currency (the document's "completed" example has no
# `currency` field) is taken to be in it.
DEFAULT_PAY_CURRENCY = "USDTTRC20"

# The document never says how many confirmations make a deposit final. Its "completed" examples
# (payment and withdrawal) both show 20, so 20 is the default; the table may override it.
DEFAULT_CONFIRMATIONS_REQUIRED = 20


@dataclass(frozen=True, slots=True)
class CryptofuseSettings:
    base_url: str
    client_id: str
    client_secret: str
    webhook_secret: str
    default_pay_currency: str = DEFAULT_PAY_CURRENCY
    confirmations_required: int = DEFAULT_CONFIRMATIONS_REQUIRED

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> CryptofuseSettings:
        missing = [
            key
            for key in ("base_url", "client_id", "client_secret", "webhook_secret")
            if not settings.get(key)
        ]
        if missing:
            raise ValueError(f"cryptofuse settings lack {', '.join(missing)}")
        confirmations = int(settings.get("confirmations_required", DEFAULT_CONFIRMATIONS_REQUIRED))
        if confirmations < 1:
            raise ValueError("cryptofuse confirmations_required must be at least 1")
        return cls(
            base_url=str(settings["base_url"]),
            client_id=str(settings["client_id"]),
            client_secret=str(settings["client_secret"]),
            webhook_secret=str(settings["webhook_secret"]),
            default_pay_currency=str(settings.get("default_pay_currency", DEFAULT_PAY_CURRENCY)),
            confirmations_required=confirmations,
        )

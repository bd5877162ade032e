"""The withdrawal request signature LiPayKripto's document describes.

The signing input is the plain concatenation, in this order and with no separator, of
try_amount + clientId + requestId + wallet_address + coin_type + webhook_url + created_at.
The document's example writes the amount with two decimals ("100.00") and the time as ISO 8601
with a `Z` ("2025-04-20T14:30:00Z"); both formats are fixed here so the body and the signed
string can never disagree.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ledger.money import quantize_exact

if TYPE_CHECKING:
    from decimal import Decimal

TRY_CURRENCY = "TRY"


def format_try_amount(amount: Decimal) -> str:
    """TRY with exactly two decimals; refuses an amount with more precision than kuruş."""
    return format(quantize_exact(amount, TRY_CURRENCY), "f")


def format_created_at(moment: datetime) -> str:
    """ISO 8601 in UTC to the second, with `Z`, as in the document's example."""
    if moment.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class WithdrawalSigningFields:
    try_amount: str  # already formatted with two decimals
    client_id: str
    request_id: str
    wallet_address: str
    coin_type: str
    webhook_url: str
    created_at: str  # already formatted as ISO 8601 with Z

    def signing_input(self) -> str:
        return (
            self.try_amount
            + self.client_id
            + self.request_id
            + self.wallet_address
            + self.coin_type
            + self.webhook_url
            + self.created_at
        )


def sign_withdrawal(fields: WithdrawalSigningFields, hmac_secret: str) -> str:
    """Hex HMAC-SHA256 of the signing input under the merchant's HMAC secret."""
    return hmac.new(
        hmac_secret.encode("utf-8"), fields.signing_input().encode("utf-8"), hashlib.sha256
    ).hexdigest()

"""CoinCoin's wire rules that both the client and the sandbox follow.

- Every private request carries CC-APP-ID, CC-TIMESPAN (milliseconds since the epoch, 13 digits)
  and CC-SIGN = hex HMAC-SHA1 of "{app_id}:{timespan}" keyed by the secret key. The body is not
  signed, so the signature proves who sent a request and roughly when, not what it asked for.
- `payment_id` must be 8-32 characters of [A-Za-z0-9_]; our order ids need not fit, so one is
  derived from them deterministically (see `payment_id_for_order`).
- `expired` is a whole number of hours, and orders live 48 hours at most.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re

PROVIDER_ID = "coincoin"

APP_ID_HEADER = "CC-APP-ID"
TIMESPAN_HEADER = "CC-TIMESPAN"
SIGN_HEADER = "CC-SIGN"

CREATE_ORDER_PATH = "/order/create"

PAYMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_]{8,32}")
# Prefix of derived payment ids. An order id that already fits is sent unchanged, so a derived
# id could only collide with an order id that itself looks like "oh_" + 29 hex digits.
DERIVED_PAYMENT_ID_PREFIX = "oh_"
_DERIVED_DIGEST_LENGTH = 32 - len(DERIVED_PAYMENT_ID_PREFIX)

MINIMUM_PRICE = 10
MAXIMUM_EXPIRY_HOURS = 48
MINIMUM_EXPIRY_HOURS = 1


def sign(app_id: str, secret_key: str, timespan: str) -> str:
    """The CC-SIGN value: hex HMAC-SHA1 of "{app_id}:{timespan}" keyed by the secret key."""
    message = f"{app_id}:{timespan}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha1).hexdigest()


def signed_headers(app_id: str, secret_key: str, now_milliseconds: int) -> dict[str, str]:
    timespan = str(now_milliseconds)
    return {
        APP_ID_HEADER: app_id,
        TIMESPAN_HEADER: timespan,
        SIGN_HEADER: sign(app_id, secret_key, timespan),
    }


def payment_id_for_order(order_id: str) -> str:
    """The CoinCoin payment_id for one of our order ids, the same every time.

    An order id that already satisfies CoinCoin's rule is used as it is, so it stays readable
    in CoinCoin's portal. Any other (too short, too long, or with '-', ':' ...) becomes
    "oh_" + the first 29 hex digits of its SHA-256 (116 bits): replacing or stripping
    characters instead would map "a-b" and "a.b" to the same id. Being deterministic, a
    create retried for the same order asks for the same payment_id, never a second order.
    """
    if PAYMENT_ID_PATTERN.fullmatch(order_id):
        return order_id
    digest = hashlib.sha256(order_id.encode()).hexdigest()
    return DERIVED_PAYMENT_ID_PREFIX + digest[:_DERIVED_DIGEST_LENGTH]


def expiry_hours(expires_in_minutes: int | None) -> int:
    """Whole hours for `expired`: rounded up (never shorter than asked), 1 to 48.

    Without a wish the documented maximum is asked for explicitly, so the order's lifetime never
    depends on an undocumented default. The provider's `expired_time` in the response is what
    the ledger keeps as the payment's expiry, so rounding up is visible there.
    """
    if expires_in_minutes is None:
        return MAXIMUM_EXPIRY_HOURS
    hours = math.ceil(expires_in_minutes / 60)
    return max(MINIMUM_EXPIRY_HOURS, min(MAXIMUM_EXPIRY_HOURS, hours))

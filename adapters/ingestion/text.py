"""What of a delivery can be stored: text PostgreSQL and UTF-8 hold, ids short enough for keys."""

from __future__ import annotations

import hashlib
from dataclasses import fields, is_dataclass

from adapters.providers.contract import WebhookBodyInvalid
from ledger.commands import Translation

# Fields of a translation that become keys (claims, read-model indexes); a btree entry holds
# about 2.7 kB, and no provider's ids come near this.
_KEY_FIELDS = frozenset(
    (
        "dedupe_key",
        "provider_ref",
        "order_id",
        "request_id",
        "pay_address",
        "deposit_id",
        "tx_hash",
        "currency",
        "account",
    )
)
MAX_KEY_LENGTH = 256
# The headers kept with a delivery: enough to check its signature again offline.
KEPT_HEADERS = ("content-type", "user-agent", "x-signature", "x-webhook-signature")


def token_hash(token: str) -> str:
    """How a callback-URL token is kept: its hash, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def header_text(value: str) -> str:
    """A header value as storable text: bytes that were not UTF-8 (kept by aiohttp as surrogate
    escapes) become U+FFFD, so a signature made of them simply does not match."""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def storable(translation: Translation) -> Translation:
    """The translation, unless one of its strings is text PostgreSQL or UTF-8 cannot hold (a
    NUL, or a lone surrogate from a JSON escape), or an id too long for a btree key: ids and
    words go into claims, events and read-model indexes."""

    def bad(value: object, name: str = "") -> bool:
        if isinstance(value, str):
            too_long = name in _KEY_FIELDS and len(value) > MAX_KEY_LENGTH
            return too_long or "\x00" in value or not _encodable(value)
        if isinstance(value, tuple):
            return any(bad(item) for item in value)
        if is_dataclass(value):
            return any(bad(getattr(value, f.name), f.name) for f in fields(value))
        return False

    if bad(translation):
        detail = f"a string holds NUL or a lone surrogate, or an id is over {MAX_KEY_LENGTH}"
        raise WebhookBodyInvalid("unstorable_text", detail)
    return translation


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

"""What of a delivery can be stored: text PostgreSQL and UTF-8 hold, ids short enough for keys,
amounts the ledger can compute with (ledger/money.py's `computable`)."""

from __future__ import annotations

import hashlib
from dataclasses import fields, is_dataclass
from datetime import datetime
from decimal import Decimal

from adapters.providers.contract import WebhookBodyInvalid
from ledger.commands import Translation
from ledger.money import computable

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


def storable(translation: Translation, body: bytes) -> Translation:
    """The translation, unless one of its strings is text PostgreSQL or UTF-8 cannot hold (a
    NUL, or a lone surrogate from a JSON escape), or an id too long for a btree key: ids and
    words go into claims, events and read-model indexes. Such text can only come from a JSON
    escape or a raw control byte, so a body with neither needs only the length check."""
    text_checked = b"\\u" in body or b"\x00" in body
    if _bad(translation, "", text_checked=text_checked):
        detail = (
            f"a string holds NUL or a lone surrogate, an id is over {MAX_KEY_LENGTH}, or an"
            " amount is out of range"
        )
        raise WebhookBodyInvalid("unstorable_text", detail)
    return translation


def _bad(value: object, name: str, *, text_checked: bool) -> bool:
    if isinstance(value, Decimal):
        return not computable(value)
    if isinstance(value, str):
        if name in _KEY_FIELDS and len(value) > MAX_KEY_LENGTH:
            return True
        return text_checked and ("\x00" in value or not _encodable(value))
    if isinstance(value, tuple):
        return any(_bad(item, "", text_checked=text_checked) for item in value)
    for field_name in _field_names(type(value)):
        item = getattr(value, field_name)
        # Times, flags and absent values hold neither text nor amounts: skipped here.
        if (
            item is not None
            and not isinstance(item, _NOTHING_TO_CHECK)
            and _bad(item, field_name, text_checked=text_checked)
        ):
            return True
    return False


_NOTHING_TO_CHECK = (datetime, bool, int)
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    """A dataclass's field names (none for any other type), looked up once per type."""
    if kind not in _FIELD_NAMES:
        names = tuple(f.name for f in fields(kind)) if is_dataclass(kind) else ()
        _FIELD_NAMES[kind] = names
    return _FIELD_NAMES[kind]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

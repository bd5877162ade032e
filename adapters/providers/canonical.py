"""Canonical JSON of a parsed provider payload, and the dedupe key made from it.

Providers without an event id are deduplicated by a hash of the canonical payload: sorted keys, no
spaces, Decimals digit for digit as received (never through float), so a redelivery gives the same
key whatever spacing or key order it was sent with.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

# Written out digit for digit, a number such as 1e999999999 (a hostile body may hold one) would
# be a billion characters; past any amount's size the number keeps its short scientific form.
_PLAIN_EXPONENT_MAX = 64


def canonical_json(value: Any) -> str:
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and abs(exponent) > _PLAIN_EXPONENT_MAX:
            return str(value)
        return format(value, "f")
    if isinstance(value, dict):
        members = (f"{json.dumps(str(k))}:{canonical_json(v)}" for k, v in sorted(value.items()))
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    return json.dumps(value)


def payload_dedupe_key(prefix: str, payload: Any) -> str:
    """`prefix:` followed by the sha256 hex of the payload's canonical JSON."""
    return f"{prefix}:{hashlib.sha256(canonical_json(payload).encode()).hexdigest()}"

"""The field types of request bodies and query parameters, each with the rules it enforces.

Every field validates its raw JSON value itself (a `BeforeValidator`), so each refusal carries
one of `adapters.http.rules`' problem types and pydantic's own messages never reach a caller.
Limits, in characters: ids (order_id, request_id, customer_id, subject ids) 128, addresses and
provider references 256, account names 256, currency codes 16, provider names 32.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from adapters.http.amounts import AmountRefused, read_plain_amount
from adapters.http.rules import broken, json_kind, shown
from ledger.codec import dumps_canonical
from ledger.money import INTEGER_DIGITS_MAX

IDENTIFIER_LENGTH_MAX = 128
ADDRESS_LENGTH_MAX = 256
CURRENCY_LENGTH_MAX = 16
PROVIDER_LENGTH_MAX = 32
EXPIRES_IN_MINUTES_MAX = 7 * 24 * 60
METADATA_DEPTH_MAX = 8
METADATA_BYTES_MAX = 16 * 1024

# PostgreSQL text and jsonb cannot hold NUL; a lone surrogate cannot be written as UTF-8.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# C0, DEL and C1: never part of an id, an address or a code, and they hide in logs and URLs.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

Validator = Callable[[Any], Any]


def _readable_text(value: str) -> None:
    """What any text must be to be stored at all."""
    if "\x00" in value:
        raise broken("text-contains-nul", f"{shown(value)} contains a NUL character")
    if _LONE_SURROGATE.search(value):
        raise broken("text-contains-lone-surrogate", f"{shown(value)} is not valid Unicode")


def text(length_max: int) -> Validator:
    """A one-line token (id, code, address): non-empty, bounded, no control characters, and no
    surrounding whitespace (" A1" and "A1" would otherwise name two orders)."""

    def validate(value: Any) -> str:
        if not isinstance(value, str):
            detail = f"must be a JSON string, not {json_kind(value)}"
            raise broken("field-must-be-a-string", detail)
        if not value:
            raise broken("text-must-not-be-empty", "must not be empty")
        if len(value) > length_max:
            detail = f"has {len(value)} characters; at most {length_max}"
            raise broken("text-too-long", detail)
        _token_characters(value)
        if value != value.strip():
            detail = f"{shown(value)} has surrounding whitespace"
            raise broken("text-has-surrounding-whitespace", detail)
        return value

    return validate


def _token_characters(value: str) -> None:
    _readable_text(value)
    if _CONTROL.search(value):
        detail = f"{shown(value)} contains a control character"
        raise broken("text-contains-control-character", detail)


def one_of(allowed: Iterable[str]) -> Validator:
    """A query parameter naming one of a fixed set of values (a status, a reason...)."""
    values = sorted(allowed)

    def validate(value: Any) -> str:
        if isinstance(value, str) and value in values:
            return value
        if isinstance(value, str):
            _token_characters(value)  # NUL or a control character is refused as such
        raise broken("parameter-value-not-allowed", f"{shown(value)} is not one of {values}")

    return validate


def _amount(value: Any) -> Decimal:
    try:
        return read_plain_amount(value)
    except AmountRefused as refused:
        raise broken(refused.problem_type, refused.detail) from None


def _expires_in_minutes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        detail = f"expires_in_minutes must be a JSON integer, not {json_kind(value)}"
        raise broken("expires-in-minutes-must-be-an-integer", detail)
    if not 1 <= value <= EXPIRES_IN_MINUTES_MAX:
        detail = f"expires_in_minutes must be from 1 to {EXPIRES_IN_MINUTES_MAX} (a week)"
        raise broken("expires-in-minutes-out-of-range", detail)
    return value


def _metadata(value: Any) -> dict[str, Any]:
    """An object of at most METADATA_DEPTH_MAX levels and METADATA_BYTES_MAX bytes of canonical
    JSON, whose keys and strings can be stored. Walked without recursion, and given up as soon
    as a lower bound of its size passes the limit, so hostile input costs little."""
    if not isinstance(value, dict):
        detail = f"metadata must be a JSON object, not {json_kind(value)}"
        raise broken("metadata-must-be-an-object", detail)
    too_large = broken("metadata-too-large", f"metadata is over {METADATA_BYTES_MAX} bytes")
    size = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > METADATA_DEPTH_MAX:
                detail = f"metadata is nested over {METADATA_DEPTH_MAX} levels"
                raise broken("metadata-too-deep", detail)
            # Brackets and a comma (or a key's quotes and colon) per member, at least.
            size += 2 + len(node)
            if size > METADATA_BYTES_MAX:
                raise too_large
            for key in node if isinstance(node, dict) else ():
                _readable_text(key)
                size += len(key) + 3
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
        else:
            size += _scalar_size(node)
        if size > METADATA_BYTES_MAX:
            raise too_large
    if len(dumps_canonical(value)) > METADATA_BYTES_MAX:
        raise too_large
    return value


def _scalar_size(node: Any) -> int:
    """At most the size of the scalar's canonical JSON (a Decimal is written in full, so
    1e999999999 would be a billion digits: it is counted, never formatted)."""
    if isinstance(node, str):
        _readable_text(node)
        return len(node) + 2
    if isinstance(node, Decimal):
        sign, digits, exponent = node.as_tuple()
        if not isinstance(exponent, int):
            return METADATA_BYTES_MAX + 1  # not finite: the parser never makes one
        return sign + (len(digits) + exponent if exponent >= 0 else max(len(digits), -exponent))
    if isinstance(node, int) and not isinstance(node, bool):
        return len(str(node))
    return 4  # true, false, null


def _schema(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema(schema)


Provider = Annotated[str, BeforeValidator(text(PROVIDER_LENGTH_MAX))]
Identifier = Annotated[
    str, BeforeValidator(text(IDENTIFIER_LENGTH_MAX)), _schema({"type": "string", "maxLength": 128})
]
Address = Annotated[
    str, BeforeValidator(text(ADDRESS_LENGTH_MAX)), _schema({"type": "string", "maxLength": 256})
]
CurrencyCode = Annotated[
    str, BeforeValidator(text(CURRENCY_LENGTH_MAX)), _schema({"type": "string", "maxLength": 16})
]
Amount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    _schema(
        {
            "type": "string",
            "pattern": f"^[0-9]{{1,{INTEGER_DIGITS_MAX}}}(\\.[0-9]+)?$",
            "description": "a positive plain decimal, at most the currency's scale of fraction "
            "digits",
            "examples": ["10.50"],
        }
    ),
]
ExpiresInMinutes = Annotated[
    int,
    BeforeValidator(_expires_in_minutes),
    _schema({"type": "integer", "minimum": 1, "maximum": EXPIRES_IN_MINUTES_MAX}),
]
Metadata = Annotated[
    dict[str, Any],
    BeforeValidator(_metadata),
    _schema({"type": "object", "description": "at most 16 KiB of canonical JSON, 8 levels deep"}),
]

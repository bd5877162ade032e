"""Readers for Cryptofuse JSON fields that refuse anything but the documented kinds of value.

Amounts come as strings ("100.00000000") or, parsed by `loads_exact`, as Decimals; both become
exact Decimals. A value of the wrong kind raises PayloadShapeError, which the webhook side turns
into a 400 and the client side into a failed call.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from ledger.money import to_decimal

if TYPE_CHECKING:
    from collections.abc import Mapping

T = TypeVar("T")


class PayloadShapeError(ValueError):
    """A field is present but not of the kind the document shows."""


def text(mapping: Mapping[str, Any], key: str) -> str | None:
    """A string field; ids that arrive as JSON integers are accepted as their digits."""
    value = mapping.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise PayloadShapeError(f"{key} must be a string")


def word(mapping: Mapping[str, Any], key: str) -> str | None:
    """A status or event word: only a string will do."""
    value = mapping.get(key)
    if value is None or isinstance(value, str):
        return value
    raise PayloadShapeError(f"{key} must be a string")


def amount(mapping: Mapping[str, Any], key: str) -> Decimal | None:
    value = mapping.get(key)
    if value is None:
        return None
    try:
        return to_decimal(value)
    except (TypeError, ValueError, ArithmeticError) as error:
        raise PayloadShapeError(f"{key} is not an exact amount: {error}") from None


# A count (of confirmations) has no business past 18 digits; longer digit strings are refused
# before `int` (which raises past 4,300 digits, a 500 rather than the 400 it deserves).
COUNT_DIGITS_MAX = 18


def count(mapping: Mapping[str, Any], key: str) -> int:
    """A non-negative integer such as `confirmations`; absent means zero. Digits are ASCII ones
    only: `str.isdigit` takes superscripts, which `int` then refuses."""
    value = mapping.get(key)
    if value is None:
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value) if len(value) <= COUNT_DIGITS_MAX else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**COUNT_DIGITS_MAX:
        return value
    raise PayloadShapeError(f"{key} must be a non-negative integer of at most 18 digits")


def timestamp(mapping: Mapping[str, Any], key: str) -> datetime | None:
    """An ISO 8601 time ("2024-12-27T10:05:00Z"); one without an offset is taken as UTC."""
    raw = text(mapping, key)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise PayloadShapeError(f"{key} is not an ISO 8601 time: {raw!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def mapping_or_empty(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise PayloadShapeError(f"{key} must be an object")


def first(*values: T | None) -> T | None:
    """The first value that is present: `or` would skip a legitimate zero amount or ""."""
    for value in values:
        if value is not None:
            return value
    return None


def sha256_hex(text_value: str) -> str:
    return hashlib.sha256(text_value.encode("utf-8")).hexdigest()

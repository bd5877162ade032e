"""A request body read as one JSON object, strictly: UTF-8, exact numbers, no repeated keys.

Like `ledger.money.loads_exact`, every non-integer number is a Decimal (never a float) and NaN
and Infinity are refused. Beyond it: the body must be UTF-8 (json.loads would guess UTF-16 or
32 from bytes), an object may not repeat a key (json.loads keeps the last one silently, and a
money request that says two amounts is ambiguous), and nesting deep enough to exhaust the
parser's recursion is a 400 rather than a RecursionError.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from adapters.http.rules import json_kind, refuse, shown

# Python refuses to read integers longer than this (sys.int_info.default_max_str_digits); such
# a number is kept as an exact Decimal, and the field it sits in refuses it by its own rule.
_INTEGER_DIGITS_MAX = 4300


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    built = dict(pairs)
    if len(built) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return built


def _integer(text: str) -> int | Decimal:
    return int(text) if len(text) <= _INTEGER_DIGITS_MAX else Decimal(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or ProblemError 400 naming why it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        detail = f"body is not UTF-8 (byte {error.start})"
        raise refuse("body-not-json", detail) from None
    try:
        parsed = json.loads(
            text,
            object_pairs_hook=_object,
            parse_float=Decimal,
            parse_int=_integer,
            parse_constant=_refuse_constant,
        )
    except _DuplicateKey as duplicate:
        detail = f"an object repeats the key {shown(duplicate.key)}"
        raise refuse("duplicate-key", detail) from None
    except RecursionError:
        raise refuse("body-nested-too-deep", "body is nested too deep to read") from None
    except ValueError as error:
        raise refuse("body-not-json", f"body is not JSON: {_short(error)}") from None
    if not isinstance(parsed, dict):
        detail = f"body must be a JSON object, not {json_kind(parsed)}"
        raise refuse("body-must-be-an-object", detail)
    return parsed


def _short(error: ValueError) -> str:
    # json's messages quote no input, only positions; other ValueErrors might.
    message = str(error)
    return message if len(message) <= 120 else message[:120] + "..."

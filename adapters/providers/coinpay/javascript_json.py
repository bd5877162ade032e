"""`JSON.stringify(JSON.parse(body))` reproduced in Python, byte for byte.

CoinPay signs `JSON.stringify(payload)` where `payload` is the body its Node server (and the
merchant's Express handler) parsed, not the raw bytes. To check a signature we must rebuild the
exact text JavaScript would produce from the received JSON:

- every number is a JavaScript Number (an IEEE-754 double), written as the shortest text that
  reads back to the same double: integers without ".0", exponent form only at >= 1e21 or < 1e-6;
- object keys keep the received order, except that "array index" keys ("0", "1", ... up to
  2**32 - 2) come first in ascending numeric order, as JavaScript objects order them; a repeated key
  keeps its first position and its last value;
- strings escape only `"`, `\\`, control characters and lone surrogates; other non-ASCII is
  written as it is.

This module is the ONLY place in the project where amounts pass through float: JavaScript itself
holds them as doubles when it signs, so the signature input depends on the double's text. The
amounts the ledger records never come from here; the translator parses the raw body with Decimal.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

_LARGEST_ARRAY_INDEX = 2**32 - 2
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_SMALLEST_PLAIN_EXPONENT = -6  # below 1e-6 JavaScript switches to exponent form
_LARGEST_PLAIN_DIGITS = 21  # at 1e21 and above JavaScript switches to exponent form


class JavaScriptJsonError(ValueError):
    """The text is not JSON that JavaScript's JSON.parse would accept."""


def parse_as_javascript(body: bytes | str) -> Any:
    """Parses JSON the way JSON.parse does: every number becomes a double (float)."""

    def refuse_constant(name: str) -> Any:
        raise JavaScriptJsonError(f"JSON.parse does not accept {name}")

    try:
        return json.loads(
            body,
            parse_float=float,
            # JavaScript has no integers: 12345678901234567890 is read as the nearest double.
            parse_int=float,
            parse_constant=refuse_constant,
            object_pairs_hook=_javascript_object,
        )
    except (ValueError, RecursionError) as error:
        raise JavaScriptJsonError(str(error)) from error


def stringify(value: Any) -> str:  # noqa: PLR0911 - one return per JSON type
    """What JSON.stringify(value) returns for a value made of dict/list/str/number/bool/None.

    Numbers may be float, int or Decimal; all are first turned into a double, as JavaScript would
    hold them (the sandbox builds payloads with Decimal amounts and signs them through here).
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int | float | Decimal):
        return number_to_string(float(value))
    if isinstance(value, dict):
        ordered = _javascript_object(list(value.items()))
        members = (f"{_quote(key)}:{stringify(item)}" for key, item in ordered.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(stringify(item) for item in value) + "]"
    raise TypeError(f"JSON.stringify has no rendering for {type(value).__name__}")


def number_to_string(number: float) -> str:
    """ECMAScript Number::toString(10) for a double, with JSON's rendering of non-finite values."""
    if not math.isfinite(number):
        return "null"  # JSON.stringify writes Infinity and NaN as null
    if number == 0:
        return "0"  # also -0
    sign = "-" if number < 0 else ""
    # repr() gives the shortest digit string that reads back to the same double, which is what
    # ECMAScript asks for; Decimal only splits that string into digits and exponent exactly.
    digits_tuple = Decimal(repr(abs(number))).normalize().as_tuple()
    digits = "".join(str(digit) for digit in digits_tuple.digits)
    exponent = digits_tuple.exponent
    assert isinstance(exponent, int)
    count = len(digits)
    point = count + exponent  # ECMAScript's n: the value is 0.digits * 10**point
    if count <= point <= _LARGEST_PLAIN_DIGITS:
        text = digits + "0" * (point - count)
    elif 0 < point <= _LARGEST_PLAIN_DIGITS:
        text = digits[:point] + "." + digits[point:]
    elif _SMALLEST_PLAIN_EXPONENT < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        power = point - 1
        power_text = f"+{power}" if power >= 0 else str(power)
        mantissa = digits if count == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{power_text}"
    return sign + text


def _javascript_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A dict with JavaScript's own-property order: array indices first (ascending), then the
    other keys in first-insertion order; a repeated key keeps its first place and last value."""
    merged: dict[str, Any] = dict(pairs)  # as JSON.parse: first place, last value
    indices = sorted((key for key in merged if _is_array_index(key)), key=int)
    if not indices:
        return merged
    ordered = {key: merged[key] for key in indices}
    ordered.update((key, item) for key, item in merged.items() if key not in ordered)
    return ordered


def _is_array_index(key: str) -> bool:
    if not key.isascii() or not key.isdigit():
        return False
    if len(key) > 1 and key[0] == "0":
        return False  # "01" is not the canonical text of a number, so it is an ordinary key
    return int(key) <= _LARGEST_ARRAY_INDEX


def _quote(text: str) -> str:
    parts = ['"']
    for character in text:
        code = ord(character)
        if character in _SHORT_ESCAPES:
            parts.append(_SHORT_ESCAPES[character])
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF:
            # Control characters, and (since ES2019) lone surrogates, as lower-case \u escapes.
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(character)
    parts.append('"')
    return "".join(parts)

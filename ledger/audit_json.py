"""Fast JSON for audit rows, byte-identical to the stdlib encoding the hash chain uses.

orjson writes strings, integers, booleans, null, objects and arrays exactly as
`json.dumps(..., separators=(",", ":"), ensure_ascii=False)` does (same escapes, raw UTF-8,
`sort_keys` in code point order), and reads them to the same values; the two differ only on
floats (exponent spelling), on integers beyond 64 bits (orjson reads them as floats, refuses to
write them) and on what the stdlib accepts beyond JSON (NaN, lone surrogates). So every value
holding a float, or that orjson refuses, takes the stdlib path: results are always the stdlib's.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_SORT = orjson.OPT_SORT_KEYS
_CONTAINERS = (dict, list)
_SCALARS = frozenset({str, int, bool, type(None)})
_PLAIN = _SCALARS | {dict, list}


def floatless(value: Any) -> bool:
    """True when `value` is made only of dicts, lists, str, int, bool and None (no float, nor
    anything else orjson might write otherwise than the stdlib)."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is dict:
            items = list(item.values())
        elif kind is list:
            items = item
        else:
            if kind not in _SCALARS:
                return False
            continue
        kinds = set(map(type, items))
        if kinds <= _SCALARS:
            continue
        if not kinds <= _PLAIN:
            return False
        pending += [inner for inner in items if type(inner) in _CONTAINERS]
    return True


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`, exactly, faster; ValueError when the stdlib would raise one."""
    return loads_telling(text)[0]


def loads_telling(text: str | bytes) -> tuple[Any, bool]:
    """`json.loads(text)`, and whether the value is `floatless` (then `canonical_plain` may
    encode any part of it)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = json.loads(text)
        return value, floatless(value)
    return (value, True) if floatless(value) else (json.loads(text), False)


def canonical(value: Any) -> bytes:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()`"""
    if floatless(value):
        try:
            return orjson.dumps(value, option=_SORT)
        except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a lone surrogate
            pass
    return _CANONICAL.encode(value).encode()


def canonical_plain(value: Any) -> bytes:
    """`canonical(value)` for a value already known `floatless` (read by `loads`, say)."""
    try:
        return orjson.dumps(value, option=_SORT)
    except TypeError:
        return _CANONICAL.encode(value).encode()


def compact(value: Any) -> str:
    """`json.dumps(value, separators=(",", ":"), ensure_ascii=False)`"""
    if type(value) is str or floatless(value):
        try:
            return orjson.dumps(value).decode()
        except TypeError:
            pass
    return _COMPACT.encode(value)

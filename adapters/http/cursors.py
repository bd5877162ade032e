"""Opaque keyset cursors of the list endpoints, and RFC 3339 instants in query parameters.

A cursor is base64url of a JSON list of strings (the sort key of the last row served). What
comes back is read as strictly as any other input: a cursor this API never handed out is a 400
whatever it holds, and each part is checked before it reaches SQL (a NUL, an integer past
bigint or a date that overflows on the way to UTC would otherwise fail in the database).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from adapters.http.rules import broken, shown

CURSOR_LENGTH_MAX = 4096
_TEXT_PART_LENGTH_MAX = 1024
_POSITION_MAX = 2**63 - 1  # PostgreSQL bigint
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_POSITION = re.compile(r"[0-9]{1,19}")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# RFC 3339 section 5.6, with its note's allowance of lower-case t and z and a space for T.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"  # full-date
    r"[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"  # partial-time
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"  # time-offset
)


def encode_cursor(*key: Any) -> str:
    text = json.dumps([k.isoformat() if isinstance(k, datetime) else str(k) for k in key])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


class _NotOurs(ValueError):
    """A cursor part that no cursor of ours holds."""


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise _NotOurs("no time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise _NotOurs("out of range") from None


def instant_part(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text))


def uuid_part(text: str) -> uuid.UUID:
    return uuid.UUID(text)


def position_part(text: str) -> int:
    if not _POSITION.fullmatch(text) or int(text) > _POSITION_MAX:
        raise _NotOurs("not a log position")
    return int(text)


def text_part(text: str) -> str:
    if len(text) > _TEXT_PART_LENGTH_MAX or _UNSTORABLE.search(text):
        raise _NotOurs("not a stored value")
    return text


def cursor_of(*parsers: Callable[[str], Any]) -> Callable[[Any], tuple[Any, ...]]:
    """A field validator reading a cursor whose parts `parsers` read, in order."""

    def validate(value: Any) -> tuple[Any, ...]:
        refused = broken("cursor-invalid", "cursor is not one this API handed out")
        if not isinstance(value, str) or not 0 < len(value) <= CURSOR_LENGTH_MAX:
            raise refused
        if not _BASE64URL.fullmatch(value):
            raise refused
        try:
            decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            parts = json.loads(decoded.decode("utf-8"))
        except (binascii.Error, ValueError, RecursionError):
            raise refused from None
        if not isinstance(parts, list) or len(parts) != len(parsers):
            raise refused
        if not all(isinstance(part, str) for part in parts):
            raise refused
        try:
            return tuple(parse(part) for parse, part in zip(parsers, parts, strict=True))
        except ValueError:  # _NotOurs too
            raise refused from None

    return validate


def read_instant(value: Any) -> datetime:
    """An RFC 3339 instant with its offset (`2024-05-01T12:00:00Z`), as UTC."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        hint = ""
        if isinstance(value, str) and " " in value[11:]:
            hint = " (a '+' in a query string reads as a space: write %2B, or Z)"
        detail = f"{shown(value)} is not an RFC 3339 instant such as 2024-05-01T12:00:00Z{hint}"
        raise broken("instant-not-rfc3339", detail)
    try:
        moment = datetime.fromisoformat(value.upper().replace(" ", "T"))
    except ValueError:  # a 13th month, a 25th hour, offset +24:00 ...
        raise broken("instant-not-rfc3339", f"{shown(value)} is not a valid instant") from None
    try:
        return _utc(moment)
    except _NotOurs:
        raise broken("instant-out-of-range", f"{shown(value)} is out of range") from None

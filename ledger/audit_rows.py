"""One exported log event as a row, written as JSON Lines and read back, without I/O.

The export must let anyone recompute every hash offline, and the hash covers the payload's exact
bytes. So a payload is shown as decoded JSON only when re-encoding that JSON canonically (the
way ledger/codec.py writes payloads) gives back the very same bytes; any other payload (a
provider's raw body kept by eventsourcing's recorder, JSON written another way) is shown as
base64, and `payload_encoding` says which, so the verifier knows how to get the bytes back.
"""

from __future__ import annotations

import base64
import binascii
import json
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

from ledger.audit_json import canonical, compact, floatless, loads, loads_telling
from ledger.ports import RecordedEvent

PayloadEncoding = Literal["json", "base64"]

COLUMNS = (
    "partition",
    "position",
    "stream_id",
    "version",
    "type",
    "recorded_at",
    "payload_encoding",
    "payload",
    "metadata",
    "prev_hash",
    "hash",
)


class RowUnreadable(ValueError):
    """A line of an export file that is not a row: `line` counts from 1 (the CSV header is 1)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AuditRow:
    partition: int
    position: int
    stream_id: str
    version: int
    type: str
    recorded_at: str  # ISO 8601 exactly as the hash saw it (datetime.isoformat)
    payload_encoding: PayloadEncoding
    payload: Any  # the decoded JSON, or the base64 text of the bytes
    metadata: dict[str, Any]
    prev_hash: str  # hex
    hash: str  # hex


_canonical_json = canonical


def _canonical_payload(raw: bytes) -> Any:
    """The JSON `raw` decodes to when re-encoding it canonically gives back `raw`, else a
    sentinel. Exactly `json.loads` then the canonical `json.dumps`, at orjson's speed."""
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        decoded = _NOT_CANONICAL  # the stdlib may still read it (NaN, lone surrogates): see below
    else:
        if floatless(decoded):
            try:
                same = orjson.dumps(decoded, option=orjson.OPT_SORT_KEYS) == raw
            except TypeError:
                pass
            else:
                return decoded if same else _NOT_CANONICAL
    try:
        decoded = json.loads(raw)
        return decoded if canonical(decoded) == raw else _NOT_CANONICAL
    except ValueError:  # also UnicodeDecodeError and UnicodeEncodeError
        return _NOT_CANONICAL


_NOT_CANONICAL: Any = object()


def payload_document(raw: bytes) -> tuple[PayloadEncoding, Any]:
    """The payload as JSON where that JSON gives back the same bytes, else as base64."""
    decoded = _canonical_payload(raw)
    if decoded is not _NOT_CANONICAL:
        return "json", decoded
    return "base64", base64.b64encode(raw).decode("ascii")


def payload_bytes(encoding: str, payload: Any) -> bytes:
    """The exact bytes a row's payload stands for; ValueError when it cannot stand for any."""
    if encoding == "json":
        return _canonical_json(payload)
    if encoding == "base64" and isinstance(payload, str):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as error:
            raise ValueError(f"payload is not base64: {error}") from error
    raise ValueError(f"payload_encoding {encoding!r} is not json or base64 text")


def row_of(event: RecordedEvent) -> AuditRow:
    encoding, payload = payload_document(event.payload)
    return AuditRow(
        partition=event.partition,
        position=event.position,
        stream_id=event.stream_id,
        version=event.version,
        type=event.type,
        recorded_at=event.recorded_at.isoformat(),
        payload_encoding=encoding,
        payload=payload,
        metadata=event.metadata,
        prev_hash=event.prev_hash.hex(),
        hash=event.hash.hex(),
    )


def recorded_of(row: AuditRow) -> RecordedEvent:
    """The event a row claims to be; ValueError when a field cannot be one."""
    return RecordedEvent(
        partition=row.partition,
        position=row.position,
        stream_id=row.stream_id,
        version=row.version,
        type=row.type,
        payload=payload_bytes(row.payload_encoding, row.payload),
        metadata=row.metadata,
        recorded_at=datetime.fromisoformat(row.recorded_at),
        prev_hash=bytes.fromhex(row.prev_hash),
        hash=bytes.fromhex(row.hash),
    )


def jsonl_line_of(event: RecordedEvent) -> str:
    """`jsonl_line(row_of(event))` without decoding and re-encoding a canonical payload: its
    stored text is already the JSON the row shows, so it is copied into the line as it is."""
    raw = event.payload
    if _canonical_payload(raw) is _NOT_CANONICAL:
        encoding, payload = "base64", '"' + base64.b64encode(raw).decode() + '"'
    else:
        encoding, payload = "json", raw.decode()
    return (
        f'{{"partition":{event.partition},"position":{event.position},'
        f'"stream_id":{compact(event.stream_id)},"version":{event.version},'
        f'"type":{compact(event.type)},"recorded_at":"{event.recorded_at.isoformat()}",'
        f'"payload_encoding":"{encoding}","payload":{payload},'
        f'"metadata":{compact(event.metadata)},'
        f'"prev_hash":"{event.prev_hash.hex()}","hash":"{event.hash.hex()}"}}\n'
    )


def document_of(row: AuditRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in COLUMNS}


def jsonl_line(row: AuditRow) -> str:
    return json.dumps(document_of(row), ensure_ascii=False, separators=(",", ":")) + "\n"


_COLUMN_SET = frozenset(COLUMNS)
_TYPED = (
    ("partition", int),
    ("position", int),
    ("version", int),
    ("metadata", dict),
    ("stream_id", str),
    ("type", str),
    ("recorded_at", str),
    ("payload_encoding", str),
    ("prev_hash", str),
    ("hash", str),
)


_TYPES = tuple(wanted for _, wanted in _TYPED)
_GETTER = operator.itemgetter(*(name for name, _ in _TYPED))


def check_document(document: Any, line: int) -> dict[str, Any]:
    """The document, when it has exactly a row's fields of a row's types; RowUnreadable else."""
    if not isinstance(document, dict) or document.keys() != _COLUMN_SET:
        raise RowUnreadable(line, f"a row has exactly the fields {', '.join(COLUMNS)}")
    if tuple(map(type, _GETTER(document))) != _TYPES:
        for name, wanted in _TYPED:
            if type(document[name]) is not wanted:  # exactly: a bool is an int to isinstance
                raise RowUnreadable(line, f"{name} is not {wanted.__name__}")
    return document


def row_from(document: Any, line: int) -> AuditRow:
    return AuditRow(**check_document(document, line))


def document_from_line(text: str, number: int) -> tuple[dict[str, Any], bool]:
    """One JSON Lines row as its checked document, and whether it is `floatless`;
    RowUnreadable when it is not a row."""
    try:
        document, plain = loads_telling(text)
    except ValueError as error:
        raise RowUnreadable(number, f"not JSON ({error})") from error
    return check_document(document, number), plain


def read_jsonl(lines: Iterable[str], *, first_line: int = 1) -> Iterator[AuditRow]:
    for number, text in enumerate(lines, start=first_line):
        if not text.strip():
            continue
        try:
            document = loads(text)
        except ValueError as error:
            raise RowUnreadable(number, f"not JSON ({error})") from error
        yield row_from(document, number)

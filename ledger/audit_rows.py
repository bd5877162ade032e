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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _canonical_json(value: Any) -> bytes:
    return _CANONICAL.encode(value).encode()


def payload_document(raw: bytes) -> tuple[PayloadEncoding, Any]:
    """The payload as JSON where that JSON gives back the same bytes, else as base64."""
    try:
        decoded = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        decoded = None
    else:
        if _canonical_json(decoded) == raw:
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
    text: str | None
    try:
        text = event.payload.decode()
        if _CANONICAL.encode(json.loads(text)) != text:
            text = None
    except ValueError:  # also UnicodeDecodeError
        text = None
    if text is None:
        encoding, payload = "base64", _COMPACT.encode(base64.b64encode(event.payload).decode())
    else:
        encoding, payload = "json", text
    return (
        f'{{"partition":{event.partition},"position":{event.position},'
        f'"stream_id":{_COMPACT.encode(event.stream_id)},"version":{event.version},'
        f'"type":{_COMPACT.encode(event.type)},"recorded_at":"{event.recorded_at.isoformat()}",'
        f'"payload_encoding":"{encoding}","payload":{payload},'
        f'"metadata":{_COMPACT.encode(event.metadata)},'
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


def row_from(document: Any, line: int) -> AuditRow:
    if not isinstance(document, dict) or document.keys() != _COLUMN_SET:
        raise RowUnreadable(line, f"a row has exactly the fields {', '.join(COLUMNS)}")
    for name, wanted in _TYPED:
        value = document[name]
        if type(value) is not wanted:  # exactly: a bool is an int to isinstance
            raise RowUnreadable(line, f"{name} is not {wanted.__name__}")
    return AuditRow(**document)


def read_jsonl(lines: Iterable[str]) -> Iterator[AuditRow]:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except ValueError as error:
            raise RowUnreadable(number, f"not JSON ({error})") from error
        yield row_from(document, number)

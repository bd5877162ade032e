"""Aggregate events to stored bytes and back, without pickles and without floats.

Payloads are canonical JSON: Decimals are strings, datetimes ISO 8601, sorted keys. Decoding uses
each event class's type hints to turn those strings back into Decimals and datetimes.
"""

from __future__ import annotations

import importlib
import json
import typing
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

from ledger.audit_json import canonical_plain
from ledger.payment import Payment
from ledger.ports import NewEvent, RecordedEvent
from ledger.withdrawal import Withdrawal

AGGREGATE_TYPES: dict[str, type[Aggregate]] = {"Payment": Payment, "Withdrawal": Withdrawal}
_ENVELOPE_FIELDS = frozenset({"originator_id", "originator_version"})


# Values stored as they are; checked by exact type first, since most of a document is these.
_AS_IS = frozenset({str, int, bool, type(None)})


def _to_json(value: Any) -> Any:  # noqa: PLR0911 - one return per JSON-able type
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_to_json(v) for v in value]
    if isinstance(value, float):
        raise TypeError("floats are not stored; amounts are Decimal")
    return value


def dumps_canonical(document: Any) -> bytes:
    """Sorted keys, no spaces, raw UTF-8: the bytes the hash chain covers. `_to_json` leaves only
    strings, integers, booleans, null, objects and arrays (floats are refused), which orjson
    writes byte for byte as the stdlib does (ledger/audit_json.py, tested there); what orjson
    refuses (an integer beyond 64 bits, a lone surrogate) takes the stdlib's path."""
    return canonical_plain(_to_json(document))


def event_type_name(aggregate_name: str, event_class: type) -> str:
    return f"{aggregate_name}.{event_class.__name__}"


def encode_pending(aggregate: Aggregate, aggregate_name: str) -> list[NewEvent]:
    """Collects an aggregate's new events as NewEvents for its stream (stream id = its id)."""
    stream_id = str(aggregate.id)
    return [
        NewEvent(
            stream_id=stream_id,
            version=domain_event.originator_version,
            type=event_type_name(aggregate_name, type(domain_event)),
            payload=dumps_canonical(
                {k: v for k, v in domain_event.__dict__.items() if k not in _ENVELOPE_FIELDS}
            ),
            # The class that really made the event: eventsourcing copies inherited event classes
            # into subclasses, and only the defining class knows how to apply itself.
            metadata={"topic": topic_of(type(domain_event))},
        )
        for domain_event in aggregate.collect_events()
    ]


def topic_of(event_class: type) -> str:
    return f"{event_class.__module__}:{event_class.__qualname__}"


@cache
def _resolve_topic(topic: str) -> type:
    module_name, _, qualname = topic.partition(":")
    if not module_name.startswith("ledger."):
        raise ValueError(f"event topic {topic!r} is outside the domain")
    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and issubclass(found, Aggregate.Event)):
        raise TypeError(f"event topic {topic!r} is not an aggregate event")
    return found


@cache
def _converters(event_class: type) -> tuple[tuple[str, Any], ...]:
    """The fields of `event_class` stored as strings that decode to Decimals or datetimes, with
    the function that decodes each: worked out once per class from its type hints, so that a
    decode does not inspect hints per field."""
    converters: list[tuple[str, Any]] = []
    for name, hint in typing.get_type_hints(event_class).items():
        union = typing.get_origin(hint) in {typing.Union, _UnionType}
        options = typing.get_args(hint) if union else (hint,)
        if Decimal in options:
            converters.append((name, Decimal))
        elif datetime in options:
            converters.append((name, datetime.fromisoformat))
    return tuple(converters)


_UnionType = type(int | None)


# msgspec hands the text of every non-integer number to float_hook, so it becomes a Decimal without
# ever being a float. It parses a stored event in about half the time orjson and a walk for floats
# took, which makes a whole decode about a fifth cheaper (bench/codec_decode.py, issue 13).
_EXACT_JSON = msgspec.json.Decoder(float_hook=Decimal)


def loads_exact(payload: bytes) -> Any:
    """JSON whose numbers never end up as floats. What msgspec refuses and the stdlib takes (a
    lone surrogate escape, a byte order mark, UTF-16) is parsed by the stdlib with
    parse_float=Decimal, which keeps every number exact too; what both refuse (an integer past
    the interpreter's 4,300 digits among them) raises the stdlib's error."""
    try:
        return _EXACT_JSON.decode(payload)
    except msgspec.DecodeError:
        return json.loads(payload, parse_float=Decimal)


def decode(recorded: RecordedEvent, loads: Callable[[bytes], Any] = loads_exact) -> Any:
    """Rebuilds the domain event object (ready for `mutate`) from a stored event. `loads` is the
    JSON parse (bench/codec_decode.py measures others in its place)."""
    event_class = _resolve_topic(str(recorded.metadata["topic"]))
    fields = loads(recorded.payload)
    for name, convert in _converters(event_class):
        value = fields.get(name)
        if value is not None:
            fields[name] = convert(value)
    fields["originator_id"] = uuid.UUID(recorded.stream_id)
    fields["originator_version"] = recorded.version
    domain_event: Any = object.__new__(event_class)
    domain_event.__dict__.update(fields)
    return domain_event


def decode_document(payload: bytes) -> Any:
    """A record event's payload as plain JSON (amounts stay the strings they were stored as)."""
    return json.loads(payload)


def rebuild(events: list[RecordedEvent]) -> Any:
    """Replays a stream into its aggregate; None for an empty stream."""
    aggregate: Any = None
    for recorded in events:
        aggregate = decode(recorded).mutate(aggregate)
    return aggregate


def aggregate_name_of(recorded_type: str) -> str:
    return recorded_type.partition(".")[0]

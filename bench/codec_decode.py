"""Decoding a stored event (payload bytes -> domain event), per event, beside the orjson decoder
the codec had before issue 13, measured in the same run.

    python bench/codec_decode.py [--histories 2000] [--rounds 15] [--seed 1]

The events are those of bench/projection_catchup.py: its `log_chunk` makes payment and
withdrawal histories with the domain and encodes them with ledger.codec.encode_pending, as the
store keeps them (payload bytes of a bytea column, metadata with the event's topic). Record
events (no aggregate) are left out: they are read with decode_document, not decode.

Candidates, each a full decode (topic to class, parse, Decimal and datetime fields, envelope):
  a  orjson   orjson.loads, a walk for floats, the stdlib with parse_float=Decimal when orjson
              made a float or refused (the codec before issue 13; the baseline, copied here so
              that it stays measurable)
  b  msgspec  msgspec.json.Decoder(float_hook=Decimal) in place of orjson and the walk; the
              stdlib only when msgspec refuses (a lone surrogate, an integer over 4,300 digits)
  c  typed    msgspec decoding into a TypedDict per event class whose Decimal fields are typed
              (so msgspec makes the Decimals), datetimes still by datetime.fromisoformat. Not
              exact: a TypedDict drops keys it does not name, which today's decode keeps.
  codec       ledger.codec.decode as it is in this checkout
Each round times every candidate over all events, in an order that alternates (a b c codec,
codec c b a, ...); the best round of each is kept. Ratios are against (a) of the same run; only
they are meant to be compared across runs (this machine kind is noisy).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import platform
import sys
import typing
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
from typing import Any

import msgspec
import orjson

from ledger import codec
from ledger.ports import RecordedEvent

Decode = Callable[[RecordedEvent], Any]


def histories_module() -> Any:
    """bench/projection_catchup.py, loaded by path (it is a script, not a package module)."""
    path = Path(__file__).with_name("projection_catchup.py")
    spec = importlib.util.spec_from_file_location("bench_projection_catchup", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def recorded_events(histories: int, seed: int) -> list[RecordedEvent]:
    module = histories_module()
    module._worker_init()  # noqa: SLF001 - the domain's clock, as its worker processes set it
    now, later = module.log_chunk(seed, 0, histories)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        RecordedEvent(
            0, position, stream, event_version, event_type, payload, metadata, at, b"", b""
        )
        for position, (stream, event_version, event_type, payload, metadata) in enumerate(
            now + later, start=1
        )
        if event_version is not None
    ]


# ----------------------------------------------------------------------- (a) orjson, the baseline


def _has_float(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    else:
        return kind is float
    for item in items:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _has_float(item)):
            return True
    return False


def loads_orjson(payload: bytes) -> Any:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload, parse_float=Decimal)
    if _has_float(document):
        return json.loads(payload, parse_float=Decimal)
    return document


loads_msgspec = codec.loads_exact  # candidate (b) is what the codec now parses with


def decoder_over(loads: Callable[[bytes], Any]) -> Decode:
    """The codec's decode with `loads` for the parse."""
    return functools.partial(codec.decode, loads=loads)


# --------------------------------------------------------------------------------- (c) typed


_ENVELOPE = {"originator_id", "originator_version"}
_typed: dict[type, tuple[msgspec.json.Decoder[Any], tuple[str, ...]]] = {}


def _typed_decoder(event_class: type) -> tuple[msgspec.json.Decoder[Any], tuple[str, ...]]:
    """A TypedDict of the class's stored fields, Decimal ones typed; and its datetime fields."""
    found = _typed.get(event_class)
    if found is None:
        fields: dict[str, Any] = {}
        datetimes = []
        for name, hint in typing.get_type_hints(event_class).items():
            if name in _ENVELOPE or typing.get_origin(hint) is typing.ClassVar:
                continue
            options = typing.get_args(hint) or (hint,)
            if Decimal in options:
                fields[name] = Decimal | None
            else:
                fields[name] = Any
                if datetime in options:
                    datetimes.append(name)
        shape_name = f"{event_class.__qualname__}Stored"
        shape = typing.TypedDict(shape_name, fields, total=False)  # type: ignore[misc]
        found = msgspec.json.Decoder(shape, float_hook=Decimal), tuple(datetimes)
        _typed[event_class] = found
    return found


def decode_typed(recorded: RecordedEvent) -> Any:
    event_class = codec._resolve_topic(str(recorded.metadata["topic"]))  # noqa: SLF001
    decoder, datetimes = _typed_decoder(event_class)
    try:
        fields = decoder.decode(recorded.payload)
    except msgspec.MsgspecError:
        return decoder_over(loads_orjson)(recorded)
    for name in datetimes:
        value = fields.get(name)
        if value is not None:
            fields[name] = datetime.fromisoformat(value)
    fields["originator_id"] = uuid.UUID(recorded.stream_id)
    fields["originator_version"] = recorded.version
    domain_event: Any = object.__new__(event_class)
    domain_event.__dict__.update(fields)
    return domain_event


# ----------------------------------------------------------------------------------- measuring


def seconds_for(decode: Decode, events: list[RecordedEvent]) -> float:
    started = perf_counter()
    for recorded in events:
        decode(recorded)
    return perf_counter() - started


def check_same(candidates: dict[str, Decode], events: list[RecordedEvent]) -> None:
    """Every candidate makes the same events as the baseline, Decimals to the last digit."""
    baseline = candidates["a orjson"]
    for recorded in events:
        expected = baseline(recorded).__dict__
        for name, decode in candidates.items():
            actual = decode(recorded).__dict__
            same = expected == actual and {k: str(v) for k, v in expected.items()} == {
                k: str(v) for k, v in actual.items()
            }
            if not same:
                raise AssertionError(f"{name} differs on {recorded.type}: {recorded.payload!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--histories", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    events = recorded_events(args.histories, args.seed)
    candidates: dict[str, Decode] = {
        "a orjson": decoder_over(loads_orjson),
        "b msgspec": decoder_over(loads_msgspec),
        "c typed": decode_typed,
        "codec": codec.decode,
    }
    check_same(candidates, events)
    sizes = sorted(len(e.payload) for e in events)
    print(
        f"{len(events)} events of {args.histories} histories, payload median"
        f" {sizes[len(sizes) // 2]} B, max {sizes[-1]} B; Python {platform.python_version()},"
        f" orjson {version('orjson')}, msgspec {version('msgspec')}"
    )
    best = dict.fromkeys(candidates, float("inf"))
    order = list(candidates)
    for _ in range(3):  # warm-up: caches per class, allocator
        for name in order:
            seconds_for(candidates[name], events)
    for _ in range(args.rounds):
        for name in order:
            best[name] = min(best[name], seconds_for(candidates[name], events))
        order.reverse()
    baseline = best["a orjson"]
    print(f"best of {args.rounds} rounds, per event:")
    for name, seconds in best.items():
        per_event_us = seconds / len(events) * 1e6
        print(f"  {name:10} {per_event_us:6.3f} us   {seconds / baseline:5.3f} x (a)")
    parse_rounds = {
        "a orjson": loads_orjson,
        "b msgspec": loads_msgspec,
    }
    payloads = [e.payload for e in events]
    parse_best = dict.fromkeys(parse_rounds, float("inf"))
    for _ in range(args.rounds):
        for name, loads in parse_rounds.items():
            started = perf_counter()
            for payload in payloads:
                loads(payload)
            parse_best[name] = min(parse_best[name], perf_counter() - started)
    print("the parse alone (payload to dict), per event:")
    for name, seconds in parse_best.items():
        per_event_us = seconds / len(events) * 1e6
        ratio = seconds / parse_best["a orjson"]
        print(f"  {name:10} {per_event_us:6.3f} us   {ratio:5.3f} x (a)")


if __name__ == "__main__":
    main()

"""A payment's or withdrawal's stream as the console's timeline shows it: per event its time,
type, verification outcome, amounts, the whole payload pretty-printed, and its hash links.

Everything here is plain text; the template escapes it. A provider's body is hostile input and
is shown as the characters it holds, never as markup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from adapters.storage.read_models.timelines import amounts_of, verification_of
from ledger.money import loads_exact
from ledger.ports import RecordedEvent
from projections.views import event_view

_INDENT = "  "
# Raw provider bodies inside an event (a webhook's body, a provider call's request and answer).
_BODIES = (("delivery", "body"), ("exchange", "request_body"), ("exchange", "response_body"))


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    position: int
    version: int
    type: str
    recorded_at: str
    verification: str  # verified, unverified, rejected; "" where the event states none
    amounts: list[tuple[str, str]]
    payload: str  # pretty-printed JSON, or base64 where the bytes are not canonical JSON
    bodies: list[tuple[str, str]]  # (label, pretty text) of provider bodies the event holds
    hash: str
    prev_hash: str


def pretty(value: Any, depth: int = 0) -> str:
    """JSON with two-space indents; Decimals digit for digit (no float on the way)."""
    inner = _INDENT * (depth + 1)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping) and value:
        lines = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {pretty(v, depth + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(lines) + "\n" + _INDENT * depth + "}"
    if isinstance(value, list | tuple) and value:
        lines = [inner + pretty(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(lines) + "\n" + _INDENT * depth + "]"
    return json.dumps(value, ensure_ascii=False)


def _bodies(payload: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if not isinstance(payload, Mapping):
        return found
    for holder, field in _BODIES:
        outer = payload.get(holder)
        text = outer.get(field) if isinstance(outer, Mapping) else None
        if not isinstance(text, str) or not text:
            continue
        try:
            shown = pretty(loads_exact(text))
        except ValueError:
            shown = text  # not JSON: the text as it came
        found.append((f"{holder} {field.replace('_', ' ')}", shown))
    return found


def timeline_event(event: RecordedEvent) -> TimelineEvent:
    view = event_view(event)  # the same fields /v1/{payments,withdrawals}/{id}/events gives
    payload = view["payload"]
    is_json = view["payload_encoding"] == "json"
    document = payload if is_json and isinstance(payload, Mapping) else {}
    return TimelineEvent(
        position=event.position,
        version=event.version,
        type=event.type,
        recorded_at=str(view["recorded_at"]),
        verification=verification_of(document) or "",
        amounts=list(amounts_of(document).items()),
        payload=pretty(payload) if is_json else str(payload),
        bodies=_bodies(payload) if is_json else [],
        hash=view["hash"],
        prev_hash=view["prev_hash"],
    )

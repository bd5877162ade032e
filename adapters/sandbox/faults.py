"""Faults a sandbox injects into its provider API, per operation, for the next N calls.

A fault is taken from the queue of the first name the request answers to (its operation, an
alias of it, its route template, its path), so `create_payment` and `/api/transactions` queue
for the same calls. See `adapters/sandbox/control.py` for the control routes that fill it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

# Longer than any client timeout in this project (the ledger's is 10 seconds), so that the
# client gives up first; the sandbox lets go of held requests at once when it shuts down.
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_DELAY_SECONDS = 1.0
_STATUS_RANGE = range(100, 600)


class FaultKind(StrEnum):
    STATUS = "status"  # answer this HTTP status, the work not done
    TIMEOUT = "timeout"  # hold the request unanswered for `seconds`, then close; work not done
    DROP_BEFORE = "drop_before"  # close the connection unanswered; work not done
    DROP_AFTER = "drop_after"  # do the work, then close the connection unanswered
    DELAY_AFTER = "delay_after"  # do the work, answer after `seconds`

    @property
    def does_the_work(self) -> bool:
        return self in {FaultKind.DROP_AFTER, FaultKind.DELAY_AFTER}


class FaultInvalid(ValueError):
    """A `/_sandbox/faults` body that names no fault the sandbox can inject."""


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    status: int | None = None  # STATUS only
    seconds: float | None = None  # TIMEOUT and DELAY_AFTER only

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"kind": self.kind.value}
        if self.status is not None:
            shown["status"] = self.status
        if self.seconds is not None:
            shown["seconds"] = self.seconds
        return shown


def parse_faults(body: dict[str, Any]) -> list[Fault]:
    """The faults a control body asks for, in order: `statuses` (a list of HTTP statuses, one
    call each) or `kind` with `times` (default 1), `status` or `seconds` as the kind needs."""
    statuses = body.get("statuses")
    if statuses is not None:
        if "kind" in body:
            raise FaultInvalid("give either statuses or kind, not both")
        if not isinstance(statuses, list):
            raise FaultInvalid("statuses must be a list of HTTP statuses")
        return [Fault(FaultKind.STATUS, status=_status(status)) for status in statuses]
    try:
        kind = FaultKind(str(body.get("kind")))
    except ValueError:
        known = ", ".join(kind.value for kind in FaultKind)
        raise FaultInvalid(f"kind must be one of {known} (or give statuses)") from None
    times = body.get("times", 1)
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise FaultInvalid("times must be a positive whole number")
    return [_fault(kind, body)] * times


def _fault(kind: FaultKind, body: dict[str, Any]) -> Fault:
    if kind is FaultKind.STATUS:
        return Fault(kind, status=_status(body.get("status")))
    if kind is FaultKind.TIMEOUT:
        return Fault(kind, seconds=_seconds(body.get("seconds", DEFAULT_TIMEOUT_SECONDS)))
    if kind is FaultKind.DELAY_AFTER:
        return Fault(kind, seconds=_seconds(body.get("seconds", DEFAULT_DELAY_SECONDS)))
    return Fault(kind)


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in _STATUS_RANGE:
        raise FaultInvalid(f"{value!r} is not an HTTP status")
    return value


def _seconds(value: Any) -> float:
    # A duration to sleep, not an amount of money: float is what asyncio.sleep takes.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or value <= 0:
        raise FaultInvalid("seconds must be a positive number")
    return float(value)


class FaultQueues:
    """The queued faults by the name they were queued under."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Fault]] = {}

    def add(self, name: str, faults: list[Fault]) -> list[Fault]:
        queue = self._queues.setdefault(name, deque())
        queue.extend(faults)
        return list(queue)

    def take(self, names: list[str]) -> Fault | None:
        """The next fault for a request known by `names` (most specific first), if any."""
        for name in names:
            queue = self._queues.get(name)
            if queue:
                return queue.popleft()
        return None

    def clear(self) -> int:
        count = sum(len(queue) for queue in self._queues.values())
        self._queues.clear()
        return count

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        return {
            name: [fault.to_json() for fault in queue]
            for name, queue in self._queues.items()
            if queue
        }

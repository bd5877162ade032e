"""Which payments still have to be asked about at their provider, and when: the bookkeeping of
`ProviderQueries`, kept apart from its I/O so that its rules read (and test) on their own.

A payment needs asking while an unverified delivery in its stream is newer (by log position)
than what the last query answer covered. That fact lives in the log, which `ProviderQueries`
scans to fill this table, so a restart loses nothing. Only timing lives here: when a payment may
be asked again (spacing after an answer, backoff after a failure) and how fast one provider may
be asked at all. A flood of forged deliveries naming one payment thus makes one query at a time,
at most one per `spacing_seconds`; floods naming many payments, at most `rate_per_second`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueryPolicy:
    spacing_seconds: float = 30.0  # least time between two queries about one payment
    rate_per_second: float = 5.0  # queries to one provider, whatever the number of payments
    burst: int = 10  # queries one provider may get at once after a quiet time
    retry_first_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    # Failures in a row after which a payment waits for a newer delivery (or a restart), so
    # that a payment the provider will never answer for does not grow its stream forever.
    attempts_max: int = 10


@dataclass(frozen=True, slots=True)
class Asking:
    """One query to make: about the payment of `stream_id`, for the unverified deliveries up to
    log position `covers_through` (the answer records it, which is how the log says "asked")."""

    stream_id: str
    provider: str
    covers_through: int


@dataclass(slots=True)
class _Payment:
    provider: str
    newest_unverified: int = 0
    answered_through: int = 0
    failures: int = 0
    not_before: float = 0.0  # monotonic seconds
    in_flight: bool = False

    @property
    def unanswered(self) -> bool:
        return self.newest_unverified > self.answered_through


class QuerySchedule:
    """Times are monotonic seconds, passed in by the caller."""

    def __init__(self, policy: QueryPolicy) -> None:
        self.policy = policy
        self._payments: dict[str, _Payment] = {}

    def note_unverified(self, stream_id: str, provider: str, position: int) -> None:
        payment = self._payments.setdefault(stream_id, _Payment(provider))
        if position > payment.newest_unverified:
            payment.newest_unverified = position
            # A payment given up on earns one more try by a newer delivery; one that is
            # backing off keeps its pause, so a flood cannot hurry a failing provider.
            payment.failures = min(payment.failures, self.policy.attempts_max - 1)

    def note_answered(self, stream_id: str, covers_through: int) -> None:
        payment = self._payments.get(stream_id)
        if payment is not None:
            payment.answered_through = max(payment.answered_through, covers_through)

    def due(self, now: float) -> list[Asking]:
        return [
            Asking(stream_id, payment.provider, payment.newest_unverified)
            for stream_id, payment in self._payments.items()
            if self._waiting(payment) and now >= payment.not_before
        ]

    def waiting(self) -> int:
        """Payments with unanswered deliveries that are not being asked about right now."""
        return sum(self._waiting(payment) for payment in self._payments.values())

    def start(self, asking: Asking) -> None:
        self._payments[asking.stream_id].in_flight = True

    def answered(self, asking: Asking, now: float) -> None:
        payment = self._payments[asking.stream_id]
        payment.in_flight = False
        payment.answered_through = max(payment.answered_through, asking.covers_through)
        payment.failures = 0
        payment.not_before = now + self.policy.spacing_seconds

    def failed(self, asking: Asking, now: float) -> None:
        """Backs off: doubling from `retry_first_seconds` up to `retry_max_seconds`, each pause
        drawn from the upper half of its ceiling so that payments failed together spread out."""
        payment = self._payments[asking.stream_id]
        payment.in_flight = False
        payment.failures += 1
        exponent = min(payment.failures - 1, 32)
        ceiling = min(self.policy.retry_max_seconds, self.policy.retry_first_seconds * 2**exponent)
        payment.not_before = now + random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter

    def give_up(self, asking: Asking) -> None:
        """Nothing can be asked (no query for it, payment gone): only a newer delivery re-arms."""
        payment = self._payments[asking.stream_id]
        payment.in_flight = False
        payment.failures = self.policy.attempts_max

    def forget_settled(self, now: float) -> None:
        """Drops payments with nothing unanswered once their spacing is over: memory holds
        only what is pending or recently asked."""
        settled = [
            stream_id
            for stream_id, payment in self._payments.items()
            if not payment.unanswered and not payment.in_flight and now >= payment.not_before
        ]
        for stream_id in settled:
            del self._payments[stream_id]

    def _waiting(self, payment: _Payment) -> bool:
        return (
            payment.unanswered
            and not payment.in_flight
            and payment.failures < self.policy.attempts_max
        )


class RateLimit:
    """A token bucket: `burst` queries at once, then `rate_per_second`."""

    def __init__(self, rate_per_second: float, burst: int, now: float) -> None:
        if rate_per_second <= 0:
            raise ValueError("a provider's query rate must be positive")
        self.rate_per_second = rate_per_second
        self.burst = max(burst, 1)
        self.tokens = float(self.burst)
        self.updated = now

    def reserve(self, now: float) -> float:
        """Takes one token; returns the seconds to wait before using it (0 when one was there).
        Tokens may go negative: each caller waits for its own, in the order they reserved."""
        refill = (now - self.updated) * self.rate_per_second
        self.tokens = min(float(self.burst), self.tokens + refill)
        self.updated = now
        self.tokens -= 1
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate_per_second

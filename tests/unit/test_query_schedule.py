"""When the ledger asks a provider about a payment (adapters/services/query_schedule.py)."""

from __future__ import annotations

from adapters.services.query_schedule import Asking, QueryPolicy, QuerySchedule, RateLimit

POLICY = QueryPolicy(spacing_seconds=30, retry_first_seconds=1, retry_max_seconds=8, attempts_max=3)


def schedule_with(*positions: int) -> QuerySchedule:
    schedule = QuerySchedule(POLICY)
    for position in positions:
        schedule.note_unverified("payment-1", "cryptofuse", position)
    return schedule


def test_many_unverified_deliveries_for_one_payment_make_one_asking_for_the_newest():
    schedule = schedule_with(10, 12, 11)
    assert [Asking("payment-1", "cryptofuse", 12)] == schedule.due(0)


def test_a_payment_being_asked_about_is_not_due_again():
    schedule = schedule_with(10)
    (asking,) = schedule.due(0)
    schedule.start(asking)
    schedule.note_unverified("payment-1", "cryptofuse", 20)
    assert ([], 0) == (schedule.due(0), schedule.waiting())


def test_after_an_answer_a_newer_delivery_waits_for_the_spacing():
    schedule = schedule_with(10)
    (asking,) = schedule.due(0)
    schedule.start(asking)
    schedule.answered(asking, 100)
    schedule.note_unverified("payment-1", "cryptofuse", 20)
    assert [] == schedule.due(129)
    assert [Asking("payment-1", "cryptofuse", 20)] == schedule.due(130)


def test_an_answer_found_in_the_log_covers_the_deliveries_up_to_its_position_only():
    schedule = schedule_with(10, 20)
    schedule.note_answered("payment-1", 15)
    assert [Asking("payment-1", "cryptofuse", 20)] == schedule.due(0)
    schedule.note_answered("payment-1", 20)
    assert [] == schedule.due(0)


def test_failures_back_off_doubling_up_to_the_cap_then_wait_for_a_newer_delivery():
    schedule = schedule_with(10)
    now = 0.0
    pauses = []
    for _ in range(POLICY.attempts_max):
        (asking,) = schedule.due(now)
        schedule.start(asking)
        schedule.failed(asking, now)
        earliest = now
        while not schedule.due(now) and now < earliest + 100:
            now += 0.125
        pauses.append(now - earliest)
    assert 0.5 <= pauses[0] <= 1.125
    assert 1 <= pauses[1] <= 2.125
    assert now >= 100  # given up: never due again by itself
    schedule.note_unverified("payment-1", "cryptofuse", 11)
    assert [Asking("payment-1", "cryptofuse", 11)] == schedule.due(now)


def test_settled_payments_are_forgotten_once_their_spacing_is_over():
    schedule = schedule_with(10)
    (asking,) = schedule.due(0)
    schedule.start(asking)
    schedule.answered(asking, 0)
    schedule.forget_settled(29)
    schedule.note_unverified("payment-1", "cryptofuse", 20)
    assert [] == schedule.due(29)  # still spaced: it was remembered
    schedule.note_answered("payment-1", 20)
    schedule.forget_settled(30)
    schedule.note_unverified("payment-1", "cryptofuse", 30)
    assert [Asking("payment-1", "cryptofuse", 30)] == schedule.due(30)


def test_a_provider_gets_its_burst_at_once_then_its_rate():
    limit = RateLimit(rate_per_second=10, burst=2, now=0)
    waits = [limit.reserve(0) for _ in range(4)]
    assert [0.0, 0.0] == waits[:2]
    assert abs(waits[2] - 0.1) < 1e-9
    assert abs(waits[3] - 0.2) < 1e-9

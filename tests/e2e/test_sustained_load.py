"""The CI variant of bench/sustained_load.py: `ledger serve` as a subprocess under ~15 s of
mixed load at 25 operations/s (payments at all five providers with their sandboxes' scenarios,
their deliveries reordered, repeated and some badly signed, withdrawals, payment, list and
balance reads), then the bench's checks. The long variant (60 s at 40/s after 10 s of warm-up)
is `python -m bench.sustained_load`; its figures are in docs/guarantees.md.

One load run serves both tests (the second reuses the report of the first when they run in
the same session)."""

from __future__ import annotations

import pytest

from bench.sustained_load import Options, Report, run_load

pytestmark = pytest.mark.slow

SHORT = Options(seconds=12.0, warm_up_seconds=3.0, rate=25.0, concurrency=16)
_REPORTS: list[Report] = []


async def the_report() -> Report:
    if not _REPORTS:
        report = await run_load(SHORT)
        print(report.text())
        _REPORTS.append(report)
    return _REPORTS[0]


async def test_under_sustained_mixed_load_every_delivery_applies_once_and_memory_stays_flat():
    """Every webhook 200 is one receipt and every 401 one rejection; each verified dedupe key
    is applied exactly once in its subject's stream; no 5xx or other unexpected answer; every
    payment created is listed; balances sum to zero per currency; GET /v1/balances equals the
    rebuilt balances; RSS of the server at the end within 20% of RSS after warm-up."""
    report = await the_report()
    assert report.requests_measured >= 0.9 * SHORT.rate * SHORT.seconds, report.text()
    for check in ("acknowledged", "exactly once", "answers", "listed", "balanced", "memory",
                  "service"):  # fmt: skip
        assert [] == report.failed(check), report.text()
    balances_differ = [f for f in report.failed("rebuild") if "GET /v1/balances" in f]
    assert [] == balances_differ, report.text()
    assert not any(f.startswith("rebuild: account_balances") for f in report.failures)


async def test_after_sustained_load_every_read_model_equals_its_rebuild_row_for_row():
    report = await the_report()
    assert [] == report.failed("rebuild"), report.text()

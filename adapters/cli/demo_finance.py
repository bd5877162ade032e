"""The demo's closing sections: balances per account and the reconciliation summary, read from
the ledger's own finance endpoints once its projections have caught up with the log."""

from __future__ import annotations

import asyncio
import time

from adapters.cli.demo_driver import DemoRun
from adapters.cli.tables import format_table

CATCH_UP_SECONDS = 20.0


async def _caught_up(run: DemoRun) -> bool:
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while time.monotonic() < deadline:
        status, body = await run.api.call("GET", "/v1/projections")
        if status == 200 and all(p["lag"] == 0 and not p["failure"] for p in body["items"]):
            return True
        await asyncio.sleep(0.2)
    print(f"\nprojections did not catch up within {CATCH_UP_SECONDS:.0f} s: {body}")
    return False


async def balances_section(run: DemoRun) -> None:
    if not await _caught_up(run):
        run.notes.append("balances and reconciliation were read before projections caught up")
    status, body = await run.api.call("GET", "/v1/balances")
    print(f"\nBalances (this run only, schema {run.database.schema}; debit positive, so a"
          " credit such as merchant:payable is negative; per currency posted and pending each"
          " sum to zero)")  # fmt: skip
    if status != 200:
        print(f"  GET /v1/balances answered {status}: {body}")
        return
    headers = ("account", "currency", "posted", "pending", "available")
    rows = [[b["account"], b["currency"], b["posted"], b["pending"], b["available"]]
            for b in body["items"]]  # fmt: skip
    print("\n".join(format_table(headers, rows, frozenset({"posted", "pending", "available"}))))


async def reconciliation_section(run: DemoRun) -> None:
    status, body = await run.api.call("GET", "/v1/reconciliation/summary")
    print("\nReconciliation: open items per reason")
    if status != 200:
        print(f"  GET /v1/reconciliation/summary answered {status}: {body}")
        return
    headers = ("reason", "currency", "items", "difference")
    rows = [[r["reason"], r["currency"], str(r["items"]), r["difference"]] for r in body["items"]]
    print("\n".join(format_table(headers, rows, frozenset({"items", "difference"}))))
    print(f"{body['open_items']} open items. Counting: {body['counting']}.")


def look_further_section(run: DemoRun) -> None:
    """The last lines: where the run's data is, and the commands that show it."""
    database = run.database
    example = next((s for s in run.payments if s.case.scenario == "late" and s.subject_id), None)
    example = example or next((s for s in run.payments if s.subject_id), None)
    print(f"\nTo look further (this run's data stays in schema {database.schema}):")
    if database.shown_url is None:
        print(
            "  (the embedded database runs only while the demo does: `ledger demo --serve` keeps"
            " it, the API and the console up after the report; or set database_url in the"
            " configuration to keep the demo's data for the commands below)"
        )
    else:
        print(f"  export LEDGER_DATABASE_URL='{database.shown_url}'")
    if example is not None:
        print(f"  ledger payments show {example.subject_id}"
              f"   # {example.case.provider} {example.case.scenario}")  # fmt: skip
    print("  ledger reconcile report")
    print("  ledger serve --port 8080, then the console: http://127.0.0.1:8080/console/")

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
    print("\nBalances (every run on this database; debit positive; per currency posted and"
          " pending each sum to zero)")  # fmt: skip
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
    print(f"{body['open_items']} open items; `ledger reconcile report` lists them one by one")

"""`ledger demo`: payments and withdrawals through all five providers over real HTTP on loopback.

The five provider sandboxes and the ledger's HTTP service run on free loopback ports, on the
configured database (else the embedded PostgreSQL), in a schema of their own made for this run:
fresh sandboxes hold nothing from an earlier run, so neither may the ledger. Payments and
withdrawals are created through the ledger's API, the sandboxes play scenarios (full, partial,
over, duplicate, several deposits, failed, expired with and without funds, late; withdrawals
completed, failed, held for review) and post their webhooks to the ledger, completed payments are
settled as finance would, and the report is read back from the ledger's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import aiohttp

from adapters.cli.demo_driver import (
    DemoRun,
    LedgerApi,
    LedgerClock,
    ScenarioDriver,
    poll_balances,
)
from adapters.cli.demo_finance import (
    balances_section,
    look_further_section,
    reconciliation_section,
)
from adapters.cli.demo_plan import payment_cases, withdrawal_cases
from adapters.cli.demo_report import (
    Section,
    event_log_section,
    notes_section,
    payments_section,
    scenarios_section,
    withdrawals_section,
)
from adapters.cli.demo_schema import fresh_schema_pool
from adapters.cli.service import (
    build_app,
    describe_database,
    listening_socket,
    serving,
    socket_url,
    stop_on_signals,
)
from adapters.config import PROVIDER_IDS, ApiSettings, ApiToken, Settings
from adapters.http.keys import POLLER
from adapters.sandbox.fleet import LOOPBACK, SandboxFleet, sandbox_fleet
from adapters.storage.postgres_store import PostgresEventStore

# The report, in order. Each section gets the finished run (the ledger's API and store, and the
# payments and withdrawals the demo asked for); add further sections (balances, reconciliation
# summary) here.
REPORT: list[Section] = [
    scenarios_section,
    payments_section,
    withdrawals_section,
    notes_section,
    balances_section,
    reconciliation_section,
    event_log_section,
]


def demo_settings(settings: Settings, public_url: str, fleet: SandboxFleet, token: str) -> Settings:
    """The configuration's database and limits, with the sandboxes as providers and one demo
    token holding every scope."""
    api = ApiSettings(tokens=[ApiToken(name="demo", token=token, scopes=["admin"])])
    return settings.model_copy(
        update={"public_url": public_url, "api": api, "providers": fleet.provider_tables()}
    )


async def run_demo(settings: Settings, *, keep_serving: bool = False) -> bool:
    """Runs the demo and prints its report; False when some step went wrong (the report says
    which). With `keep_serving`, the ledger then serves the demo's data (API and console) until
    SIGINT or SIGTERM."""
    began = time.monotonic()
    token = secrets.token_urlsafe(24)
    clock = LedgerClock()
    print(f"Starting the five provider sandboxes and the ledger ({describe_database(settings)})…")
    async with (
        fresh_schema_pool(settings) as (pool, database),
        sandbox_fleet(PROVIDER_IDS) as fleet,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        store = PostgresEventStore(pool)
        with contextlib.closing(listening_socket(LOOPBACK, 0)) as sock:
            url = socket_url(sock)
            ledger_settings = demo_settings(settings, url, fleet, token)
            await fleet.send_webhooks_to(ledger_settings)
            app = build_app(ledger_settings, store, clock=clock)
            async with serving(app, sock):
                print(f"ledger on {url}; sandboxes: " + ", ".join(
                    f"{provider} {sandbox_url}" for provider, sandbox_url in fleet.urls().items()
                ))  # fmt: skip
                run = DemoRun(LedgerApi(url, token, http), store, fleet.urls(), database)
                driver = ScenarioDriver(run, clock)
                # Every payment is paid (and settled, if completed) before any withdrawal asks
                # for the funds it brought.
                await driver.payments(payment_cases(PROVIDER_IDS))
                await driver.settle_completed()
                await poll_balances(run, app[POLLER])
                await driver.withdrawals(withdrawal_cases(PROVIDER_IDS))
                for section in REPORT:
                    await section(run)
                _print_outcome(run, time.monotonic() - began)
                look_further_section(run)
                if keep_serving:
                    await _serve_until_stopped(url, token)
    return not run.problems


async def _serve_until_stopped(url: str, token: str) -> None:
    """Keeps the block serving (the demo's ledger, its data and the console) until a signal."""
    print(
        f"\nThe ledger keeps serving this demo's data until Ctrl-C.\n"
        f"  finance console: {url}/console/  (sign in with the token below)\n"
        f"  API:             {url}/v1/docs/\n"
        f"  token (every scope, this run only): {token}",
        flush=True,
    )
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await stop.wait()


def _print_outcome(run: DemoRun, seconds: float) -> None:
    done = f"{len(run.payments)} payments and {len(run.withdrawals)} withdrawals"
    if not run.problems:
        print(f"\nDemo done in {seconds:.1f} s: {done}, every webhook accepted.")
        return
    print(f"\nDemo done in {seconds:.1f} s: {done}, with {len(run.problems)} problems:")
    for problem in run.problems:
        print(f"  - {problem}")

"""`ledger demo` as a finance person reads it: every scenario explained, completed payments
settled (so merchant:payable is a credit), sandboxes holding only what the ledger booked (no
provider balance mismatch from a sandbox float), each run in a schema of its own, and the
commands to look further at the end."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest

from adapters.cli.demo_plan import SCENARIOS

REPOSITORY = Path(__file__).resolve().parents[2]


async def run_demo(config: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli.main",
        "demo",
        "--config",
        str(config),
        cwd=REPOSITORY,
        # LEDGER_* variables would override the configuration file; the test's own must win.
        env={k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(90):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


def section(text: str, title: str, following: str) -> str:
    return text.split(title, 1)[1].split(following, 1)[0]


@pytest.fixture
async def demo_runs(database_url, schema, tmp_path):
    """Two runs of the demo on one database; their schemas are dropped afterwards."""
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{database_url}?search_path={schema}"\n')
    outputs = [await run_demo(config), await run_demo(config)]
    yield outputs
    made = {m for _, text in outputs for m in re.findall(r"schema (ledger_demo_\w+)", text)}
    connection = await asyncpg.connect(database_url)
    try:
        for name in made:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


async def test_the_demo_is_one_a_finance_person_can_trust(demo_runs):
    (code, text), (again_code, again) = demo_runs
    assert (0, 0) == (code, again_code), text + again

    # Every scenario played is explained in one line, CoinCoin's "fail" included.
    scenarios = section(text, "Scenarios (", "Payments (")
    for name, explanation in SCENARIOS.items():
        assert f"{name:18} {explanation}" in scenarios, name
    assert re.search(r"coincoin fail: .*0\.5 USDT", scenarios)

    # Completed payments are settled, so what the merchant is owed is a credit (negative).
    payments = section(text, "Payments (", "Withdrawals (")
    assert re.search(r"^coinpay\s+full_\w+\s+completed\s+exact\s.*\syes$", payments, re.MULTILINE)
    balances = section(text, "Balances (", "Reconciliation:")
    payable = re.findall(r"^merchant:payable\s+\S+\s+(-?[0-9.]+)\s", balances, re.MULTILINE)
    assert payable, balances
    assert all(amount.startswith("-") for amount in payable), balances

    # The sandboxes start with what the ledger can know: the balances Cryptofuse and Payment
    # Engine report are compared, and no float shows as a mismatch.
    assert re.search(r"balances were polled .*cryptofuse \(1\), payment_engine \(1\)", text)
    reconciliation = section(text, "Reconciliation:", "Event log:")
    assert "provider_balance_mismatch" not in reconciliation
    assert "a late payment is one paid_late item" in reconciliation

    # It ends with the commands to look further, at this run's own schema.
    ending = text.rsplit("To look further", 1)[1]
    assert re.search(r"ledger payments show [0-9a-f-]{36}", ending)
    assert "ledger reconcile report" in ending
    assert "/console/" in ending
    first = re.search(r"schema (ledger_demo_\w+)", text)
    second = re.search(r"schema (ledger_demo_\w+)", again)
    assert first
    assert second
    assert first.group(1) != second.group(1)
    # A rerun shows this run alone: the same balances as the first, not twice them.
    assert balances == section(again, "Balances (", "Reconciliation:").replace(
        second.group(1), first.group(1)
    )

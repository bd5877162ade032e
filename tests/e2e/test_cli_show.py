"""`ledger payments show` and `ledger withdrawals show`: a subject's timeline from its stream,
found by id or by the merchant's reference, as a table or as JSON, from a real ledger's database.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from tests.e2e.ledger_world import fund_payment_engine, open_world
from tests.e2e.test_cli import ledger_command, schema_url

HEX_64 = re.compile(r"^[0-9a-f]{64}$")
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture
async def world(store, monkeypatch):
    async with open_world(store, monkeypatch) as opened:
        yield opened


@pytest.fixture
def config(database_url, schema, tmp_path):
    path = tmp_path / "ledger.toml"
    path.write_text(f'database_url = "{schema_url(database_url, schema)}"\n')
    return path


async def show(config, *arguments: str) -> tuple[int, str, str]:
    return await ledger_command(*arguments, "--config", str(config))


async def test_a_payment_is_shown_by_id_and_by_order_id_with_its_verified_deliveries(world, config):
    payment = await world.pay("payment_engine", "SHOW_1", "100.00", "USD")
    await world.scenario("payment_engine", payment["provider_ref"], "partial")
    code, by_id, err = await show(config, "payments", "show", payment["payment_id"])
    assert (0, "") == (code, err)
    code, by_order, _ = await show(config, "payments", "show", "SHOW_1")
    assert (0, by_id) == (code, by_order)
    assert f"payment {payment['payment_id']} at payment_engine, order id SHOW_1" in by_id
    rows = {line.split()[2]: line for line in by_id.splitlines()[4:]}
    assert "expected_amount 100.00" in rows["Payment.Created"]
    assert "verified" in rows["Payment.DeliveryRecorded"]
    assert "amount 50.00" in rows["Payment.DepositDetected"]
    for line in rows.values():
        assert re.search(r"\s\d{4}-\d\d-\d\dT\S+Z\s", line), line
        assert re.search(r"\s[0-9a-f]{12}$", line), line


async def test_the_json_timeline_parses_with_full_hashes_and_utc_times(world, config):
    payment = await world.pay("payment_engine", "SHOW_2", "100.00", "USD")
    await world.scenario("payment_engine", payment["provider_ref"], "full")
    code, out, err = await show(config, "payments", "show", "payment_engine:SHOW_2", "--json")
    assert (0, "") == (code, err)
    shown = json.loads(out)
    assert (payment["payment_id"], "payment_engine", "SHOW_2") == (
        shown["id"],
        shown["provider"],
        shown["order_id"],
    )
    events = shown["events"]
    assert list(range(1, len(events) + 1)) == [event["version"] for event in events]
    assert all(HEX_64.match(event["hash"]) for event in events)
    assert all(ISO_Z.match(event["recorded_at"]) for event in events)
    deliveries = [event for event in events if event["type"].endswith("DeliveryRecorded")]
    assert ["verified"] == [event["verification"] for event in deliveries]
    assert all(event["verification"] is None for event in events if event not in deliveries)


async def test_a_withdrawal_is_shown_by_request_id(world, config):
    await fund_payment_engine(world, "SHOW_FUNDS", "50.00")
    withdrawal = await world.withdraw("payment_engine", "SHOW_W1", "10.00", "USD")
    code, out, err = await show(config, "withdrawals", "show", "SHOW_W1", "--json")
    assert (0, "") == (code, err)
    shown = json.loads(out)
    assert (withdrawal["withdrawal_id"], "SHOW_W1") == (shown["id"], shown["request_id"])
    assert "Withdrawal.Requested" == shown["events"][0]["type"]
    assert {"amount": "10.00"}.items() <= shown["events"][0]["amounts"].items()


async def test_an_unknown_id_is_one_line_and_exit_1(world, config):
    await world.pay("payment_engine", "SHOW_3", "100.00", "USD")
    for key in ("NO_SUCH_ORDER", "00000000-0000-4000-8000-000000000000", "SHOW_3"):
        code, out, err = await show(config, "withdrawals", "show", key)
        assert (1, "") == (code, out), key
        assert [f"ledger: no withdrawal with id or request id {key!r}"] == err.splitlines()


async def test_reconcile_report_shows_references_and_amounts_at_the_currency_scale(world, config):
    payment = await world.pay("payment_engine", "SHOW_UNDER", "100.00", "USD")
    await world.scenario("payment_engine", payment["provider_ref"], "partial")
    await world.ledger.caught_up()
    code, out, err = await show(
        config, "reconcile", "report", "--format", "csv", "--reason", "underpaid"
    )
    assert (0, "") == (code, err)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [("SHOW_UNDER", payment["provider_ref"], "100.00", "50.00")] == [
        (row["order_id"], row["provider_ref"], row["expected"], row["received"]) for row in rows
    ]
    assert rows[0]["detected_at"].endswith("Z")
    code, table, _ = await show(config, "reconcile", "report", "--provider", "payment_engine")
    assert 0 == code
    assert "SHOW_UNDER" in table
    header, _rule, *rows, count = table.splitlines()
    assert header.split()[:3] == ["subject_type", "subject_id", "order_id"]
    assert f"{len(rows)} items" == count
    assert any("SHOW_UNDER" in row and "underpaid" in row for row in rows)

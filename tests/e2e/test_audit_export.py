"""The audit export over real HTTP on loopback and the `ledger audit` command as a process.

The log is written by all five providers' sandboxes (webhook_kit's rig); a second app on the
same database, with its own data dir for the signing key, serves the audit endpoints.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

import adapters.http.audit as audit_http
from adapters.audit.export import PAGE_SIZE
from adapters.audit.offline import verify_export
from adapters.audit.signing import public_key_of_pem
from adapters.config import Settings
from adapters.http.app import init_app
from ledger.audit_files import read_rows
from ledger.checkpoints import read_checkpoints
from ledger.ports import NewEvent
from tests.e2e.harness import TOKEN, Ledger, free_port, serve
from tests.e2e.test_cli import REPOSITORY, child_environment, schema_url
from tests.e2e.webhook_kit import PROVIDERS, Rig, rig

AUDITOR = "auditor-token"
READER = "reader-token"


@asynccontextmanager
async def audit_ledger(store, data_dir: Path) -> AsyncIterator[Ledger]:
    settings = Settings(
        api={
            "tokens": [
                {"name": "admin", "token": TOKEN, "scopes": ["admin"]},
                {"name": "auditor", "token": AUDITOR, "scopes": ["audit:export"]},
                {"name": "reader", "token": READER, "scopes": ["payments:read"]},
            ]
        },
        data_dir=data_dir,
        audit={"checkpoint_every_seconds": 0},
        projections_worker="off",
        expiry_sweep_seconds=0,
        balance_poll_seconds=0,
        recovery_seconds=0,
        provider_query_seconds=0,
    )
    app = init_app(settings, store=store, adapters={})
    async with serve(app, free_port()) as url, aiohttp.ClientSession() as http:
        yield Ledger(url, http, store, app)


async def every_provider_pays(bench: Rig, audit: Ledger) -> list[str]:
    """One full payment per provider, with a checkpoint signed half way and one at the end."""
    payment_ids = []
    for number, provider in enumerate(PROVIDERS):
        payment = await bench.create_payment(provider)
        payment_ids.append(payment["payment_id"])
        for delivery in await bench.scenario(provider, payment["provider_ref"], "full"):
            assert 200 == (await bench.deliver(delivery))[0]
        if number in {2, len(PROVIDERS) - 1}:
            status, checkpoint = await audit.call("POST", "/v1/audit/checkpoints")
            assert 201 == status, checkpoint
    # Reading a payment waits for the applier: what the export sees is then settled.
    await bench.view(payment_ids[-1])
    return payment_ids


async def export(audit: Ledger, token: str = AUDITOR, **params: str) -> tuple[int, str, dict]:
    async with audit.http.get(
        audit.url + "/v1/audit/events",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    ) as reply:
        return reply.status, await reply.text(), dict(reply.headers)


def lines_of(text: str) -> list[str]:
    return text.splitlines(keepends=True)


async def ledger_command(*arguments: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli.main",
        *arguments,
        cwd=REPOSITORY,
        env=child_environment(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_an_export_of_five_providers_verifies_offline_against_signed_checkpoints(
    store, tmp_path
):
    async with rig(store) as bench, audit_ledger(store, tmp_path / "data") as audit:
        payment_ids = await every_provider_pays(bench, audit)
        status, text, headers = await export(audit)
        head = (await audit.call("GET", "/v1/audit/head"))[1]
        listed = (await audit.call("GET", "/v1/audit/checkpoints"))[1]
        key = (await audit.call("GET", "/v1/audit/public-key"))[1]
        events = (await bench.ledger.call("GET", f"/v1/payments/{payment_ids[0]}/events"))[1]
    assert (200, "chunked") == (status, headers["Transfer-Encoding"])
    checkpoints = read_checkpoints(json.dumps(listed))
    public_key = public_key_of_pem(key["pem"].encode())
    verified = verify_export(
        read_rows(lines_of(text)), checkpoints=checkpoints, public_key=public_key
    )
    assert (head["position"], head["hash"], 2) == (
        verified.rows,
        verified.head_hash,
        verified.checkpoints,
    )
    rows = [json.loads(line) for line in lines_of(text)]
    assert 2 == sum(1 for row in rows if row["stream_id"] == "audit-checkpoints")
    assert all(isinstance(item["payload"], dict) for item in events["items"])
    # The auditor's own files, checked by the command with no database at all.
    (tmp_path / "export.jsonl").write_text(text)
    (tmp_path / "checkpoints.json").write_text(json.dumps(listed))
    (tmp_path / "key.pem").write_text(key["pem"])
    code, out, err = await ledger_command(
        "audit", "verify", str(tmp_path / "export.jsonl"),
        "--checkpoints", str(tmp_path / "checkpoints.json"),
        "--public-key", str(tmp_path / "key.pem"),
    )  # fmt: skip
    assert (0, "") == (code, err)
    assert f"export verified: {head['position']} events" in out
    assert "2 of 2 checkpoints matched" in out


async def test_after_pages_concatenate_to_the_full_export_and_csv_carries_the_same_rows(
    store, tmp_path
):
    async with rig(store) as bench, audit_ledger(store, tmp_path / "data") as audit:
        await every_provider_pays(bench, audit)
        whole = (await export(audit))[1]
        middle = len(lines_of(whole)) // 3
        pages = [
            (await export(audit, before=str(middle + 1)))[1],
            (await export(audit, after=str(middle), before=str(2 * middle + 1)))[1],
            (await export(audit, after=str(2 * middle)))[1],
        ]
        status, csv_text, headers = await export(audit, format="csv")
    assert whole == "".join(pages)
    assert middle == verify_export(read_rows(lines_of(pages[1]))).rows  # the chain continues
    assert (200, "text/csv") == (status, headers["Content-Type"].split(";")[0])
    assert csv_text.startswith("partition,position,stream_id,")
    assert list(read_rows(lines_of(whole))) == list(read_rows(lines_of(csv_text)))


async def test_a_tampered_export_file_is_refused_by_the_command_naming_the_position(
    store, tmp_path, database_url, schema
):
    async with rig(store, ("payment_engine", "coinpay")) as bench:
        for provider in ("payment_engine", "coinpay"):
            payment = await bench.create_payment(provider)
            for delivery in await bench.scenario(provider, payment["provider_ref"], "full"):
                assert 200 == (await bench.deliver(delivery))[0]
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{schema_url(database_url, schema)}"\n')
    exported = tmp_path / "export.csv"
    code, _, err = await ledger_command(
        "audit", "export", "--config", str(config), "--format", "csv", "--output", str(exported)
    )
    assert 0 == code, err
    assert "exported" in err
    lines = exported.read_text().splitlines(keepends=True)
    assert lines[0].startswith("partition,position")
    tampered = lines[:]
    row = tampered[3].rstrip("\r\n")  # position 3; its last cell is its hash
    tampered[3] = row[:-1] + ("1" if row[-1] == "0" else "0") + "\r\n"
    code, out, err = await ledger_command("audit", "verify", "-", stdin="".join(tampered).encode())
    assert (1, "") == (code, err)
    assert out.startswith("export NOT verified: position 3:")
    assert "Traceback" not in out
    code, out, _ = await ledger_command("audit", "verify", "--config", str(config))
    assert 0 == code
    assert "hash chain verified" in out


async def test_bad_export_parameters_and_missing_scopes_are_problems(store, tmp_path):
    async with audit_ledger(store, tmp_path) as audit:
        answers = {
            "format": (await export(audit, format="xml"))[0],
            "after negative": (await export(audit, after="-1"))[0],
            "after text": (await export(audit, after="ten"))[0],
            "before not above after": (await export(audit, after="5", before="5"))[0],
            "unknown": (await export(audit, limit="5"))[0],
            "scope": (await export(audit, token=READER))[0],
        }
        status, body = await audit.call(
            "POST", "/v1/audit/checkpoints", headers={"Authorization": f"Bearer {AUDITOR}"}
        )
        _, _, headers = await export(audit, format="xml")
    assert {
        "format": 400,
        "after negative": 400,
        "after text": 400,
        "before not above after": 422,
        "unknown": 400,
        "scope": 403,
    } == answers
    assert headers["Content-Type"].startswith("application/problem+json")
    assert 403 == status, body


async def test_an_export_of_thousands_of_events_is_streamed_a_page_at_a_time(
    store, tmp_path, monkeypatch
):
    """The handler writes each page before reading the next: the client holds the first bytes
    while the second page is still unread (a handler that buffered would wait here forever)."""
    total = 3 * PAGE_SIZE + 17
    for start in range(0, total, 500):
        streams = [f"bulk-{n}" for n in range(start, min(start + 500, total))]
        await store.append(
            [NewEvent(s, 1, "Bulk.Written", b'{"n":"1"}', {}) for s in streams],
            expected_versions=dict.fromkeys(streams, 0),
        )
    first_bytes = asyncio.Event()
    page_sizes: list[int] = []
    read_pages = audit_http.export_pages

    async def watched_pages(connection, wanted):
        async for page in read_pages(connection, wanted):
            page_sizes.append(len(page))
            yield page
            if len(page_sizes) == 1:
                await asyncio.wait_for(first_bytes.wait(), timeout=10)

    monkeypatch.setattr(audit_http, "export_pages", watched_pages)
    async with (
        audit_ledger(store, tmp_path) as audit,
        audit.http.get(
            audit.url + "/v1/audit/events", headers={"Authorization": f"Bearer {AUDITOR}"}
        ) as reply,
    ):
        received = [await reply.content.readany()]
        pages_read_then = len(page_sizes)
        first_bytes.set()
        received.append(await reply.content.read())
        chunked = reply.headers["Transfer-Encoding"]
    text = b"".join(received).decode()
    assert ("chunked", 1) == (chunked, pages_read_then)
    assert [PAGE_SIZE] * 3 + [17] == page_sizes
    assert total == verify_export(read_rows(lines_of(text))).rows

"""The `ledger` command as a user runs it: real processes, real HTTP on loopback, the test database.

Each test points the command at its own schema (`?search_path=` on the database URL) so that it
sees a fresh ledger.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from adapters.cli.main import run
from adapters.cli.sandbox import ledger_config_toml, sandbox_ports
from adapters.config import PROVIDER_IDS, SCOPES, load_settings
from adapters.sandbox.fleet import sandbox_table
from tests.e2e.harness import free_port

REPOSITORY = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 20.0


def schema_url(database_url: str, schema: str) -> str:
    return f"{database_url}{'&' if '?' in database_url else '?'}search_path={schema}"


def child_environment() -> dict[str, str]:
    # LEDGER_* variables override the configuration file; the tests' own file must win.
    return {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}


async def start(*arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli.main",
        *arguments,
        cwd=REPOSITORY,
        env=child_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def read_until(process: asyncio.subprocess.Process, pattern: str) -> re.Match[str]:
    """Reads the process's output line by line until `pattern` matches one."""
    assert process.stdout is not None
    seen = []
    async with asyncio.timeout(STARTUP_SECONDS):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"exited before {pattern!r}:\n{''.join(seen)}")
            seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found


async def stop(process: asyncio.subprocess.Process, how: int = signal.SIGTERM) -> str:
    """Signals the process and returns the rest of its output once it has exited."""
    if process.returncode is None:
        process.send_signal(how)
    assert process.stdout is not None
    async with asyncio.timeout(15):
        rest = await process.stdout.read()
        await process.wait()
    return rest.decode()


async def ledger_command(*arguments: str) -> tuple[int, str, str]:
    """Runs `ledger ARGUMENTS` to the end: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.cli.main",
        *arguments,
        cwd=REPOSITORY,
        env=child_environment(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@asynccontextmanager
async def running(
    *arguments: str, ready: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, re.Match[str]]]:
    process = await start(*arguments)
    try:
        yield process, await read_until(process, ready)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ---------------------------------------------------------------- ledger demo


async def run_demo(config: Path) -> str:
    process = await start("demo", "--config", str(config))
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    text = output.decode()
    assert 0 == process.returncode, text
    return text


async def test_demo_drives_all_five_providers_and_exits_zero(database_url, schema, tmp_path):
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{schema_url(database_url, schema)}"\n')
    text = await run_demo(config)
    payments = text.split("Payments (", 1)[1].split("Withdrawals (", 1)[0]
    for provider in PROVIDER_IDS:
        assert re.search(
            rf"^{provider}\s+full_\w+\s+completed\s+exact\s", payments, re.MULTILINE
        ), provider
    withdrawals = text.split("Withdrawals (", 1)[1]
    for provider in ("coinpay", "cryptofuse", "payment_engine", "lipaykripto"):
        assert re.search(rf"^{provider}\s+w_completed_\w+\s+completed\s", withdrawals, re.MULTILINE)
        assert re.search(rf"^{provider}\s+w_failed_\w+\s+failed\s", withdrawals, re.MULTILINE)
    assert re.search(r"^coinpay\s+late_\w+\s+expired\s+exact\s+yes", payments, re.MULTILINE)
    assert "every webhook accepted" in text
    assert "hash chain verified" in text
    # The embedded database outlives each run: a second run on the same database must not trip
    # over the first one's orders or provider ids.
    again = await run_demo(config)
    assert "every webhook accepted" in again


# ---------------------------------------------------------------- ledger serve


async def test_serve_answers_health_checks_and_stops_on_sigterm(database_url, schema, tmp_path):
    port = free_port()
    config = tmp_path / "ledger.toml"
    config.write_text(f'database_url = "{schema_url(database_url, schema)}"\n')
    async with running(
        "serve", "--config", str(config), "--port", str(port), ready=r"ledger serving on (\S+)"
    ) as (process, ready):
        url = ready.group(1)
        assert f"http://127.0.0.1:{port}" == url
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/healthz") as reply:
                assert (200, {"status": "ok"}) == (reply.status, await reply.json())
            async with http.get(url + "/readyz") as reply:
                assert 200 == reply.status
        rest = await stop(process, signal.SIGTERM)
        assert 0 == process.returncode, rest
        assert "ledger stopped" in rest


async def test_sandbox_and_serve_work_together_from_the_written_config(
    database_url, schema, tmp_path
):
    """The written configuration serves as it is: its one token (printed once) has every scope."""
    ledger_port = free_port()
    given = tmp_path / "given.toml"
    given.write_text(
        f'database_url = "{schema_url(database_url, schema)}"\n'
        f'public_url = "http://127.0.0.1:{ledger_port}"\nport = {ledger_port}\n'
    )
    written = tmp_path / "sandbox.toml"
    async with running(
        "sandbox",
        "--config",
        str(given),
        "--write-config",
        str(written),
        ready=r"^  ([A-Za-z0-9_-]{40,})$",
    ) as (sandboxes, printed):
        token = printed.group(1)
        await read_until(sandboxes, "written to")
        assert token not in written.read_text()
        code, out, err = await ledger_command("config", "check", "--config", str(written))
        assert (0, "") == (code, err), out
        settings = load_settings(written)
        assert set(PROVIDER_IDS) == set(settings.providers)
        assert [sorted(SCOPES)] == [sorted(each.scopes) for each in settings.api.tokens]
        # The written file has no port: the test's comes from the environment, as it may.
        async with running(
            "serve", "--config", str(written), "--port", str(ledger_port),
            ready="ledger serving on (\\S+)",
        ) as (ledger, ready):  # fmt: skip
            url = ready.group(1)
            # One provider per way of receiving webhooks: a signed portal URL, a portal URL with
            # the ledger's token in it, a callback URL per request.
            for provider, amount, currency in (
                ("payment_engine", "25.00", "USD"),
                ("coincoin", "25", "USDT"),
                ("lipaykripto", "25.00", "TRY"),
            ):
                sandbox_url = settings.providers[provider]["base_url"]
                await pay_in_full(url, sandbox_url, provider, amount, currency, token)
            await stop(ledger)
            assert 0 == ledger.returncode
        rest = await stop(sandboxes, signal.SIGINT)
        assert 0 == sandboxes.returncode, rest


async def pay_in_full(
    url: str, sandbox_url: str, provider: str, amount: str, currency: str, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = {
        "provider": provider,
        "order_id": f"cli_{provider}",
        "amount": amount,
        "currency": currency,
    }
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(url + "/v1/payments", json=body) as reply:
            created = await reply.json()
            assert 201 == reply.status, created
        scenario = f"{sandbox_url}/_sandbox/payments/{created['provider_ref']}/scenario"
        async with http.post(scenario, json={"scenario": "full"}) as reply:
            played = await reply.json()
            assert [200] == sorted({d["status"] for d in played["deliveries"]}), played
        async with http.get(f"{url}/v1/payments/{created['payment_id']}") as reply:
            view = await reply.json()
    assert ("completed", "exact") == (view["status"], view["coverage"]), (provider, view)


# ---------------------------------------------------------------- pieces


def test_the_written_configuration_reads_back_as_the_same_tables(tmp_path):
    tables = {
        "coinpay": {"base_url": "http://127.0.0.1:9001", "password": 'quo"te\\back'},
        "lipaykripto": {"base_url": "http://127.0.0.1:9005", "client_id": "ünïcode"},
    }
    path = tmp_path / "c.toml"
    path.write_text(ledger_config_toml("http://127.0.0.1:8080", tables))
    parsed = tomllib.loads(path.read_text())
    assert ("http://127.0.0.1:8080", tables) == (parsed["public_url"], parsed["providers"])


def test_sandbox_ports_come_from_base_port_or_the_configured_urls():
    settings = load_settings(None, providers={"cryptofuse": {"base_url": "http://127.0.0.1:9101"}})
    assert {"coinpay": 7000, "cryptofuse": 7002} == sandbox_ports(
        settings, ["coinpay", "cryptofuse"], 7000
    )
    assert {"coinpay": 0, "cryptofuse": 9101} == sandbox_ports(
        settings, ["coinpay", "cryptofuse"], None
    )


@pytest.mark.parametrize(
    "argv",
    [["--config", "{config}", "config", "check"], ["config", "check", "--config", "{config}"]],
)
def test_config_is_taken_before_or_after_the_command(argv, tmp_path, capsys):
    config = tmp_path / "x.toml"
    config.write_text("port = 9999\n")
    assert 0 == run([part.format(config=config) for part in argv])
    assert f"config file: {config}" in capsys.readouterr().out


def test_a_sandbox_table_keeps_given_credentials_and_makes_up_the_rest():
    table = sandbox_table("coincoin", "http://127.0.0.1:9002", {"app_id": "mine", "secret_key": ""})
    assert ("http://127.0.0.1:9002", "mine") == (table["base_url"], table["app_id"])
    assert len(table["secret_key"]) >= 32
    assert len(table["webhook_token"]) >= 32
    assert table["secret_key"] != table["webhook_token"]

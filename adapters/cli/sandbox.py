"""`ledger sandbox`: the provider sandboxes on loopback until interrupted, with the configuration
a ledger needs to use them.

Credentials and ports come from the configuration's provider tables where it has them, so
`ledger sandbox --config ledger.toml` serves what `ledger serve --config ledger.toml` expects;
anything missing is made up and printed (and written with `--write-config`). Webhooks go to the
configuration's `public_url` (by default where `ledger serve` listens).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapters.cli.service import stop_on_signals
from adapters.config import PROVIDER_IDS, Settings
from adapters.sandbox.fleet import configured_port, sandbox_fleet


def _toml_string(value: str) -> str:
    # A JSON string (ASCII, \uXXXX escapes) is also a valid TOML basic string.
    return json.dumps(value)


def ledger_config_toml(public_url: str, tables: Mapping[str, Mapping[str, str]]) -> str:
    """The part of a ledger configuration that points it at the sandboxes."""
    lines = [f"public_url = {_toml_string(public_url)}"]
    for provider, table in tables.items():
        lines += ["", f"[providers.{provider}]"]
        lines += [f"{key} = {_toml_string(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def sandbox_ports(
    settings: Settings, providers: Sequence[str], base_port: int | None
) -> dict[str, int]:
    """`--base-port N` puts the providers on N, N+1, ... in their fixed order (so each keeps its
    port whichever are chosen); without it, each uses its configured base_url's port, if any."""
    if base_port is not None:
        return {p: base_port + PROVIDER_IDS.index(p) for p in providers}
    return {p: configured_port(settings.providers.get(p)) for p in providers}


def refuse_to_overwrite(path: Path | None) -> None:
    if path is not None and path.exists():
        raise SystemExit(f"{path} exists; not overwriting it (pass it as --config instead)")


def _write_private(path: Path, text: str) -> None:
    """Owner-only and never over an existing file: it holds the sandboxes' secrets."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


async def run_sandboxes(
    settings: Settings,
    providers: Sequence[str],
    *,
    host: str,
    base_port: int | None,
    write_config: Path | None,
    stop: asyncio.Event | None = None,
) -> None:
    """Runs until `stop` is set (by SIGINT/SIGTERM, or by the caller)."""
    stop = stop or asyncio.Event()
    with stop_on_signals(stop):
        async with sandbox_fleet(
            providers,
            host=host,
            ports=sandbox_ports(settings, providers, base_port),
            credentials=settings.providers,
        ) as fleet:
            webhooks = await fleet.send_webhooks_to(settings)
            print("Provider sandboxes (Ctrl-C stops them):")
            for provider, sandbox in fleet.sandboxes.items():
                target = webhooks[provider] or "the callback URL the ledger sends with each request"
                print(f"  {provider:15} {sandbox.url:24} webhooks to {target}")
            config = ledger_config_toml(settings.public_url, fleet.provider_tables())
            if write_config is not None:
                _write_private(write_config, config)
                print(f"\nLedger configuration written to {write_config}; run "
                      f"`ledger serve --config {write_config}`.")  # fmt: skip
            else:
                print("\nLedger configuration for these sandboxes (or use --write-config FILE):\n")
                print(config, flush=True)
            await stop.wait()
    print("sandboxes stopped", flush=True)

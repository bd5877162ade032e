"""`ledger sandbox`: the provider sandboxes on loopback until interrupted, with the configuration
a ledger needs to use them.

Credentials and ports come from the configuration's provider tables where it has them, so
`ledger sandbox --config ledger.toml` serves what `ledger serve --config ledger.toml` expects;
anything missing is made up and printed (and written with `--write-config`). Webhooks go to the
configuration's `public_url` (by default where `ledger serve` listens).

The configuration written serves as it is: the database URL (the configured one, else a
commented line for the embedded server), one API token with every scope (stored as its SHA-256;
the token itself is printed once), and the provider tables.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from adapters.cli.errors import ExitCode, UsageError
from adapters.cli.options import common_options, settings
from adapters.cli.service import stop_on_signals
from adapters.config import PROVIDER_IDS, SCOPES, Settings
from adapters.sandbox.fleet import LOOPBACK, configured_port, sandbox_fleet

TOKEN_NAME = "sandbox"  # noqa: S105 - the token's name, not its secret


def _toml_string(value: str) -> str:
    # A JSON string (ASCII, \uXXXX escapes) is also a valid TOML basic string.
    return json.dumps(value)


@dataclass(frozen=True)
class ApiTokenLine:
    """The one token a sandbox configuration grants: its secret is printed, its hash written."""

    token: str

    @classmethod
    def generate(cls) -> ApiTokenLine:
        return cls(secrets.token_urlsafe(32))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.token.encode()).hexdigest()


def ledger_config_toml(
    public_url: str,
    tables: Mapping[str, Mapping[str, str]],
    *,
    database_url: str | None = None,
    token: ApiTokenLine | None = None,
) -> str:
    """A ledger configuration that points it at the sandboxes: the database (the URL given, else
    a commented line: the embedded server), an API token with every scope, the provider tables."""
    if database_url:
        lines = [f"database_url = {_toml_string(database_url)}"]
    else:
        lines = ['# database_url = "postgresql://user:password@host:5432/ledger"  # else embedded']
    lines.append(f"public_url = {_toml_string(public_url)}")
    if token is not None:
        lines += [
            "",
            "[[api.tokens]]",
            f"name = {_toml_string(TOKEN_NAME)}",
            f"token_sha256 = {_toml_string(token.sha256)}",
            "scopes = [" + ", ".join(_toml_string(scope) for scope in sorted(SCOPES)) + "]",
        ]
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
        raise UsageError(f"{path} exists; not overwriting it (pass it as --config instead)")


def chosen_providers(named: Sequence[str]) -> list[str]:
    """`--providers coinpay,cryptofuse` or `--providers coinpay --providers cryptofuse`."""
    if not named:
        return list(PROVIDER_IDS)
    chosen = [p.strip() for item in named for p in item.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PROVIDER_IDS))
    if unknown:
        raise UsageError(f"unknown providers {unknown}; known: {', '.join(PROVIDER_IDS)}")
    return chosen


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
            token = ApiTokenLine.generate()
            config = ledger_config_toml(
                settings.public_url,
                fleet.provider_tables(),
                database_url=settings.database_url,
                token=token,
            )
            print(f"\nAPI token {TOKEN_NAME!r}, every scope (shown once; the configuration keeps"
                  f" only its SHA-256):\n  {token.token}")  # fmt: skip
            if write_config is not None:
                _write_private(write_config, config)
                print(f"\nLedger configuration written to {write_config}; run "
                      f"`ledger serve --config {write_config}`.", flush=True)  # fmt: skip
            else:
                print("\nLedger configuration for these sandboxes (or use --write-config FILE):\n")
                print(config, flush=True)
            await stop.wait()
    print("sandboxes stopped", flush=True)


@click.command("sandbox")
@click.option(
    "--providers",
    multiple=True,
    metavar="P[,P...]",
    help=f"Which sandboxes (default: all of {', '.join(PROVIDER_IDS)}).",
)
@click.option("--base-port", type=int, help="Ports N, N+1, ... in the order above.")
@click.option("--host", default=LOOPBACK, show_default=True, help="Address to listen on.")
@click.option(
    "--write-config",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the ledger configuration here (owner-only, never over a file).",
)
@common_options
def sandbox_command(
    providers: tuple[str, ...], base_port: int | None, host: str, write_config: Path | None
) -> int:
    """Run the provider sandboxes on loopback until interrupted, and give the configuration
    (database, an API token with every scope, provider tables) that serves with them."""
    chosen = chosen_providers(providers)
    refuse_to_overwrite(write_config)  # before anything starts
    asyncio.run(
        run_sandboxes(settings(), chosen, host=host, base_port=base_port, write_config=write_config)
    )
    return ExitCode.OK

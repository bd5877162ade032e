"""The `ledger` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from adapters.cli.audit import add_commands as add_audit_commands
from adapters.cli.audit import run_audit
from adapters.cli.config_check import add_commands as add_config_commands
from adapters.cli.config_check import run_config
from adapters.cli.database import open_pool
from adapters.cli.finance import add_commands as add_finance_commands
from adapters.config import PROVIDER_IDS, ConfigError, Settings, load_settings
from adapters.observability.logs import configure_logging
from adapters.sandbox.fleet import LOOPBACK
from adapters.storage.migrate import migrate


def _parser() -> argparse.ArgumentParser:
    # --config is taken before or after the command (`ledger --config F demo`, `ledger serve
    # --config F`); on the commands it defaults to "not given" so it never hides the first.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help="TOML configuration file"
    )
    parser = argparse.ArgumentParser(prog="ledger", description="Event-sourced payment ledger")
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "demo",
        parents=[config],
        help="payments and withdrawals through the five provider sandboxes over HTTP",
    )
    serve = commands.add_parser("serve", parents=[config], help="run the HTTP service")
    serve.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: the config's, 8080)")
    sandbox = commands.add_parser(
        "sandbox", parents=[config], help="run the provider sandboxes on loopback"
    )
    sandbox.add_argument(
        "--providers",
        nargs="+",
        metavar="PROVIDER",
        help=f"which sandboxes (default: all of {', '.join(PROVIDER_IDS)})",
    )
    sandbox.add_argument("--base-port", type=int, help="ports N, N+1, ... in the order above")
    sandbox.add_argument("--host", default=LOOPBACK, help="address to listen on (127.0.0.1)")
    sandbox.add_argument(
        "--write-config", type=Path, metavar="FILE", help="write the ledger configuration here"
    )
    database = commands.add_parser("db", parents=[config], help="database maintenance")
    database_commands = database.add_subparsers(dest="db_command", required=True)
    database_commands.add_parser("migrate", help="apply pending schema migrations")
    add_finance_commands(commands, config)
    add_audit_commands(commands, config)
    add_config_commands(commands, config)
    return parser


def _providers(named: list[str] | None) -> list[str]:
    """`--providers coinpay cryptofuse` or `--providers coinpay,cryptofuse`."""
    if not named:
        return list(PROVIDER_IDS)
    chosen = [p.strip() for item in named for p in item.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PROVIDER_IDS))
    if unknown:
        raise SystemExit(f"unknown providers {unknown}; known: {', '.join(PROVIDER_IDS)}")
    return chosen


async def _migrate(settings: Settings) -> None:
    async with open_pool(settings) as pool, pool.acquire() as connection:
        applied = await migrate(connection)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))


def main(argv: list[str] | None = None) -> None:
    arguments = _parser().parse_args(argv)
    configure_logging(
        level=logging.INFO if arguments.verbose else logging.WARNING,
        access_log=arguments.command == "serve",
    )
    try:
        settings = load_settings(arguments.config)
    except ConfigError as error:
        # One line, no traceback: the key, where it was, the closest known key.
        print(f"ledger: config: {error}", file=sys.stderr)
        sys.exit(2)
    # Imported per command: each pulls in only what it runs.
    if arguments.command == "demo":
        from adapters.cli.demo import run_demo  # noqa: PLC0415

        if not asyncio.run(run_demo(settings)):
            sys.exit(1)
    elif arguments.command == "serve":
        from adapters.cli.service import run_service  # noqa: PLC0415

        listen = {"host": arguments.host, "port": arguments.port}
        overrides = {key: value for key, value in listen.items() if value is not None}
        asyncio.run(run_service(settings.model_copy(update=overrides)))
    elif arguments.command == "sandbox":
        from adapters.cli.sandbox import refuse_to_overwrite, run_sandboxes  # noqa: PLC0415

        refuse_to_overwrite(arguments.write_config)  # before anything starts
        asyncio.run(
            run_sandboxes(
                settings,
                _providers(arguments.providers),
                host=arguments.host,
                base_port=arguments.base_port,
                write_config=arguments.write_config,
            )
        )
    elif arguments.command == "db":
        asyncio.run(_migrate(settings))
    elif arguments.command == "config":
        sys.exit(run_config(arguments, settings))
    elif arguments.command == "audit":
        sys.exit(run_audit(arguments, settings))
    elif arguments.command in {"projections", "reconcile"}:
        from adapters.cli.finance import run_projections, run_reconcile  # noqa: PLC0415

        run = run_projections if arguments.command == "projections" else run_reconcile
        if not asyncio.run(run(arguments, settings)):
            sys.exit(1)


if __name__ == "__main__":
    main()

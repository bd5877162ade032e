"""The `ledger` command: click groups over the commands' modules, and the one place where an
error becomes one line and an exit status (`errors.ExitCode`, listed in `ledger --help`)."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import click

from adapters.cli.audit import audit_group
from adapters.cli.config_check import config_group
from adapters.cli.database import SERVICE_CONNECT_ERRORS
from adapters.cli.errors import EXIT_CODES_HELP, CliError, ExitCode
from adapters.cli.finance import projections_group, reconcile_group
from adapters.cli.maintenance import database_group, demo_command
from adapters.cli.options import common_options, debugging
from adapters.cli.sandbox import sandbox_command
from adapters.cli.service import serve_command
from adapters.cli.subjects import payments_group, withdrawals_group
from adapters.config import ConfigError
from adapters.observability.logs import configure_logging


def _package_version() -> str:
    try:
        return version("payment-ledger")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(_package_version(), "--version", prog_name="ledger", message="%(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO instead of WARNING.")
@common_options
@click.pass_context
def cli(context: click.Context, verbose: bool) -> None:
    """Event-sourced payment ledger."""
    configure_logging(
        level=logging.INFO if verbose else logging.WARNING,
        access_log=context.invoked_subcommand == "serve",
    )


for command in (
    demo_command,
    serve_command,
    sandbox_command,
    database_group,
    audit_group,
    config_group,
    projections_group,
    reconcile_group,
    payments_group,
    withdrawals_group,
):
    cli.add_command(command)


def _described(error: Exception) -> tuple[str, ExitCode]:
    """The one line and the status for an error that ended a command."""
    message, code = f"{type(error).__name__}: {error}", ExitCode.CHECK_FAILED
    if isinstance(error, click.UsageError):
        where = f"`{error.ctx.command_path} --help`" if error.ctx else "`ledger --help`"
        message, code = f"{error.format_message()} (see {where})", ExitCode.USAGE
    elif isinstance(error, click.ClickException):
        message, code = error.format_message(), ExitCode.USAGE
    elif isinstance(error, click.Abort):
        message = "interrupted"
    elif isinstance(error, ConfigError):
        message, code = f"config: {error}", ExitCode.USAGE
    elif isinstance(error, CliError):
        message, code = error.message, error.code
    elif isinstance(error, SERVICE_CONNECT_ERRORS):
        # Raised where the service opens its own pool (serve, demo) rather than through ours.
        message, code = f"database unavailable: {message}", ExitCode.DATABASE
    else:
        message += " (run with --debug for the traceback)"
    return message, code


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (default: the process's) and returns its exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    context: click.Context | None = None
    try:
        with cli.make_context("ledger", arguments) as context:
            return int(cli.invoke(context) or 0)
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code
    except click.exceptions.NoArgsIsHelpError as bare:  # `ledger`, `ledger audit`: the help
        click.echo(bare.format_message(), err=True)
        return ExitCode.USAGE
    except Exception as error:  # noqa: BLE001 - every error ends as one line and a status
        if debugging(context) and not isinstance(error, click.ClickException):
            traceback.print_exc()
        message, code = _described(error)
        # One line whatever the message holds: an operator greps for "ledger:".
        click.echo(f"ledger: {' '.join(message.split())}", err=True)
        return int(code)


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: exits with the command's status (0 too, as click does)."""
    sys.exit(run(argv))


if __name__ == "__main__":
    main()

"""`ledger config check`: the effective configuration, secrets masked, and where each value
came from (file, env, default); then whether each configured provider's table is complete."""

from __future__ import annotations

from pathlib import Path

import click

from adapters.cli.errors import ExitCode
from adapters.cli.options import common_options, config_path, settings
from adapters.config import Settings, describe_settings


@click.group("config")
@common_options
def config_group() -> None:
    """Configuration."""


@config_group.command("check")
@common_options
def check_command() -> int:
    """Print the effective configuration (secrets masked) and each value's source; exit 1 when
    a provider table lacks what its adapter needs."""
    return run_config(config_path(), settings())


def run_config(path: Path | None, settings: Settings) -> int:
    """0: the configuration is complete; 1: a provider table lacks what its adapter needs.
    (A configuration the settings refuse never gets here: load_settings raised ConfigError.)"""
    from adapters.providers.registry import build_adapters  # noqa: PLC0415 - only here

    print(f"config file: {path if path is not None else '(none: defaults and LEDGER_* only)'}")
    lines = describe_settings(settings, path)
    width = max(len(line.key) for line in lines)
    value_width = min(max(len(line.value) for line in lines), 48)
    for line in lines:
        print(f"{line.key:<{width}} = {line.value:<{value_width}}  # {line.source}")
    incomplete = {
        name: table.missing() for name, table in settings.providers.items() if table.missing()
    }
    for name, missing in incomplete.items():
        print(f"providers.{name}: lacks {', '.join(missing)}")
    if incomplete:
        return ExitCode.CHECK_FAILED
    try:
        build_adapters(settings.providers)
    except ValueError as error:
        print(f"providers: {error}")
        return ExitCode.CHECK_FAILED
    configured = ", ".join(settings.providers) or "none (every provider disabled)"
    print(f"ok; providers: {configured}")
    return ExitCode.OK

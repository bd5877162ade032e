"""`ledger config check`: the effective configuration, secrets masked, and where each value
came from (file, env, default); then whether each configured provider's table is complete."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from adapters.config import Settings, describe_settings


def add_commands(commands: Any, config: argparse.ArgumentParser) -> None:
    group = commands.add_parser("config", parents=[config], help="configuration")
    config_commands = group.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser(
        "check",
        parents=[config],
        help="print the effective configuration (secrets masked) and each value's source",
    )


def run_config(arguments: argparse.Namespace, settings: Settings) -> int:
    """0: the configuration is complete; 1: a provider table lacks what its adapter needs.
    (A configuration the settings refuse never gets here: load_settings raised ConfigError.)"""
    from adapters.providers.registry import build_adapters  # noqa: PLC0415 - only here

    path: Path | None = arguments.config
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
        return 1
    try:
        build_adapters(settings.providers)
    except ValueError as error:
        print(f"providers: {error}")
        return 1
    configured = ", ".join(settings.providers) or "none (every provider disabled)"
    print(f"ok; providers: {configured}")
    return 0

"""Options every `ledger` command takes, wherever on the line they are given.

`--config FILE` and `--debug` are accepted before the command and after it
(`ledger --config F audit verify`, `ledger audit verify --config F`): each command level records
what it was given on the root context, and the settings are loaded once, when a command needs
them, so a refused configuration is reported by the command's own error handling (exit 2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from adapters.config import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

_CONFIG = "ledger.config"
_DEBUG = "ledger.debug"
_SETTINGS = "ledger.settings"


def _remember_config(context: click.Context, _: click.Parameter, value: Path | None) -> None:
    if value is not None:
        context.find_root().meta[_CONFIG] = value


def _remember_debug(context: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        context.find_root().meta[_DEBUG] = True


def common_options(function: F) -> F:
    """`--config` and `--debug`, for the root and for every group and command under it."""
    function = click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_remember_debug,
        help="Show the traceback of an error instead of one line.",
    )(function)
    return click.option(
        "--config",
        type=click.Path(path_type=Path),
        metavar="FILE",
        expose_value=False,
        callback=_remember_config,
        help="TOML configuration file (before or after the command).",
    )(function)


def config_path(context: click.Context | None = None) -> Path | None:
    context = context or click.get_current_context()
    path: Path | None = context.find_root().meta.get(_CONFIG)
    return path


def debugging(context: click.Context | None) -> bool:
    return context is not None and bool(context.find_root().meta.get(_DEBUG))


def settings() -> Settings:
    """The configuration the command line names, loaded on first use (ConfigError: exit 2)."""
    root = click.get_current_context().find_root()
    loaded: Settings | None = root.meta.get(_SETTINGS)
    if loaded is None:
        loaded = load_settings(config_path(root))
        root.meta[_SETTINGS] = loaded
    return loaded

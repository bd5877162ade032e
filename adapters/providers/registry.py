"""Builds the adapters of the configured providers; a provider without a table is disabled."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from adapters.config import PROVIDER_IDS
from adapters.providers.contract import ProviderAdapter


def build_adapters(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, ProviderAdapter]:
    adapters = {}
    for provider, table in tables.items():
        if provider not in PROVIDER_IDS:
            raise ValueError(f"unknown provider {provider!r}")
        module = importlib.import_module(f"adapters.providers.{provider}")
        adapters[provider] = module.build_adapter(table)
    return adapters

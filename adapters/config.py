"""Configuration: one TOML file plus `LEDGER_<SECTION>__<KEY>` environment overrides.

Provider secrets are kept as SecretStr-free plain dicts only inside the provider adapters; the
settings' repr hides every provider table so secrets never reach a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROVIDER_IDS = ("coinpay", "coincoin", "cryptofuse", "payment_engine", "lipaykripto")
SCOPES = frozenset(
    {
        "payments:write",
        "payments:read",
        "withdrawals:write",
        "withdrawals:read",
        "finance:read",
        "audit:export",
        "admin",
    }
)


class ApiToken(BaseModel):
    name: str
    token: str | None = Field(default=None, repr=False)
    token_sha256: str | None = None
    scopes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_secret_and_known_scopes(self) -> ApiToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError(f"api token {self.name!r} needs exactly one of token, token_sha256")
        unknown = set(self.scopes) - SCOPES
        if unknown:
            raise ValueError(f"api token {self.name!r} has unknown scopes {sorted(unknown)}")
        return self

    def matches(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode()).hexdigest()
        expected = self.token_sha256 or hashlib.sha256((self.token or "").encode()).hexdigest()
        return hmac.compare_digest(digest, expected)


class ApiSettings(BaseModel):
    tokens: list[ApiToken] = Field(default_factory=list)


class Settings(BaseSettings):
    # The environment is merged by load_settings (at any depth, over the file's values), so
    # pydantic-settings reads only what it is given: a stray DATABASE_URL must not leak in.
    model_config = SettingsConfigDict(extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003 - the hook signature
        init_settings: PydanticBaseSettingsSource,
        *_others: PydanticBaseSettingsSource,
        **_named: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    database_url: str | None = Field(default=None, repr=False)
    public_url: str = "http://127.0.0.1:8080"
    # Where `ledger serve` listens (its --host/--port override these).
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = 1024 * 1024
    data_dir: Path | None = None
    api: ApiSettings = Field(default_factory=ApiSettings)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)
    # Background work of `ledger serve` (0 turns a loop off; tests drive each step themselves).
    expiry_sweep_seconds: float = 5.0
    balance_poll_seconds: float = 60.0
    withdrawal_stuck_after_minutes: float = 60.0
    projections_in_process: bool = True
    # Creates whose answer was lost are looked up at the provider (where it offers a lookup).
    recovery_seconds: float = 30.0
    # Deliveries the ledger could not authenticate are checked with the provider's query.
    provider_query_seconds: float = 5.0
    # A background loop that raised starts again after a pause doubling from min to max.
    background_restart_seconds_min: float = Field(default=0.1, gt=0)
    background_restart_seconds_max: float = Field(default=5.0, gt=0)
    # /readyz answers 503 while any projection is further behind the log than either bound:
    # its oldest event not yet projected older than seconds_max, or more than events_max of them.
    readiness_lag_seconds_max: float = Field(default=10.0, ge=0)
    readiness_lag_events_max: int = Field(default=10_000, ge=0)
    # How long a list or balance read may wait for its projections to reach the log position
    # the request arrived at, before it answers 503 with Retry-After.
    read_your_writes_wait_seconds_max: float = Field(default=2.0, ge=0)

    @model_validator(mode="after")
    def _known_providers(self) -> Settings:
        unknown = set(self.providers) - set(PROVIDER_IDS)
        if unknown:
            raise ValueError(f"unknown provider tables {sorted(unknown)}; known: {PROVIDER_IDS}")
        return self

    def webhook_url(self, provider: str, token: str | None = None) -> str:
        base = f"{self.public_url.rstrip('/')}/v1/webhooks/{provider}"
        return f"{base}/{token}" if token else base


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Reads the TOML file (if any); `LEDGER_<SECTION>__<KEY>` environment variables override
    its keys at any depth (e.g. LEDGER_PROVIDERS__CRYPTOFUSE__BASE_URL)."""
    values: dict[str, Any] = tomllib.loads(path.read_text()) if path is not None else {}
    for name, value in os.environ.items():
        if not name.startswith("LEDGER_") or name.startswith("LEDGER_TEST_"):
            continue
        keys = name.removeprefix("LEDGER_").lower().split("__")
        target = values
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    values.update(overrides)
    return Settings.model_validate(values)

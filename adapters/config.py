"""Configuration: one TOML file plus `LEDGER_<SECTION>__<KEY>` environment overrides, read by
pydantic-settings itself (`TomlConfigSettingsSource` and its env source, nested with `__`).

Every level refuses unknown keys (`extra="forbid"`): `load_settings` turns the refusal into one
`ConfigError` line naming the key's dotted path and the closest known key. Each provider has its
own typed table (SecretStr secrets, validated URLs) that still reads as the plain mapping the
adapters' `build_adapter` takes, while its repr and str show only masked secrets.
"""

from __future__ import annotations

import contextvars
import difflib
import hashlib
import hmac
import json
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROVIDER_IDS = ("coinpay", "coincoin", "cryptofuse", "payment_engine", "lipaykripto")
SCOPES = frozenset(
    {
        "payments:write",
        "payments:read",
        "withdrawals:write",
        "withdrawals:read",
        "finance:read",
        "finance:write",
        "audit:export",
        "admin",
    }
)
ENV_PREFIX = "LEDGER_"
# Environment variables under these prefixes belong to the tests and benchmarks, not the config.
NOT_CONFIG_ENV_PREFIXES = ("LEDGER_TEST_", "LEDGER_BENCH_")
MASK = "**********"


class ConfigError(ValueError):
    """A configuration the ledger refuses; its message is one line the CLI prints as it is."""


def _closest(word: str, known: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _http_url(value: str) -> str:
    # Validated as an http(s) URL, but kept as written (HttpUrl would append a "/").
    TypeAdapter(HttpUrl).validate_python(value)
    return value


HttpUrlText = Annotated[str, AfterValidator(_http_url)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiToken(_Strict):
    name: str
    token: SecretStr | None = None
    token_sha256: str | None = None
    scopes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_secret_and_known_scopes(self) -> ApiToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError(f"api token {self.name!r} needs exactly one of token, token_sha256")
        for scope in self.scopes:
            if scope not in SCOPES:
                close = _closest(scope, sorted(SCOPES))
                hint = f"; did you mean {close!r}?" if close else f"; known: {sorted(SCOPES)}"
                raise ValueError(f"api token {self.name!r} has unknown scope {scope!r}{hint}")
        return self

    def matches(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode()).hexdigest()
        secret = self.token.get_secret_value() if self.token is not None else ""
        expected = self.token_sha256 or hashlib.sha256(secret.encode()).hexdigest()
        return hmac.compare_digest(digest, expected)


class ApiSettings(_Strict):
    tokens: list[ApiToken] = Field(default_factory=list)


class AuditSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # PEM of an Ed25519 private key; absent: one is generated once in the data dir (0600).
    signing_key_file: Path | None = None
    # A signed checkpoint of the log head this often; 0: only on demand (POST).
    checkpoint_every_seconds: float = Field(default=300.0, ge=0)


class ProviderTable(_Strict, Mapping[str, Any]):
    """One `[providers.<name>]` table. Typed and masked in repr/str; read as a mapping (keys set
    in the table, secrets revealed) it is what the provider's `build_adapter` takes.

    Keys are optional here so that `ledger sandbox` can read a table holding only a base_url;
    `missing()` (and each `build_adapter`) names those a running ledger needs."""

    required: ClassVar[tuple[str, ...]] = ()

    base_url: HttpUrlText | None = None

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key) if key in type(self).model_fields else None
        if value is None:
            raise KeyError(key)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # a mapping's keys
        return iter([key for key in type(self).model_fields if getattr(self, key) is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def missing(self) -> list[str]:
        return [key for key in self.required if not self.get(key)]

    def plain(self) -> dict[str, Any]:
        """The table as plain values (secrets revealed): only for handing to the adapter."""
        return dict(self.items())


class CoinPaySettings(ProviderTable):
    required = ("base_url", "username", "password", "webhook_secret")

    username: str | None = None
    password: SecretStr | None = None
    webhook_secret: SecretStr | None = None


class CoinCoinSettings(ProviderTable):
    required = ("base_url", "app_id", "secret_key", "webhook_token")

    app_id: str | None = None
    secret_key: SecretStr | None = None
    webhook_token: SecretStr | None = None


class CryptofuseSettings(ProviderTable):
    required = ("base_url", "client_id", "client_secret", "webhook_secret")

    client_id: str | None = None
    client_secret: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    default_pay_currency: str | None = None
    confirmations_required: int | None = Field(default=None, ge=1)


def _comma_list(value: Any) -> Any:
    """An environment override gives a list as one comma-separated string."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# `| str` lets the env source hand over "USD,EUR" (not JSON) for the validator to split.
TextList = Annotated[list[str] | str, AfterValidator(_comma_list)]


class PaymentEngineSettings(ProviderTable):
    required = ("base_url", "webhook_secret")

    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    currencies: TextList | None = None
    merchant_account_id: str | None = None
    payment_type_id: str | None = None
    withdrawal_payment_type_id: str | None = None
    balance_account_ids: TextList | None = None

    def missing(self) -> list[str]:
        missing = super().missing()
        if not self.get("api_key") and not (self.get("username") and self.get("password")):
            missing.append("api_key (or username and password)")
        return missing


class LiPayKriptoSettings(ProviderTable):
    required = ("base_url", "client_id", "client_secret", "hmac_secret")

    client_id: str | None = None
    client_secret: SecretStr | None = None
    hmac_secret: SecretStr | None = None


class ProvidersSettings(_Strict, Mapping[str, ProviderTable]):
    """The `[providers.*]` tables; as a mapping: the configured providers only, in PROVIDER_IDS
    order. A provider without a table is disabled."""

    coinpay: CoinPaySettings | None = None
    coincoin: CoinCoinSettings | None = None
    cryptofuse: CryptofuseSettings | None = None
    payment_engine: PaymentEngineSettings | None = None
    lipaykripto: LiPayKriptoSettings | None = None

    def __getitem__(self, name: str) -> ProviderTable:
        table = getattr(self, name) if name in PROVIDER_IDS else None
        if table is None:
            raise KeyError(name)
        return typing.cast("ProviderTable", table)

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # a mapping's keys
        return iter([name for name in PROVIDER_IDS if getattr(self, name) is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _LedgerEnvSource(EnvSettingsSource):
    """pydantic-settings' env source, refusing a `LEDGER_*` variable that names no top-level
    key (nested typos are refused by the models' extra="forbid")."""

    def __call__(self) -> dict[str, Any]:
        known = list(self.settings_cls.model_fields)
        for name in os.environ:
            upper = name.upper()
            if not upper.startswith(ENV_PREFIX) or upper.startswith(NOT_CONFIG_ENV_PREFIXES):
                continue
            head = upper.removeprefix(ENV_PREFIX).split("__")[0].lower()
            if head not in known:
                close = _closest(head, known)
                hint = f"; did you mean {ENV_PREFIX}{close.upper()}?" if close else ""
                raise ConfigError(f"unknown configuration variable {name}{hint}")
        return super().__call__()


_TOML_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "ledger_toml_file", default=None
)


class Settings(BaseSettings):
    # Sources, strongest first: init arguments (load_settings' overrides), LEDGER_* environment
    # variables (any depth, `__` between levels), the TOML file, the defaults. Nothing else: a
    # stray DATABASE_URL or .env file never leaks in.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        *_others: PydanticBaseSettingsSource,
        **_named: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, _LedgerEnvSource(settings_cls)]
        path = _TOML_FILE.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    database_url: str | None = Field(default=None, repr=False)
    public_url: HttpUrlText = "http://127.0.0.1:8080"
    # Where `ledger serve` listens (its --host/--port override these).
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = 1024 * 1024
    data_dir: Path | None = None
    api: ApiSettings = Field(default_factory=ApiSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    providers: ProvidersSettings = Field(default_factory=ProvidersSettings)
    # Background work of `ledger serve` (0 turns a loop off; tests drive each step themselves).
    expiry_sweep_seconds: float = 5.0
    balance_poll_seconds: float = 60.0
    withdrawal_stuck_after_minutes: float = 60.0
    # Where the projection runner runs: "in_process" on the service's event loop, "process" in
    # a child process the service starts, supervises and stops (the runner's CPU work then
    # leaves the HTTP server's core), "off" nowhere (reads catch projections up themselves).
    # `ledger serve` picks "process" unless this is set.
    projections_worker: Literal["in_process", "process", "off"] = "in_process"
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

    @field_validator("providers", mode="before")
    @classmethod
    def _providers_as_given(cls, value: Any) -> Any:
        # Callers may hand over the tables as they got them from another Settings.
        if isinstance(value, ProvidersSettings):
            return {name: table.plain() for name, table in value.items()}
        return value

    @field_serializer("database_url", when_used="json")
    def _database_url_masked(self, value: str | None) -> str | None:
        # As SecretStr does: a JSON dump shows no password (model_dump() in Python keeps it).
        return mask_url(value) if value is not None else None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        # model_copy does not validate: plain provider tables (e.g. the demo's sandboxes) are
        # typed here, so their secrets stay masked and their keys checked.
        if update and "providers" in update:
            tables = update["providers"]
            if not isinstance(tables, ProvidersSettings):
                update = {**update, "providers": ProvidersSettings.model_validate(tables)}
        return super().model_copy(update=update, deep=deep)

    def provider_table(self, provider: str) -> dict[str, Any]:
        """The provider's table as plain values (secrets revealed), for its build_adapter."""
        return self.providers[provider].plain()

    def webhook_url(self, provider: str, token: str | None = None) -> str:
        base = f"{self.public_url.rstrip('/')}/v1/webhooks/{provider}"
        return f"{base}/{token}" if token else base


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Reads the TOML file (if any); `LEDGER_<SECTION>__<KEY>` environment variables override
    its keys at any depth (e.g. LEDGER_PROVIDERS__CRYPTOFUSE__BASE_URL), `overrides` both.
    Raises ConfigError (one line) for a missing or unreadable file and for any key or value
    the settings refuse."""
    if path is not None:
        path = Path(path)
        _check_file(path)
    token = _TOML_FILE.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error, path)) from None
    finally:
        _TOML_FILE.reset(token)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a file")
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def _dotted(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, Annotated):
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None


def _known_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys the model at `loc` (a path into Settings) accepts."""
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _describe(error: ValidationError, path: Path | None) -> str:
    environment = {name.upper() for name in os.environ}
    problems = []
    # Unknown keys first: a typo is the likeliest cause of the other complaints too.
    for detail in sorted(error.errors(), key=lambda d: d["type"] != "extra_forbidden"):
        loc = detail["loc"]
        if _env_name(loc) in environment:
            where = f" (from {_env_name(loc)})"
        else:
            where = f" in {path}" if path is not None else ""
        if detail["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            close = _closest(str(loc[-1]), known)
            parent = _dotted(loc[:-1])
            if close:
                hint = f"did you mean {(parent + '.' if parent else '') + close!r}?"
            else:
                hint = f"known keys: {', '.join(known)}"
            problems.append(f"unknown key {_dotted(loc)!r}{where}; {hint}")
        else:
            message = detail["msg"].removeprefix("Value error, ")
            problems.append(f"{_dotted(loc) or 'config'}{where}: {message}")
    return "; ".join(problems)


# -- `ledger config check`: the effective values and where each came from ---------------------


@dataclass(frozen=True)
class ConfigLine:
    key: str  # dotted, e.g. providers.cryptofuse.base_url or api.tokens[0].name
    value: str  # as shown: secrets masked
    source: str  # "file", "env LEDGER_...", "default" (or "argument")


def describe_settings(
    settings: Settings, path: Path | None, overrides: Mapping[str, Any] | None = None
) -> list[ConfigLine]:
    """Every effective value (secrets masked) and its source, in declaration order."""
    from_file: dict[str, Any] = (
        TomlConfigSettingsSource(Settings, toml_file=path)() if path is not None else {}
    )
    from_env = _LedgerEnvSource(Settings)()
    lines = []
    for loc, value in _leaves(settings, ()):
        if _present(overrides or {}, loc):
            source = "argument"
        elif _present(from_env, loc):
            source = f"env {_env_name(loc)}"
        elif _present(from_file, loc):
            source = "file"
        else:
            source = "default"
        lines.append(ConfigLine(_dotted(loc), _shown(loc, value), source))
    return lines


def _leaves(value: Any, loc: tuple[int | str, ...]) -> Iterator[tuple[tuple[int | str, ...], Any]]:
    if isinstance(value, BaseModel):
        optional_keys = isinstance(value, ProviderTable | ProvidersSettings)
        for name in type(value).model_fields:
            item = getattr(value, name)
            if item is None and optional_keys:
                continue
            yield from _leaves(item, (*loc, name))
    elif isinstance(value, list) and value and all(isinstance(i, BaseModel) for i in value):
        for index, item in enumerate(value):
            yield from _leaves(item, (*loc, index))
    else:
        yield loc, value


def _present(values: Any, loc: Sequence[int | str]) -> bool:
    for part in loc:
        if isinstance(part, int):
            if not isinstance(values, list) or part >= len(values):
                return False
        elif not isinstance(values, Mapping) or part not in values:
            return False
        values = values[part]
    return True


def _env_name(loc: Sequence[int | str]) -> str:
    parts = []
    for part in loc:
        if isinstance(part, int):
            break  # a list comes whole from one variable (JSON)
        parts.append(str(part).upper())
    return ENV_PREFIX + "__".join(parts)


def _shown(loc: Sequence[int | str], value: Any) -> str:
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else '""'
    if loc == ("database_url",) and isinstance(value, str):
        return mask_url(value)
    if value is None:
        return "(none)"
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value, ensure_ascii=False)


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by the mask."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))

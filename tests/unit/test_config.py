"""The configuration as pydantic-settings reads it: TOML file, `LEDGER_*` overrides at any depth,
unknown keys refused with the closest known one, typed provider tables whose secrets never show,
and `ledger config check`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.cli.main import main
from adapters.config import (
    MASK,
    PROVIDER_IDS,
    ApiToken,
    ConfigError,
    CryptofuseSettings,
    Settings,
    load_settings,
)
from adapters.providers.registry import build_adapters

SECRETS = {
    "coinpay": {"password": "cp-password-s3cret", "webhook_secret": "cp-webhook-s3cret"},
    "coincoin": {"secret_key": "cc-key-s3cret", "webhook_token": "cc-token-s3cret"},
    "cryptofuse": {"client_secret": "cf-client-s3cret", "webhook_secret": "cf-webhook-s3cret"},
    "payment_engine": {
        "password": "pe-password-s3cret",
        "api_key": "pe-apikey-s3cret",
        "webhook_secret": "pe-webhook-s3cret",
    },
    "lipaykripto": {"client_secret": "lk-client-s3cret", "hmac_secret": "lk-hmac-s3cret"},
}
IDENTITIES = {
    "coinpay": {"username": "merchant"},
    "coincoin": {"app_id": "app"},
    "cryptofuse": {"client_id": "client"},
    "payment_engine": {"username": "merchant"},
    "lipaykripto": {"client_id": "client"},
}
TOKEN_SECRET = "api-token-s3cret"
DATABASE_PASSWORD = "db-password-s3cret"
ALL_SECRETS = [
    TOKEN_SECRET,
    DATABASE_PASSWORD,
    *(value for table in SECRETS.values() for value in table.values()),
]


@pytest.fixture(autouse=True)
def _no_ledger_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own LEDGER_* (other than LEDGER_TEST_*) must not leak into these settings."""
    for name in list(os.environ):
        if name.upper().startswith("LEDGER_") and not name.upper().startswith("LEDGER_TEST_"):
            monkeypatch.delenv(name)


def provider_tables() -> dict[str, dict[str, str]]:
    return {
        provider: {
            "base_url": f"http://127.0.0.1:{9001 + index}",
            **IDENTITIES[provider],
            **SECRETS[provider],
        }
        for index, provider in enumerate(PROVIDER_IDS)
    }


def toml_value(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    path: Path, *, top: str = "", extra_provider_key: str = "", token_key: str = ""
) -> Path:
    lines = [
        f'database_url = "postgresql://ledger:{DATABASE_PASSWORD}@db.example:5432/ledger"',
        'public_url = "https://ledger.example"',
        top,
        "[[api.tokens]]",
        'name = "finance"',
        f'token = "{TOKEN_SECRET}"',
        'scopes = ["finance:read", "finance:write"]',
        token_key,
    ]
    for provider, table in provider_tables().items():
        lines += ["", f"[providers.{provider}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        if provider == "cryptofuse":
            lines.append(extra_provider_key)
    path.write_text("\n".join(lines) + "\n")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_a_complete_file_loads_with_typed_provider_tables(tmp_path):
    settings = load_settings(write_config(tmp_path / "ledger.toml"))
    assert set(PROVIDER_IDS) == set(settings.providers)
    assert isinstance(settings.providers["cryptofuse"], CryptofuseSettings)
    # Read as a mapping, a table gives plain values: what build_adapter takes.
    assert "cf-client-s3cret" == settings.providers["cryptofuse"]["client_secret"]
    assert provider_tables()["coinpay"] == settings.provider_table("coinpay")
    assert set(PROVIDER_IDS) == set(build_adapters(settings.providers))
    assert settings.database_url is not None
    assert DATABASE_PASSWORD in settings.database_url


def test_a_typo_at_the_top_level_is_refused_naming_the_key_and_the_closest(tmp_path):
    path = write_config(tmp_path / "ledger.toml", top='databse_url = "postgresql://x"')
    message = refusal(path)
    assert "'databse_url'" in message
    assert "did you mean 'database_url'" in message
    assert str(path) in message


def test_a_typo_in_a_provider_table_is_refused_with_its_dotted_name(tmp_path):
    path = write_config(tmp_path / "ledger.toml", extra_provider_key='client_sercet = "x"')
    message = refusal(path)
    assert "'providers.cryptofuse.client_sercet'" in message
    assert "did you mean 'providers.cryptofuse.client_secret'" in message


def test_an_unknown_provider_table_is_refused_with_the_closest_provider(tmp_path):
    path = tmp_path / "ledger.toml"
    path.write_text('[providers.cryptofus]\nbase_url = "http://127.0.0.1:1"\n')
    message = refusal(path)
    assert "'providers.cryptofus'" in message
    assert "did you mean 'providers.cryptofuse'" in message


def test_a_typo_in_a_token_is_refused_with_its_dotted_name(tmp_path):
    path = write_config(tmp_path / "ledger.toml", token_key='scoeps = ["admin"]')
    message = refusal(path)
    assert "'api.tokens[0].scoeps'" in message
    assert "did you mean 'api.tokens[0].scopes'" in message


def test_a_misspelt_scope_is_refused_with_the_closest_scope(tmp_path):
    path = tmp_path / "ledger.toml"
    path.write_text('[[api.tokens]]\nname = "t"\ntoken = "x"\nscopes = ["finance:wirte"]\n')
    message = refusal(path)
    assert "'finance:wirte'" in message
    assert "did you mean 'finance:write'" in message


def test_finance_write_is_a_known_scope():
    token = ApiToken(name="settler", token="x", scopes=["finance:write"])
    assert ["finance:write"] == token.scopes
    assert token.matches("x")
    assert not token.matches("y")


@pytest.mark.parametrize(
    "table",
    [{"base_url": "not a url"}, {"base_url": "ftp://127.0.0.1/"}],
)
def test_a_provider_url_is_validated(table):
    with pytest.raises(ConfigError, match=r"providers\.coinpay\.base_url"):
        load_settings(None, providers={"coinpay": table})


def test_a_missing_file_a_directory_and_bad_toml_are_one_line_refusals(tmp_path):
    assert "does not exist" in refusal(tmp_path / "absent.toml")
    assert "not a file" in refusal(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("database_url = \n")
    assert "not valid TOML" in refusal(bad)


def test_environment_overrides_work_at_any_depth(tmp_path, monkeypatch):
    path = write_config(tmp_path / "ledger.toml")
    monkeypatch.setenv("LEDGER_PROVIDERS__CRYPTOFUSE__BASE_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("LEDGER_PROVIDERS__PAYMENT_ENGINE__CURRENCIES", "USD, EUR")
    monkeypatch.setenv("LEDGER_AUDIT__CHECKPOINT_EVERY_SECONDS", "0")
    monkeypatch.setenv("LEDGER_PORT", "9090")
    monkeypatch.setenv("LEDGER_TEST_SOMETHING", "not config")
    settings = load_settings(path)
    assert "http://127.0.0.1:9999" == settings.providers["cryptofuse"]["base_url"]
    # The rest of the table still comes from the file.
    assert "cf-client-s3cret" == settings.providers["cryptofuse"]["client_secret"]
    assert ["USD", "EUR"] == settings.providers["payment_engine"]["currencies"]
    assert 0 == settings.audit.checkpoint_every_seconds
    assert 9090 == settings.port
    # The keyword overrides win over the environment.
    assert 7 == load_settings(path, port=7).port


def test_an_environment_override_alone_makes_a_provider_table(monkeypatch):
    monkeypatch.setenv("LEDGER_PROVIDERS__COINPAY__BASE_URL", "http://127.0.0.1:9001")
    settings = load_settings(None)
    assert ["coinpay"] == list(settings.providers)
    assert ["password", "username", "webhook_secret"] == sorted(
        settings.providers["coinpay"].missing()
    )


@pytest.mark.parametrize(
    ("variable", "named", "closest"),
    [
        ("LEDGER_DATABSE_URL", "LEDGER_DATABSE_URL", "LEDGER_DATABASE_URL"),
        (
            "LEDGER_PROVIDERS__CRYPTOFUSE__CLIENT_SECRT",
            "providers.cryptofuse.client_secrt",
            "providers.cryptofuse.client_secret",
        ),
    ],
)
def test_an_environment_typo_is_refused_too(monkeypatch, variable, named, closest):
    monkeypatch.setenv(variable, "x")
    with pytest.raises(ConfigError) as refused:
        load_settings(None)
    assert named in str(refused.value)
    assert closest in str(refused.value)


def test_no_secret_appears_in_any_repr_or_str(tmp_path):
    settings = load_settings(write_config(tmp_path / "ledger.toml"))
    shown = [repr(settings), str(settings), repr(settings.providers), str(settings.api)]
    for provider in PROVIDER_IDS:
        table = settings.providers[provider]
        shown += [repr(table), str(table), f"{table}", f"{table!r}"]
    shown += [repr(adapter) for adapter in build_adapters(settings.providers).values()]
    shown.append(repr(settings.model_dump(mode="json")))
    for text in shown:
        for secret in ALL_SECRETS:
            assert secret not in text


def test_settings_built_directly_take_plain_tables_and_other_settings_tables():
    first = Settings(providers=provider_tables())
    second = Settings(providers=first.providers)
    assert first.provider_table("lipaykripto") == second.provider_table("lipaykripto")


def test_config_check_masks_secrets_and_names_each_source(tmp_path, monkeypatch, capsys):
    path = write_config(tmp_path / "ledger.toml")
    monkeypatch.setenv("LEDGER_PROVIDERS__CRYPTOFUSE__BASE_URL", "http://127.0.0.1:9999")
    with pytest.raises(SystemExit) as exited:
        main(["config", "check", "--config", str(path)])
    output = capsys.readouterr().out
    assert 0 == exited.value.code, output
    for secret in ALL_SECRETS:
        assert secret not in output
    lines = {line.split(" = ")[0].strip(): line for line in output.splitlines() if " = " in line}
    assert lines["providers.cryptofuse.base_url"].endswith(
        "# env LEDGER_PROVIDERS__CRYPTOFUSE__BASE_URL"
    )
    assert "http://127.0.0.1:9999" in lines["providers.cryptofuse.base_url"]
    assert lines["providers.cryptofuse.client_secret"].endswith("# file")
    assert MASK in lines["providers.cryptofuse.client_secret"]
    assert MASK in lines["api.tokens[0].token"]
    assert f"ledger:{MASK}@db.example" in lines["database_url"]
    assert lines["port"].endswith("# default")
    assert output.rstrip().endswith("ok; providers: " + ", ".join(PROVIDER_IDS))


def test_config_check_fails_on_an_incomplete_provider_table(tmp_path, capsys):
    path = tmp_path / "ledger.toml"
    path.write_text('[providers.coincoin]\nbase_url = "http://127.0.0.1:9002"\n')
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(path), "config", "check"])
    assert 1 == exited.value.code
    assert "providers.coincoin: lacks app_id, secret_key, webhook_token" in capsys.readouterr().out


def test_the_cli_refuses_a_typo_in_one_line_with_exit_2(tmp_path, capsys):
    path = write_config(tmp_path / "ledger.toml", top='databse_url = "postgresql://x"')
    with pytest.raises(SystemExit) as exited:
        main(["config", "check", "--config", str(path)])
    assert 2 == exited.value.code
    captured = capsys.readouterr()
    assert "" == captured.out
    error_lines = captured.err.strip().splitlines()
    assert 1 == len(error_lines)
    assert "did you mean 'database_url'" in error_lines[0]
    assert "Traceback" not in captured.err


def test_a_copy_with_plain_provider_tables_types_them():
    copied = Settings().model_copy(update={"providers": provider_tables()})
    assert isinstance(copied.providers["cryptofuse"], CryptofuseSettings)
    for secret in ALL_SECRETS:
        assert secret not in repr(copied)

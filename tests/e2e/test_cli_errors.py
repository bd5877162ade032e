"""Every mistake a user can make with the `ledger` command ends in one line on stderr, the exit
status `ledger --help` documents (docs/cli.md), and no traceback unless --debug is given.

Most run the command in this process (`run(argv)`, what the console script calls); a few run it
as a real process to see exactly what a user sees.
"""

from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest

from adapters.cli.main import run
from adapters.storage.migrate import available_migrations
from tests.e2e.harness import free_port
from tests.e2e.test_cli import ledger_command, schema_url

EVERY_MIGRATION = [name for _, name, _ in available_migrations()]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert 1 == len(lines), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert lines[0].startswith("ledger: ")
    return lines[0]


def config_file(tmp_path, text: str):
    path = tmp_path / "ledger.toml"
    path.write_text(text)
    return path


def database_config(tmp_path, url: str):
    return config_file(tmp_path, f'database_url = "{url}"\n')


@pytest.fixture
def migrated_config(database_url, schema, tmp_path):
    """A configuration on the test's own schema, migrated."""
    path = database_config(tmp_path, schema_url(database_url, schema))
    assert 0 == run(["db", "migrate", "--config", str(path)])
    return path


# ---------------------------------------------------------------- configuration: exit 2


def test_a_missing_config_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert 2 == run(["config", "check", "--config", str(tmp_path / "absent.toml")])
    assert "absent.toml does not exist" in one_line_error(capsys)


def test_a_directory_given_as_config_is_one_line_and_exit_2(tmp_path, capsys):
    assert 2 == run(["--config", str(tmp_path), "projections", "status"])
    assert "is not a file" in one_line_error(capsys)


def test_bad_toml_is_one_line_and_exit_2(tmp_path, capsys):
    path = config_file(tmp_path, 'database_url = "postgresql://x\n[providers\n')
    assert 2 == run(["audit", "verify", "--config", str(path)])
    assert "is not valid TOML" in one_line_error(capsys)


def test_a_key_typo_names_the_key_and_the_closest_one(tmp_path, capsys):
    path = config_file(tmp_path, 'databse_url = "postgresql://x"\n')
    assert 2 == run(["projections", "rebuild", "--config", str(path)])
    line = one_line_error(capsys)
    assert "'databse_url'" in line
    assert "did you mean 'database_url'" in line


def test_an_unknown_option_is_one_line_and_exit_2(capsys):
    assert 2 == run(["audit", "export", "--bogus"])
    assert "--bogus" in one_line_error(capsys)


def test_a_group_without_its_command_prints_its_help_and_exit_2(capsys):
    assert 2 == run([])
    assert capsys.readouterr().err.startswith("Usage: ledger [OPTIONS] COMMAND")


def test_sandbox_refuses_to_overwrite_a_file_and_unknown_providers(tmp_path, capsys):
    existing = config_file(tmp_path, "")
    assert 2 == run(["sandbox", "--write-config", str(existing)])
    assert "exists; not overwriting it" in one_line_error(capsys)
    assert 2 == run(["sandbox", "--providers", "coinpay,bogus"])
    assert "unknown providers ['bogus']" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("option", "named"),
    [("--reason", "underpaid"), ("--provider", "payment_engine")],
)
def test_reconcile_report_refuses_an_unknown_reason_or_provider(option, named, capsys):
    assert 2 == run(["reconcile", "report", option, "bogus"])
    line = one_line_error(capsys)
    assert "'bogus'" in line
    assert named in line


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(database_url, schema, tmp_path, capsys):
    path = database_config(tmp_path, schema_url(database_url, schema))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert 2 == run(["serve", "--config", str(path), "--port", str(port)])
    line = one_line_error(capsys)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "in use" in line


# ---------------------------------------------------------------- the database: exit 3


def test_an_unreachable_database_is_one_line_and_exit_3(tmp_path, capsys):
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/ledger"
    path = database_config(tmp_path, closed)
    assert 3 == run(["audit", "verify", "--config", str(path)])
    assert "database unreachable" in one_line_error(capsys)


def test_a_database_that_does_not_exist_is_one_line_and_exit_3(database_url, tmp_path, capsys):
    absent = database_url.rsplit("/", 1)[0] + "/ledger_no_such_database"
    path = database_config(tmp_path, absent)
    assert 3 == run(["projections", "status", "--config", str(path)])
    line = one_line_error(capsys)
    assert "does not exist" in line
    assert "ledger_no_such_database" in line


def test_a_read_command_refuses_an_unmigrated_database_and_changes_nothing(
    database_url, schema, tmp_path, capsys
):
    path = database_config(tmp_path, schema_url(database_url, schema))
    for argv in (
        ["projections", "status"],
        ["reconcile", "report"],
        ["audit", "verify"],
        ["payments", "show", "order-1"],
    ):
        assert 3 == run([*argv, "--config", str(path)]), argv
        line = one_line_error(capsys)
        assert f"{len(EVERY_MIGRATION)} pending" in line
        assert "run `ledger db migrate`" in line
    assert [] == asyncio.run(tables_in(database_url, schema))


def test_a_partly_migrated_database_is_refused_naming_what_is_missing(
    database_url, schema, migrated_config, capsys
):
    capsys.readouterr()
    asyncio.run(
        execute(database_url, f'DELETE FROM "{schema}".schema_migrations WHERE version = 8')
    )
    assert 3 == run(["projections", "status", "--config", str(migrated_config)])
    line = one_line_error(capsys)
    assert "1 pending: 008_" in line


async def tables_in(database_url: str, schema: str) -> list[str]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
    finally:
        await connection.close()
    return [row["table_name"] for row in rows]


async def execute(database_url: str, sql: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


# ---------------------------------------------------------------- what works


def test_db_migrate_on_a_fresh_database_lists_what_it_applied(
    database_url, schema, tmp_path, capsys
):
    path = database_config(tmp_path, schema_url(database_url, schema))
    assert 0 == run(["db", "migrate", "--config", str(path)])
    assert [f"applied: {name}" for name in EVERY_MIGRATION] == capsys.readouterr().out.splitlines()
    assert 0 == run(["--config", str(path), "db", "migrate"])
    assert "applied: nothing (up to date)\n" == capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "verify", "--config", "{config}"],
        ["--config", "{config}", "audit", "verify"],
        ["audit", "--config", "{config}", "verify"],
        ["projections", "rebuild", "--config", "{config}"],
        ["projections", "status", "--config", "{config}"],
    ],
)
def test_config_is_taken_before_or_after_the_command(argv, migrated_config, capsys):
    capsys.readouterr()
    assert 0 == run([part.format(config=migrated_config) for part in argv])
    assert "" == capsys.readouterr().err


def test_version_prints_the_package_version(capsys):
    from importlib.metadata import version  # noqa: PLC0415

    assert 0 == run(["--version"])
    assert f"{version('payment-ledger')}\n" == capsys.readouterr().out


def test_help_lists_the_exit_codes(capsys):
    assert 0 == run(["--help"])
    text = capsys.readouterr().out
    for code in ("0  success", "1  a check failed", "2  usage or configuration", "3  database"):
        assert code in text


# ---------------------------------------------------------------- as a real process


async def test_a_real_process_shows_one_line_and_no_traceback(tmp_path):
    code, out, err = await ledger_command("audit", "verify", "--config", str(tmp_path / "x.toml"))
    assert (2, "") == (code, out)
    assert 1 == len(err.strip().splitlines())
    assert "Traceback" not in err
    closed = database_config(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/ledger")
    code, out, err = await ledger_command("projections", "status", "--config", str(closed))
    assert (3, "") == (code, out)
    assert ["database unreachable"] == [
        line.split(":")[1].strip() for line in err.strip().splitlines()
    ]


async def test_debug_shows_the_traceback(tmp_path):
    closed = database_config(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/ledger")
    code, _, err = await ledger_command("projections", "status", "--config", str(closed), "--debug")
    assert 3 == code
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("ledger: database unreachable")

"""What the `ledger` command exits with, and the one-line errors that carry a status.

Every failure the user can act on is one line on stderr and one of these statuses; a traceback
only with `--debug`.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1  # a check found a fault (tampering, a failed demo step), or an id is unknown
    USAGE = 2  # a wrong option or value, a configuration refused, an address already in use
    DATABASE = 3  # the database is unreachable, does not exist, or is not migrated


EXIT_CODES_HELP = """\b
Exit status:
  0  success
  1  a check failed (audit verify found tampering, the demo failed, an id is unknown)
  2  usage or configuration error (missing or unreadable config file, bad TOML, unknown key,
     unknown option value, `serve` address already in use)
  3  database unreachable, database does not exist, or not migrated (`ledger db migrate`)
Add --debug to see the traceback of an error."""


class CliError(Exception):
    """A failure reported as one line and an exit status."""

    def __init__(self, message: str, code: ExitCode = ExitCode.CHECK_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class DatabaseUnavailable(CliError):
    """The database cannot be used: unreachable, absent, refusing us, or not migrated."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.DATABASE)


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.USAGE)

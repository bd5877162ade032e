"""ledger/ does no I/O and imports nothing from projections/ or adapters/."""

import ast
from pathlib import Path

FORBIDDEN = {"aiohttp", "asyncpg", "psycopg", "adapters", "projections", "socket", "requests"}


def test_ledger_imports_no_io_library_or_outer_layer():
    offenders = []
    for path in Path(__file__).parents[2].joinpath("ledger").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert [] == offenders

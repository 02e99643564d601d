"""The SQL package: statements built with their values inlined read those values back exactly,
and nothing in it runs a statement."""

from __future__ import annotations

import ast
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

import exporter.sql
from exporter.sql import bound
from exporter.sql.server import tables_exist


def test_bound_values_are_literals_and_identifiers_stay_identifiers(dsn: str) -> None:
    """Quotes, backslashes and percent signs survive as data; nothing is a parameter."""
    awkward = 'it\'s 100% \\ "odd"'
    query = bound(
        "SELECT {text} AS text, {array}::text[] AS array, {number} AS number,"
        " format('%I', {text}) AS quoted, (SELECT 1 FROM {table} LIMIT 0) AS none",
        text=awkward,
        array=(awkward, "b"),
        number=2.5,
        table=sql.Identifier("pg_catalog", "pg_class"),
    )
    assert isinstance(query, bytes)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(query).fetchone()
    assert row == {
        "text": awkward,
        "array": [awkward, "b"],
        "number": 2.5,
        "quoted": '"it\'s 100% \\ ""odd"""',
        "none": None,
    }


def test_tables_exist_reads_quoted_names_without_error_for_missing_ones(dsn: str) -> None:
    """A schema name needing quotes is read as a name; an absent table is a row, not an error."""
    schema = 'odd "schema"; DROP'
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {} (v int)").format(sql.Identifier(schema, "t")))
        count = sql.SQL(", (SELECT count(*) FROM {}) AS n").format(sql.Identifier(schema, "t"))
        rows = conn.execute(tables_exist(schema, ("t", "missing"), count)).fetchall()
    assert sorted(rows, key=lambda row: row["name"]) == [
        {"name": "missing", "exists": False, "readable": False, "n": 0},
        {"name": "t", "exists": True, "readable": True, "n": 0},
    ]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, ``from psycopg import sql`` counted as ``psycopg.sql``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "psycopg":
                found |= {f"psycopg.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return found


def test_the_sql_package_composes_and_does_no_io() -> None:
    """Its modules import only typing helpers, ``psycopg.sql`` and one another, and define no
    coroutine: whatever runs a statement lives outside it."""
    allowed = {"__future__", "collections.abc", "typing", "psycopg.sql", "exporter.sql"}
    package = Path(exporter.sql.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) > 1
    for path in modules:
        imports = {name for name in imported_modules(path) if not name.startswith("exporter.sql.")}
        assert imports <= allowed, (path.name, imports - allowed)
        tree = ast.parse(path.read_text())
        assert not any(isinstance(node, ast.AsyncFunctionDef) for node in ast.walk(tree))

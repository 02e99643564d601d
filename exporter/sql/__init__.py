"""Every SQL statement the exporter runs, as named constants: no I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from psycopg import sql

SERVER_VERSION = "SELECT current_setting('server_version') AS version"

SCHEMA_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s) AS exists"

# Serialises `setup()` across replicas starting at once: LangGraph's migrations
# are not safe to run concurrently. The key is arbitrary but fixed. Waiters poll
# with the try- form: a session blocked inside pg_advisory_lock() would hold a
# snapshot that the migrations' CREATE INDEX CONCURRENTLY waits for (deadlock).
SETUP_LOCK_KEY = 0x6C67_6370  # "lgcp"
TRY_SETUP_LOCK = "SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS acquired"
RELEASE_SETUP_LOCK = "SELECT pg_advisory_unlock(%s, hashtext(%s))"


def bound(template: str, **values: Any) -> bytes:
    """``template`` with each ``{name}`` filled from ``values``: a
    :class:`psycopg.sql.Composable` (an identifier) as it is, anything else as a
    quoted literal (a tuple as an array).

    For the statements a scrape runs, whose values are fixed for the process (a
    schema, a setting): built once per value (callers cache it) and executed with
    no parameters, so nothing is adapted per scrape and the server plans the
    prepared statement once.
    """
    filled = {
        name: value if isinstance(value, sql.Composable) else sql.Literal(_sql_value(value))
        for name, value in values.items()
    }
    return sql.SQL(template).format(**filled).as_bytes()


def _sql_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# One row per name: whether the schema holds that table, and whether this role may read it.
# format('%I.%I') quotes schema and table server-side, so to_regclass sees exactly the
# identifiers and never parses a schema name as SQL; a missing table is NULL, never an error.
TABLES_EXIST: Final = """
SELECT t.name, r.oid IS NOT NULL AS exists,
       coalesce(has_table_privilege(r.oid, 'SELECT'), false) AS readable{columns}
FROM unnest({tables}::text[]) AS t(name),
     LATERAL (SELECT to_regclass(format('%I.%I', {schema}::text, t.name)) AS oid) AS r
"""
_NO_COLUMNS: Final = sql.SQL("")


def tables_exist(
    schema: str, tables: Sequence[str], columns: sql.Composable = _NO_COLUMNS
) -> bytes:
    """:data:`TABLES_EXIST` for ``tables`` in ``schema``: rows of ``name``, ``exists`` and
    ``readable``, plus ``columns`` (``, expression AS name``, ...) on each.

    The one way the exporter asks whether a table is there before it reads it, so that
    a schema not set up yet never puts an error in the server's log. A column that
    names one of the tables fails once that table is gone: its caller catches that.
    """
    return bound(TABLES_EXIST, schema=schema, tables=tuple(tables), columns=columns)


def create_schema(schema: str) -> sql.Composed:
    """``CREATE SCHEMA`` with the name quoted as an identifier."""
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


# Leader election among sidecars watching one database and schema: the leader
# holds this session-level advisory lock on a connection of its own, and
# PostgreSQL releases it the moment that session ends.
LEADER_LOCK_KEY = 0x6C67_6C64  # "lgld"
TRY_LEADER_LOCK = (
    "SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS acquired,"
    " current_setting('server_version') AS version"
)

"""Statements on the server and its catalog: its version, schemas, which tables exist,
its sessions (``pg_stat_activity``) and statement statistics (``pg_stat_statements``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from psycopg import sql

from exporter.sql import bound, identifier, table

SERVER_VERSION: Final = "SELECT current_setting('server_version') AS version"

SCHEMA_EXISTS: Final = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s) AS exists"


def create_schema(schema: str) -> sql.Composed:
    """``CREATE SCHEMA`` with the name quoted as an identifier."""
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(identifier(schema))


# Parameters: the schema and the table. format('%I.%I') quotes both server-side.
TABLE_EXISTS: Final = (
    "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL AS exists"
)

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


# One statement, so one snapshot of pg_stat_activity and one round trip: the
# server's limits (`reserved_connections` exists from PostgreSQL 16, hence
# current_setting(..., missing_ok); pg_settings would cost a scan of every
# setting on each scrape), every client backend on the server, this
# database's ages and waits, and its backends by state and raw
# application_name as JSON (the application is folded into a bounded label in
# Python, never exported raw). Ages are clamped at zero: a session can start
# its transaction after this statement's now() and before the snapshot.
ACTIVITY: Final = """
WITH backends AS (
    SELECT
        datname = current_database() AS here,
        pid, state, application_name, wait_event_type, xact_start, query_start, state_change,
        state IN ('idle in transaction', 'idle in transaction (aborted)') AS idle_in_transaction
    FROM pg_stat_activity
    WHERE backend_type = 'client backend'
)
SELECT
    current_setting('max_connections')::bigint AS max_connections,
    current_setting('superuser_reserved_connections')::bigint
        + coalesce(current_setting('reserved_connections', true)::bigint, 0)
        AS reserved_connections,
    count(*) AS server_connections,
    greatest(extract(epoch FROM max(now() - xact_start) FILTER (WHERE here))::float8, 0)
        AS oldest_transaction_seconds,
    greatest(extract(epoch FROM max(now() - query_start)
        FILTER (WHERE here AND state = 'active' AND pid <> pg_backend_pid()))::float8, 0)
        AS longest_active_query_seconds,
    count(*) FILTER (WHERE here AND wait_event_type = 'Lock')
        AS lock_waiting_connections,
    count(*) FILTER (WHERE here AND idle_in_transaction)
        AS idle_in_transaction_connections,
    greatest(extract(epoch FROM max(now() - state_change)
        FILTER (WHERE here AND idle_in_transaction))::float8, 0)
        AS oldest_idle_in_transaction_seconds,
    (SELECT coalesce(json_agg(g), '[]')
     FROM (SELECT state, application_name, count(*) AS connections
           FROM backends WHERE here GROUP BY state, application_name) AS g)
        AS states
FROM backends
"""

# Where pg_stat_statements is installed in this database: no row when it is not.
EXTENSION_SCHEMA: Final = """
SELECT n.nspname AS schema
FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""

# The timing column is total_exec_time from PostgreSQL 13 (extension 1.8) on and
# total_time before; to_jsonb reads whichever the installed view has.
STATEMENTS: Final = """
SELECT
    s.query,
    s.calls,
    s.rows,
    coalesce(to_jsonb(s) ->> 'total_exec_time', to_jsonb(s) ->> 'total_time')::float8
        AS total_ms
FROM {view} AS s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND s.query ILIKE {filter}
"""
STATEMENTS_FILTER: Final = "%checkpoint%"


def statements(extension_schema: str) -> bytes:
    """:data:`STATEMENTS` over the view in ``extension_schema`` (:data:`EXTENSION_SCHEMA`'s
    answer): the statements of this database that name a checkpoint table."""
    return bound(
        STATEMENTS,
        view=table(extension_schema, "pg_stat_statements"),
        filter=STATEMENTS_FILTER,
    )

"""The project's own table beside LangGraph's: ``workflow_metadata``, with versioned migrations.

One row per thread (root namespace and subgraphs alike are one workflow).
Migrations are recorded in ``workflow_metadata_migrations`` the way LangGraph
records its own in ``checkpoint_migrations``; each runs once, in order, under
the same setup lock as LangGraph's (the caller holds it).
"""

from __future__ import annotations

from typing import Any, Final

from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

TABLE: Final = "workflow_metadata"
MIGRATIONS_TABLE: Final = "workflow_metadata_migrations"

# Every status a workflow can have; `stuck` is derived (running, idle too long), never stored.
RUNNING: Final = "running"
INTERRUPTED: Final = "interrupted"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
STATUSES: Final = (RUNNING, INTERRUPTED, COMPLETED, FAILED, CANCELLED)

# The canary probe's thread: reserved, never tracked, never counted as a workflow.
CANARY_THREAD_ID: Final = "checkpoint-exporter:canary"

# {schema} is bound as a quoted identifier. Append only: a released migration never changes.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE IF NOT EXISTS {schema}.workflow_metadata_migrations (
        v integer PRIMARY KEY
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS {schema}.workflow_metadata (
        thread_id text PRIMARY KEY,
        status text NOT NULL CHECK (
            status IN ('running', 'interrupted', 'completed', 'failed', 'cancelled')
        ),
        first_activity timestamptz NOT NULL,
        last_activity timestamptz NOT NULL,
        last_checkpoint_id text,
        checkpoint_count bigint NOT NULL DEFAULT 0 CHECK (checkpoint_count >= 0),
        last_error_class text,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS workflow_metadata_status_last_activity_idx
        ON {schema}.workflow_metadata (status, last_activity)
    """,
    """
    CREATE INDEX IF NOT EXISTS workflow_metadata_checkpoint_count_idx
        ON {schema}.workflow_metadata (checkpoint_count)
    """,
)

LATEST_VERSION: Final = len(MIGRATIONS) - 1


def migration(index: int, schema: str) -> sql.Composed:
    """Migration ``index`` with the schema quoted as an identifier."""
    return sql.SQL(MIGRATIONS[index]).format(schema=sql.Identifier(schema))


async def migrate(conn: AsyncConnection[Any], schema: str) -> int:
    """Run the migrations ``schema`` lacks, in order; return how many ran.

    The caller holds the setup lock and ``schema`` exists. Idempotent: a second
    call runs nothing.
    """
    versions = sql.Identifier(schema, MIGRATIONS_TABLE)
    await conn.execute(migration(0, schema))  # the table of versions, before reading it
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(sql.SQL("SELECT max(v) FROM {}").format(versions))
        row = await cursor.fetchone()
    current = -1 if row is None or row[0] is None else int(row[0])
    pending = range(current + 1, len(MIGRATIONS))
    for index in pending:
        async with conn.transaction():
            await conn.execute(migration(index, schema))
            await conn.execute(sql.SQL("INSERT INTO {} (v) VALUES (%s)").format(versions), (index,))
    return len(pending)

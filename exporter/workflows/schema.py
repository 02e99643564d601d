"""The project's own table beside LangGraph's: ``workflow_metadata``, its statuses and migrations.

One row per thread (root namespace and subgraphs alike are one workflow).
Migrations are recorded in ``workflow_metadata_migrations`` the way LangGraph
records its own in ``checkpoint_migrations``; each runs once, in order, under
the same setup lock as LangGraph's (the caller holds it). As LangGraph's saver
runs the migrations its ``base.py`` holds, :func:`migrate` runs those of
:mod:`exporter.sql.workflow_metadata`, which holds every statement over these
tables; the tables' names and the migrations are offered here too, beside the
statuses, for code that knows the table but writes no SQL.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from exporter.sql.workflow_metadata import (
    COUNTS_TABLE,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    TABLE,
    migration,
    migration_level,
    record_migration,
)

__all__ = [
    "CANARY_THREAD_ID",
    "CANCELLED",
    "COMPLETED",
    "COUNTS_TABLE",
    "FAILED",
    "INTERRUPTED",
    "LATEST_VERSION",
    "MIGRATIONS",
    "MIGRATIONS_TABLE",
    "RUNNING",
    "STATUSES",
    "TABLE",
    "migrate",
    "migration",
]

# Every status a workflow can have; `stuck` is derived (running, idle too long), never stored.
RUNNING: Final = "running"
INTERRUPTED: Final = "interrupted"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
STATUSES: Final = (RUNNING, INTERRUPTED, COMPLETED, FAILED, CANCELLED)

# The canary probe's thread: reserved, never tracked, never counted as a workflow.
CANARY_THREAD_ID: Final = "checkpoint-exporter:canary"

LATEST_VERSION: Final = len(MIGRATIONS) - 1


async def migrate(conn: AsyncConnection[Any], schema: str) -> int:
    """Run the migrations ``schema`` lacks, in order; return how many ran.

    The caller holds the setup lock and ``schema`` exists. Idempotent: a second
    call runs nothing.
    """
    await conn.execute(migration(0, schema))  # the table of versions, before reading it
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(migration_level(schema))
        row = await cursor.fetchone()
    current = -1 if row is None or row[0] is None else int(row[0])
    pending = range(current + 1, len(MIGRATIONS))
    for index in pending:
        async with conn.transaction():
            # Unprepared: a migration may be several statements, which only the simple
            # protocol takes (the connection may prepare everything, prepare_threshold=0).
            await conn.execute(migration(index, schema), prepare=False)
            await conn.execute(record_migration(schema), (index,))
    return len(pending)

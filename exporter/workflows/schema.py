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
# Threads by status, kept exact by triggers on TABLE (migration 4).
COUNTS_TABLE: Final = "workflow_status_counts"

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
    # Threads by status, kept by statement triggers, so that reading them costs the same at
    # any number of threads. Writes are locked out from the backfill to the commit, so the
    # counts start exact (a table left from a dropped workflow_metadata is recounted). Every
    # status has its row from the start, and a statement that changes a count first locks all
    # of them in status order: the tracker's flush deletes, then upserts, in one transaction,
    # and two replicas each holding one row from their first statement could otherwise
    # deadlock in their second. A statement that changes no status (most flushes) locks
    # nothing. SECURITY DEFINER: a role granted DML on workflow_metadata before this table
    # existed keeps writing.
    """
    LOCK TABLE {schema}.workflow_metadata IN SHARE ROW EXCLUSIVE MODE;
    CREATE TABLE IF NOT EXISTS {schema}.workflow_status_counts (
        status text PRIMARY KEY,
        threads bigint NOT NULL
    );
    DELETE FROM {schema}.workflow_status_counts;
    INSERT INTO {schema}.workflow_status_counts (status, threads)
    SELECT s.status, count(w.status)
    FROM unnest(ARRAY['cancelled', 'completed', 'failed', 'interrupted', 'running']) AS s(status)
    LEFT JOIN {schema}.workflow_metadata AS w ON w.status = s.status
    GROUP BY s.status;
    CREATE OR REPLACE FUNCTION {schema}.workflow_status_counts_apply() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DECLARE
        changed text[];
        deltas bigint[];
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            UPDATE {schema}.workflow_status_counts SET threads = 0 WHERE threads <> 0;
            RETURN NULL;
        ELSIF TG_OP = 'INSERT' THEN
            SELECT array_agg(status ORDER BY status), array_agg(n ORDER BY status)
            INTO changed, deltas
            FROM (SELECT status, count(*) AS n FROM new_rows GROUP BY status) AS d;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(status ORDER BY status), array_agg(n ORDER BY status)
            INTO changed, deltas
            FROM (SELECT status, -count(*) AS n FROM old_rows GROUP BY status) AS d;
        ELSE
            SELECT array_agg(status ORDER BY status), array_agg(n ORDER BY status)
            INTO changed, deltas
            FROM (
                SELECT status, sum(n) AS n
                FROM (SELECT status, 1 AS n FROM new_rows
                      UNION ALL SELECT status, -1 FROM old_rows) AS c
                GROUP BY status
                HAVING sum(n) <> 0
            ) AS d;
        END IF;
        IF changed IS NULL THEN
            RETURN NULL;
        END IF;
        PERFORM FROM {schema}.workflow_status_counts ORDER BY status FOR UPDATE;
        INSERT INTO {schema}.workflow_status_counts AS c (status, threads)
        SELECT d.status, d.n FROM unnest(changed, deltas) AS d(status, n) ORDER BY d.status
        ON CONFLICT (status) DO UPDATE SET threads = c.threads + excluded.threads;
        RETURN NULL;
    END
    $$;
    DROP TRIGGER IF EXISTS workflow_status_counts_insert ON {schema}.workflow_metadata;
    CREATE TRIGGER workflow_status_counts_insert AFTER INSERT ON {schema}.workflow_metadata
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {schema}.workflow_status_counts_apply();
    DROP TRIGGER IF EXISTS workflow_status_counts_update ON {schema}.workflow_metadata;
    CREATE TRIGGER workflow_status_counts_update AFTER UPDATE ON {schema}.workflow_metadata
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {schema}.workflow_status_counts_apply();
    DROP TRIGGER IF EXISTS workflow_status_counts_delete ON {schema}.workflow_metadata;
    CREATE TRIGGER workflow_status_counts_delete AFTER DELETE ON {schema}.workflow_metadata
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {schema}.workflow_status_counts_apply();
    DROP TRIGGER IF EXISTS workflow_status_counts_truncate ON {schema}.workflow_metadata;
    CREATE TRIGGER workflow_status_counts_truncate AFTER TRUNCATE ON {schema}.workflow_metadata
        FOR EACH STATEMENT EXECUTE FUNCTION {schema}.workflow_status_counts_apply()
    """,
    # The oldest running workflow: the first entry of a range, not a scan of the running ones.
    """
    CREATE INDEX IF NOT EXISTS workflow_metadata_status_first_activity_idx
        ON {schema}.workflow_metadata (status, first_activity)
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
            # Unprepared: a migration may be several statements, which only the simple
            # protocol takes (the connection may prepare everything, prepare_threshold=0).
            await conn.execute(migration(index, schema), prepare=False)
            await conn.execute(sql.SQL("INSERT INTO {} (v) VALUES (%s)").format(versions), (index,))
    return len(pending)

"""Statements over the project's own tables: ``workflow_metadata`` and what keeps it.

One row per thread, written by the tracker's flush (:mod:`exporter.workflows.tracking_sql`),
read by the workflows collector, the recovery check and the load test; its migrations are
run by :func:`exporter.workflows.schema.migrate`, as LangGraph's saver runs the ones its
``base.py`` holds. The statuses the rows hold are :mod:`exporter.workflows.schema`'s, and
reach these statements as values.
"""

from __future__ import annotations

from typing import Final

from psycopg import sql

from exporter.sql import bound, schema_query, table

TABLE: Final = "workflow_metadata"
MIGRATIONS_TABLE: Final = "workflow_metadata_migrations"
# Threads by status, kept exact by triggers on TABLE (migration 4).
COUNTS_TABLE: Final = "workflow_status_counts"

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


def migration(index: int, schema: str) -> sql.Composed:
    """Migration ``index`` with the schema quoted as an identifier."""
    return schema_query(sql.SQL(MIGRATIONS[index]), schema)


def migration_level(schema: str) -> sql.Composed:
    """The highest migration recorded in ``schema`` (one row, NULL while none)."""
    return sql.SQL("SELECT max(v) FROM {}").format(table(schema, MIGRATIONS_TABLE))


def record_migration(schema: str) -> sql.Composed:
    """The statement recording migration ``%s`` as run in ``schema``."""
    return sql.SQL("INSERT INTO {} (v) VALUES (%s)").format(table(schema, MIGRATIONS_TABLE))


# exporter.workflows.fold.status_of() over the write's columns: the batch `d` and the
# stored row `w` of UPSERT; "C" so that ids compare by code point, as in Python.
STATUS_SQL: Final = """CASE
    WHEN d.status IS NULL THEN w.status
    WHEN d.status_id IS NULL
        OR w.last_checkpoint_id IS NULL
        OR d.status_id COLLATE "C" > w.last_checkpoint_id
        OR (d.status_id COLLATE "C" = w.last_checkpoint_id AND NOT d.strict)
        THEN d.status
    ELSE coalesce(d.fallback, w.status)
END"""

# One statement per flush, writing what the fold decided. Existing rows are updated under
# their row lock; the rest are inserted, and a thread another process inserted meanwhile is
# updated just the same (looking its batch row up in `d`: a race, so rare). Either way the
# status is STATUS_SQL, the fold's own rule weighed against the stored row
# (exporter.workflows.fold says why that happens here).
UPSERT: Final = """
WITH d AS (
    SELECT * FROM unnest(
        %(thread_id)s::text[], %(status)s::text[], %(status_id)s::text[], %(strict)s::bool[],
        %(fallback)s::text[], %(last_id)s::text[], %(checkpoints)s::bigint[],
        %(first_at)s::float8[], %(last_at)s::float8[], %(error_class)s::text[]
    ) AS d(thread_id, status, status_id, strict, fallback, last_id, checkpoints, first_at,
           last_at, error_class)
),
updated AS (
    UPDATE {table} AS w SET
        status = {status},
        last_activity = greatest(w.last_activity, to_timestamp(d.last_at)),
        last_checkpoint_id = greatest(w.last_checkpoint_id COLLATE "C", d.last_id),
        checkpoint_count = w.checkpoint_count + d.checkpoints,
        last_error_class = coalesce(d.error_class, w.last_error_class),
        updated_at = now()
    FROM d
    WHERE w.thread_id = d.thread_id
    RETURNING w.thread_id
)
INSERT INTO {table} AS w (
    thread_id, status, first_activity, last_activity, last_checkpoint_id, checkpoint_count,
    last_error_class
)
SELECT
    d.thread_id, coalesce(d.status, 'running'), to_timestamp(d.first_at),
    to_timestamp(d.last_at), d.last_id, d.checkpoints, d.error_class
FROM d
WHERE NOT EXISTS (SELECT FROM updated AS u WHERE u.thread_id = d.thread_id)
ON CONFLICT (thread_id) DO UPDATE SET
    status = (SELECT {status} FROM d WHERE d.thread_id = excluded.thread_id),
    last_activity = greatest(w.last_activity, excluded.last_activity),
    last_checkpoint_id = greatest(w.last_checkpoint_id COLLATE "C", excluded.last_checkpoint_id),
    checkpoint_count = w.checkpoint_count + excluded.checkpoint_count,
    last_error_class = coalesce(excluded.last_error_class, w.last_error_class),
    updated_at = now()
"""
DELETE_THREADS: Final = "DELETE FROM {table} WHERE thread_id = ANY(%(thread_id)s::text[])"
# After a prune that keeps the latest checkpoints: count what is left (an index range per thread).
RECOUNT: Final = """
UPDATE {table} AS w
SET checkpoint_count = (SELECT count(*) FROM {checkpoints} AS c WHERE c.thread_id = w.thread_id),
    updated_at = now()
WHERE w.thread_id = ANY(%(thread_id)s::text[])
"""
# UPSERT's parameters, each an array of one value per thread, in the order of `d`'s columns.
UPSERT_COLUMNS: Final = (
    "thread_id", "status", "status_id", "strict", "fallback", "last_id", "checkpoints",
    "first_at", "last_at", "error_class",
)  # fmt: skip


def upsert(schema: str) -> sql.Composed:
    """:data:`UPSERT` into ``schema``'s table, its status decided by :data:`STATUS_SQL`."""
    return sql.SQL(UPSERT).format(table=table(schema, TABLE), status=sql.SQL(STATUS_SQL))


def delete_threads(schema: str) -> sql.Composed:
    """:data:`DELETE_THREADS` from ``schema``'s table."""
    return sql.SQL(DELETE_THREADS).format(table=table(schema, TABLE))


def recount(schema: str) -> sql.Composed:
    """:data:`RECOUNT` of ``schema``'s table from its ``checkpoints``."""
    return sql.SQL(RECOUNT).format(
        table=table(schema, TABLE), checkpoints=table(schema, "checkpoints")
    )


# Every figure but the counts, in one snapshot with them. The canary's row is
# looked up by key and taken off its status in Python, so the counts need no
# filter. Ages are clamped at zero: a tracker may stamp an activity after this
# statement's now().
FIGURES: Final = """
    (SELECT status FROM {table} WHERE thread_id = {canary}) AS canary_status,
    (SELECT count(*) FROM {table}
     WHERE status = {running} AND last_activity < now() - make_interval(secs => {stuck})
       AND thread_id <> {canary}) AS stuck,
    (SELECT greatest(extract(epoch FROM now() - min(first_activity))::float8, 0) FROM {table}
     WHERE status = {running} AND thread_id <> {canary}) AS oldest_running,
    (SELECT greatest(extract(epoch FROM now() - last_activity)::float8, 0) FROM {table}
     WHERE status = {running} AND thread_id <> {canary}
     ORDER BY last_activity LIMIT 1) AS longest_idle,
    (SELECT count(*) FROM {table}
     WHERE checkpoint_count > {threshold} AND thread_id <> {canary}) AS prune_candidates
"""

# The counts as the triggers keep them: a handful of rows, whatever the threads.
SUMMARY: Final = (
    """
SELECT
    (SELECT coalesce(json_object_agg(status, threads), '{{}}') FROM {counts}) AS statuses,"""
    + FIGURES
)

# Before the counts table: an entry of the status index per thread.
SCAN_SUMMARY: Final = (
    """
SELECT
    (SELECT coalesce(json_object_agg(status, threads), '{{}}')
     FROM (SELECT status, count(*) AS threads FROM {table} GROUP BY status) AS s) AS statuses,"""
    + FIGURES
)


def summary(
    schema: str,
    *,
    canary: str,
    running: str,
    stuck_after: float,
    prune_threshold: int,
    counted: bool = True,
) -> bytes:
    """:data:`SUMMARY` (or, not ``counted``, :data:`SCAN_SUMMARY`) for ``schema``'s tables,
    the canary's thread, the running status and these thresholds, all inlined."""
    return bound(
        SUMMARY if counted else SCAN_SUMMARY,
        table=table(schema, TABLE),
        counts=table(schema, COUNTS_TABLE),
        canary=canary,
        running=running,
        stuck=float(stuck_after),
        threshold=int(prune_threshold),
    )


# Parameters: the statuses of a workflow not finished, the canary's thread (never a workflow),
# and how many to read, the newest activity first.
RUNNING_WORKFLOWS: Final = """
SELECT thread_id FROM {table}
WHERE status = ANY(%s) AND thread_id <> %s
ORDER BY last_activity DESC, thread_id
LIMIT %s
"""


def running_workflows(schema: str) -> sql.Composed:
    """:data:`RUNNING_WORKFLOWS` for ``schema``, quoted as an identifier."""
    return sql.SQL(RUNNING_WORKFLOWS).format(table=table(schema, TABLE))


# Parameter: a LIKE pattern of thread ids.
STATUSES_LIKE: Final = (
    "SELECT status, count(*) AS n FROM {} WHERE thread_id LIKE %s GROUP BY status"
)


def statuses_like(schema: str) -> sql.Composed:
    """:data:`STATUSES_LIKE` over ``schema``'s table: threads by status among those matching."""
    return sql.SQL(STATUSES_LIKE).format(table(schema, TABLE))

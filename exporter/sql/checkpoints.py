"""Statements over LangGraph's tables: their migration level, storage, samples and integrity.

The tables are those ``langgraph-checkpoint-postgres`` creates (``checkpoints``,
``checkpoint_blobs``, ``checkpoint_writes``, ``checkpoint_migrations``); LangGraph's own
statements over them stay in its ``base.py``, and :func:`without_task_path` adapts two of
them for tables of an earlier migration. The statements here name the tables qualified by
the schema, never through the ``search_path``.
"""

from __future__ import annotations

from typing import Final

from psycopg import sql

from exporter.sql import bound, identifier, table
from exporter.sql.server import tables_exist

TABLES: Final = ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations")
# The three that hold a thread's data.
DATA_TABLES: Final = TABLES[:3]

# LangGraph records each migration it ran as a row `v`; the highest is the schema's level.
MIGRATION_LEVEL: Final = "SELECT max(v) AS v FROM {table}"

# Whether a thread has checkpoints, on the checkpointer's pool (the schema is on its path):
# a routing saver asks it once per process for each thread it has not placed yet.
THREAD_EXISTS: Final = "SELECT EXISTS (SELECT 1 FROM checkpoints WHERE thread_id = %s) AS exists"


def migration_level(schema: str) -> bytes:
    """:data:`MIGRATION_LEVEL` of ``schema``: one row, ``v`` NULL while none is recorded."""
    return bound(MIGRATION_LEVEL, table=table(schema, "checkpoint_migrations"))


def tables_present(schema: str) -> bytes:
    """Which of :data:`TABLES` exist in ``schema`` (:func:`exporter.sql.server.tables_exist`)."""
    return tables_exist(schema, TABLES)


def tables_present_and_level(schema: str) -> bytes:
    """Once the migrations table is known to exist: existence and level (``v``) in one statement.

    It names the table, so it fails if the table has gone since.
    """
    level = sql.SQL(", (SELECT max(v) FROM {}) AS v").format(table(schema, "checkpoint_migrations"))
    return tables_exist(schema, TABLES, level)


# The statistics come from the pg_stat_get_* functions that pg_stat_user_tables
# wraps: that view aggregates over every relation and index of the database
# (its GROUP BY runs before any join to our tables), so its cost grows
# with the whole catalog; the functions cost one lookup per table.
CATALOG: Final = """
SELECT t.name AS table,
       c.oid IS NOT NULL AS exists,
       coalesce(pg_table_size(c.oid), 0) AS table_bytes,
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast_bytes,
       coalesce(pg_indexes_size(c.oid), 0) AS index_bytes,
       c.reltuples::float8 AS reltuples,
       pg_stat_get_live_tuples(c.oid) AS n_live_tup,
       pg_stat_get_dead_tuples(c.oid) AS n_dead_tup,
       extract(epoch FROM now() - pg_stat_get_last_vacuum_time(c.oid))::float8
           AS last_vacuum_age,
       extract(epoch FROM now() - pg_stat_get_last_autovacuum_time(c.oid))::float8
           AS last_autovacuum_age,
       extract(epoch FROM now() - pg_stat_get_last_analyze_time(c.oid))::float8
           AS last_analyze_age,
       extract(epoch FROM now() - pg_stat_get_last_autoanalyze_time(c.oid))::float8
           AS last_autoanalyze_age,
       current_setting('server_version_num')::int AS server_version_num,
       (SELECT st.n_distinct::float8 FROM pg_stats st
        WHERE st.schemaname = {schema} AND st.tablename = 'checkpoints'
          AND st.attname = 'thread_id' AND NOT st.inherited) AS threads_n_distinct
FROM unnest({tables}::text[]) WITH ORDINALITY AS t(name, position)
LEFT JOIN pg_namespace n ON n.nspname = {schema}
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind = 'r'
ORDER BY t.position
"""


def catalog(schema: str) -> bytes:
    """:data:`CATALOG` for :data:`TABLES` in ``schema``, its names inlined: no parameters."""
    return bound(CATALOG, schema=schema, tables=TABLES)


# The size sample, bound with exporter.sql.schema_query. pg_column_size reads the stored
# (compressed or TOAST pointer) size without detoasting; `ts` is read, detoasting the
# checkpoint, only for ids that are not UUIDv6.
CHECKPOINT_SAMPLE: Final = sql.SQL("""
SELECT pg_column_size(checkpoint) + pg_column_size(metadata) AS bytes,
       checkpoint_id,
       CASE WHEN checkpoint_id !~ %(uuid6)s THEN checkpoint->>'ts' END AS ts
FROM {schema}.checkpoints TABLESAMPLE SYSTEM (%(percent)s::real)
LIMIT %(limit)s
""")

BLOB_SAMPLE: Final = sql.SQL("""
SELECT pg_column_size(blob) AS bytes
FROM {schema}.checkpoint_blobs TABLESAMPLE SYSTEM (%(percent)s::real)
WHERE blob IS NOT NULL
LIMIT %(limit)s
""")

# The first pages of the heap, read by TID Range Scan: bounded whatever the table's size.
OLDEST_HEAD: Final = sql.SQL("""
SELECT min(checkpoint_id COLLATE "C") FILTER (WHERE checkpoint_id ~ %(uuid6)s) AS checkpoint_id,
       min(checkpoint->>'ts') FILTER (WHERE checkpoint_id !~ %(uuid6)s) AS ts
FROM {schema}.checkpoints
WHERE ctid < %(head)s::tid
""")

# The integrity scanner's (exporter.workflows.integrity). First, how many of
# %(tables)s the schema lacks.
MISSING_TABLES: Final = """
SELECT count(*) FILTER (WHERE to_regclass(format('%%I.%%I', %(schema)s::text, t)) IS NULL)
       AS missing
FROM unnest(%(tables)s::text[]) AS t
"""

# Distinct thread ids after a cursor, across the three tables: a recursive skip
# scan probes each primary key once per thread instead of reading every row.
# One thread more than the batch tells whether the pass ends with this step.
_SKIP_SCAN: Final = """
{name} AS (
    (SELECT thread_id, 1 AS depth FROM {table} WHERE {start} ORDER BY thread_id LIMIT 1)
    UNION ALL
    SELECT (SELECT t.thread_id FROM {table} AS t WHERE t.thread_id > s.thread_id
            ORDER BY t.thread_id LIMIT 1),
           s.depth + 1
    FROM {name} AS s
    WHERE s.thread_id IS NOT NULL AND s.depth < %(limit)s
)"""

THREADS: Final = """
WITH RECURSIVE {scans}
SELECT thread_id FROM (
    SELECT thread_id FROM c UNION SELECT thread_id FROM b UNION SELECT thread_id FROM w
) AS threads
WHERE thread_id IS NOT NULL
ORDER BY thread_id
LIMIT %(limit)s
"""

# Every structural finding of a batch of threads, from one snapshot. `versions`
# holds each referenced (channel, version) once, with whether any checkpoint
# has it inline and whether one records writing it outside a delta channel.
# A version inline in one checkpoint and absent from another is a delta
# snapshot (the `true` marker, then omitted): only those mix, and need a blob.
STRUCTURE: Final = """
WITH refs AS (
    SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, v.key AS channel, v.value AS version,
           (c.checkpoint -> 'channel_values') ? v.key AS inline,
           coalesce((c.checkpoint -> 'updated_channels') ? v.key, false)
               AND NOT coalesce((c.metadata -> 'counters_since_delta_snapshot') ? v.key, false)
               AND NOT c.metadata ? 'delta_writes_versioned' AS written
    FROM {checkpoints} AS c
    CROSS JOIN LATERAL jsonb_each_text(c.checkpoint -> 'channel_versions') AS v
    WHERE c.thread_id = ANY(%(threads)s::text[])
), versions AS (
    SELECT thread_id, checkpoint_ns, channel, version,
           count(*) AS checkpoints, max(checkpoint_id) AS latest,
           bool_or(inline) AS inline, bool_or(written) AS written,
           bool_or(inline) AND NOT bool_and(inline) AS snapshot
    FROM refs
    GROUP BY thread_id, checkpoint_ns, channel, version
)
SELECT 'missing_blobs' AS kind, v.thread_id, v.checkpoint_ns, v.channel, v.version,
       v.latest AS checkpoint_id, v.checkpoints AS rows
FROM versions AS v
WHERE ((v.written AND NOT v.inline) OR v.snapshot) AND NOT EXISTS (
    SELECT 1 FROM {blobs} AS b
    WHERE b.thread_id = v.thread_id AND b.checkpoint_ns = v.checkpoint_ns
      AND b.channel = v.channel AND b.version = v.version)
UNION ALL
SELECT 'unreferenced_blobs', b.thread_id, b.checkpoint_ns, b.channel, b.version, NULL, 1
FROM {blobs} AS b
WHERE b.thread_id = ANY(%(threads)s::text[]) AND NOT EXISTS (
    SELECT 1 FROM versions AS v
    WHERE v.thread_id = b.thread_id AND v.checkpoint_ns = b.checkpoint_ns
      AND v.channel = b.channel AND v.version = b.version)
UNION ALL
SELECT 'orphan_writes', w.thread_id, w.checkpoint_ns, NULL, NULL, w.checkpoint_id, count(*)
FROM {writes} AS w
WHERE w.thread_id = ANY(%(threads)s::text[]) AND NOT EXISTS (
    SELECT 1 FROM {checkpoints} AS c
    WHERE c.thread_id = w.thread_id AND c.checkpoint_ns = w.checkpoint_ns
      AND c.checkpoint_id = w.checkpoint_id)
GROUP BY w.thread_id, w.checkpoint_ns, w.checkpoint_id
"""

# Every stored value of a batch of threads, for the serializer to load.
VALUES: Final = """
SELECT 'blob' AS source, thread_id, checkpoint_ns, channel, version,
       NULL AS checkpoint_id, NULL AS task_id, NULL::integer AS idx, type, blob
FROM {blobs}
WHERE thread_id = ANY(%(threads)s::text[]) AND type IS DISTINCT FROM 'empty'
UNION ALL
SELECT 'write', thread_id, checkpoint_ns, channel, NULL, checkpoint_id, task_id, idx, type, blob
FROM {writes}
WHERE thread_id = ANY(%(threads)s::text[])
"""


def threads_query(schema: str, *, first: bool) -> sql.Composed:
    """:data:`THREADS` for ``schema``: from the start, or after ``%(after)s``."""
    start = sql.SQL("TRUE" if first else "thread_id > %(after)s")
    scans = sql.SQL(",").join(
        sql.SQL(_SKIP_SCAN).format(
            name=identifier(name), table=table(schema, relation), start=start
        )
        for name, relation in zip("cbw", DATA_TABLES, strict=True)
    )
    return sql.SQL(THREADS).format(scans=scans)


def structure_query(schema: str) -> sql.Composed:
    """:data:`STRUCTURE` for ``schema``'s tables."""
    return sql.SQL(STRUCTURE).format(
        checkpoints=table(schema, "checkpoints"),
        blobs=table(schema, "checkpoint_blobs"),
        writes=table(schema, "checkpoint_writes"),
    )


def values_query(schema: str) -> sql.Composed:
    """:data:`VALUES` for ``schema``'s tables."""
    return sql.SQL(VALUES).format(
        blobs=table(schema, "checkpoint_blobs"), writes=table(schema, "checkpoint_writes")
    )


# One row per (%(tables)s, %(columns)s) pair: whether its table and the column exist
# (format('%I.%I') quotes the names server-side, so to_regclass never parses the schema
# as SQL), and on every row whether the migrations table does.
COLUMNS_EXIST: Final = """
SELECT r.tbl, r.col,
       to_regclass(format('%%I.%%I', %(schema)s::text, r.tbl)) IS NOT NULL AS table_exists,
       EXISTS (
           SELECT 1 FROM pg_attribute a
           WHERE a.attrelid = to_regclass(format('%%I.%%I', %(schema)s::text, r.tbl))
             AND a.attname = r.col AND a.attnum > 0 AND NOT a.attisdropped
       ) AS column_exists,
       to_regclass(format('%%I.%%I', %(schema)s::text, 'checkpoint_migrations')) IS NOT NULL
           AS migrations_exist
FROM unnest(%(tables)s::text[], %(columns)s::text[]) AS r(tbl, col)
"""

# LangGraph's reading statements name checkpoint_writes.task_path (migration 9) only here.
_TASK_PATH_READS: Final = (
    ("convert_to(cw.task_path, 'UTF8')", "convert_to('', 'UTF8')"),
    ("order by task_path, task_id, idx", "order by task_id, idx"),
)


def without_task_path(query: str) -> str | None:
    """LangGraph's ``query`` reading no ``task_path`` (every write then has the root path, ``''``).

    None when the statement names the column elsewhere: a saver release this
    module does not know, for which the caller reports the schema unsupported.
    """
    for old, new in _TASK_PATH_READS:
        query = query.replace(old, new)
    return None if "task_path" in query else query

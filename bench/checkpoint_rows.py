"""LangGraph's checkpoint tables filled in bulk with checkpoint-shaped rows, in a few statements.

Each table is filled by one ``INSERT ... SELECT generate_series``: a million
checkpoints take about a minute and a half. Checkpoints are in time order (the
heap's head holds the oldest), with UUIDv6 ids of their moments as LangGraph's
``uuid6()`` makes them and each thread's previous checkpoint as parent; jsonb
of about 1.4 kB; blobs of 2 to 4 kB of random bytes (so pglz cannot shrink them
and they live in TOAST), one in ``null_every`` NULL as LangGraph stores an
empty channel; pending writes taken from the checkpoints. ``bench/collectors.py``
fills its schemas with it, and the tables collector's tests (``pythonpath`` in
pytest's settings) theirs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final

from psycopg import AsyncConnection, sql

TABLES: Final = ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations")
# Distinct blob values, copied row by row: each is random bytes, so pglz cannot shrink it.
BLOB_POOL: Final = 1024
# Blob values are 16-byte md5 digests concatenated, 128 to 247 of them.
BLOB_MIN_BYTES: Final = 128 * 16
BLOB_MAX_BYTES: Final = 247 * 16
UUID_EPOCH_TICKS: Final = 0x01B21DD213814000  # 100 ns ticks from 1582-10-15 to 1970-01-01

# The id is the UUIDv6 of the checkpoint's moment, as LangGraph's uuid6(); the parent is the
# thread's previous checkpoint.
FILL_CHECKPOINTS: Final = """
INSERT INTO {schema}.checkpoints
    (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata)
SELECT md5('thread-' || i %% %(threads)s)::uuid::text, '', id, parent_id, NULL,
       jsonb_build_object(
           'v', 4,
           'ts', to_char(to_timestamp(%(base_epoch)s + i * %(step_seconds)s) AT TIME ZONE 'UTC',
                         'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
           'id', id,
           'channel_values', jsonb_build_object(
               'step', i / %(threads)s, 'summary', repeat('lorem ipsum ', 20 + i %% 40)),
           'channel_versions', jsonb_build_object(
               '__start__', lpad(i::text, 32, '0') || '.0.243',
               'messages', lpad((i + 1)::text, 32, '0') || '.0.512',
               'branch:to:agent', lpad((i + 2)::text, 32, '0') || '.0.77'),
           'versions_seen', jsonb_build_object(
               '__input__', '{{}}'::jsonb,
               'agent', jsonb_build_object('messages', lpad(i::text, 32, '0') || '.0.512')),
           'updated_channels', jsonb_build_array('messages'),
           'pending_sends', '[]'::jsonb),
       jsonb_build_object('source', 'loop', 'step', i / %(threads)s, 'parents', '{{}}'::jsonb,
                          'run_id', md5(i::text))
FROM generate_series(0, %(rows)s - 1) AS i,
LATERAL (
    SELECT lpad(to_hex(%(base_ticks)s::bigint + i * %(step_ticks)s::bigint), 15, '0') AS t,
           lpad(to_hex(%(base_ticks)s::bigint + (i - %(threads)s) * %(step_ticks)s::bigint),
                15, '0') AS pt
) AS ticks,
LATERAL (
    SELECT substr(t, 1, 8) || '-' || substr(t, 9, 4) || '-6' || substr(t, 13, 3) || '-8'
           || lpad(to_hex(i %% 4096), 3, '0') || '-' || lpad(to_hex(i), 12, '0') AS id,
           CASE WHEN i >= %(threads)s THEN
               substr(pt, 1, 8) || '-' || substr(pt, 9, 4) || '-6' || substr(pt, 13, 3) || '-8'
               || lpad(to_hex((i - %(threads)s) %% 4096), 3, '0') || '-'
               || lpad(to_hex(i - %(threads)s), 12, '0')
           END AS parent_id
) AS ids
ORDER BY i
"""

# Random, incompressible values of BLOB_MIN_BYTES to BLOB_MAX_BYTES.
CREATE_BLOB_POOL: Final = (
    "CREATE TEMPORARY TABLE bench_blob_pool (k int PRIMARY KEY, blob bytea NOT NULL)"
)
FILL_BLOB_POOL: Final = """
INSERT INTO bench_blob_pool
SELECT k, (SELECT decode(string_agg(md5(random()::text || k || '-' || n), ''), 'hex')
           FROM generate_series(1, 128 + k %% 120) AS n)
FROM generate_series(0, %(pool)s - 1) AS k
"""

# Blob j belongs to checkpoint j * per_blob, hence to its thread. CASE, not AND, keeps
# `j % 0` from being evaluated when no blob is NULL.
FILL_BLOBS: Final = """
INSERT INTO {schema}.checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
SELECT md5('thread-' || (j * %(per_blob)s) %% %(threads)s)::uuid::text, '', 'messages',
       lpad(j::text, 32, '0') || '.0.' || (j %% 997),
       CASE WHEN empty THEN 'empty' ELSE 'msgpack' END,
       CASE WHEN NOT empty THEN (SELECT blob FROM bench_blob_pool WHERE k = j %% %(pool)s) END
FROM generate_series(0, %(rows)s - 1) AS j,
LATERAL (
    SELECT CASE WHEN %(null_every)s = 0 THEN false
                ELSE j %% %(null_every)s = %(null_every)s - 1 END AS empty
) AS e
ORDER BY j
"""

FILL_WRITES: Final = """
INSERT INTO {schema}.checkpoint_writes
    (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob, task_path)
SELECT thread_id, checkpoint_ns, checkpoint_id, md5(checkpoint_id), w, 'messages', 'msgpack',
       convert_to(repeat('w', 100 + length(checkpoint_id) * w), 'UTF8'), ''
FROM {schema}.checkpoints, generate_series(0, %(per_checkpoint)s - 1) AS w
"""


@dataclass(frozen=True, slots=True)
class Shape:
    """How many rows of each kind a fill writes.

    ``blobs`` counts every ``checkpoint_blobs`` row, the NULL ones (one in
    ``null_every``; 0: none) included.
    """

    checkpoints: int
    threads: int
    blobs: int
    null_every: int = 50
    writes_per_checkpoint: int = 1

    @property
    def null_blobs(self) -> int:
        return self.blobs // self.null_every if self.null_every else 0

    @property
    def writes(self) -> int:
        return self.checkpoints * self.writes_per_checkpoint


Step = Callable[[str, float], None]
"""Told each step's name and seconds as the fill goes."""


async def fill(
    conn: AsyncConnection[Any],
    schema: str,
    shape: Shape,
    base: float,
    span: float,
    step: Step | None = None,
) -> None:
    """Fill ``schema``'s LangGraph tables (created, empty) with ``shape``'s rows, then
    ``VACUUM (ANALYZE)`` them.

    Checkpoint 0 is taken at ``base`` (Unix time) and the last ``span`` seconds later.
    Ordinary logged tables, as in production (unlogged ones would skip the WAL but
    also change what the sizes mean); only commits are asynchronous. VACUUM (not
    only ANALYZE) builds the visibility and free-space maps now, so that no later
    autovacuum changes the sizes under whoever reads them.
    """
    await conn.execute("SET synchronous_commit = off")
    await conn.execute("SET maintenance_work_mem = '256MB'")
    per_blob = max(1, shape.checkpoints // shape.blobs) if shape.blobs else 1
    parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        (
            f"{shape.checkpoints} checkpoints",
            lambda: fill_checkpoints(conn, schema, shape.checkpoints, shape.threads, base, span),
        ),
        (
            f"{shape.blobs} blobs",
            lambda: fill_blobs(
                conn, schema, shape.blobs, shape.threads, per_blob, shape.null_every
            ),
        ),
        (f"{shape.writes} writes", lambda: fill_writes(conn, schema, shape.writes_per_checkpoint)),
        ("VACUUM (ANALYZE)", lambda: vacuum_analyze(conn, schema)),
    ]
    for name, part in parts:
        started = perf_counter()
        await part()
        if step is not None:
            step(name, perf_counter() - started)


async def fill_checkpoints(
    conn: AsyncConnection[Any], schema: str, rows: int, threads: int, base: float, span: float
) -> None:
    """``rows`` checkpoints over ``threads`` threads, from ``base`` to ``base + span``."""
    step_seconds = span / rows if rows else 0.0
    params = {
        "rows": rows,
        "threads": threads,
        "base_epoch": base,
        "step_seconds": step_seconds,
        "base_ticks": int(base * 10_000_000) + UUID_EPOCH_TICKS,
        "step_ticks": max(1, int(step_seconds * 10_000_000)),
    }
    await conn.execute(_in(FILL_CHECKPOINTS, schema), params)


async def fill_blobs(
    conn: AsyncConnection[Any],
    schema: str,
    rows: int,
    threads: int,
    per_blob: int = 1,
    null_every: int = 50,
) -> None:
    """``rows`` blobs over ``threads`` threads, one in ``null_every`` NULL (0: none)."""
    await conn.execute("DROP TABLE IF EXISTS pg_temp.bench_blob_pool")
    await conn.execute(CREATE_BLOB_POOL)
    await conn.execute(FILL_BLOB_POOL, {"pool": BLOB_POOL})
    params = {
        "rows": rows,
        "threads": threads,
        "per_blob": per_blob,
        "null_every": null_every,
        "pool": BLOB_POOL,
    }
    await conn.execute(_in(FILL_BLOBS, schema), params)


async def fill_writes(conn: AsyncConnection[Any], schema: str, per_checkpoint: int = 1) -> None:
    """``per_checkpoint`` pending writes for every checkpoint ``schema`` holds."""
    await conn.execute(_in(FILL_WRITES, schema), {"per_checkpoint": per_checkpoint})


async def vacuum_analyze(conn: AsyncConnection[Any], schema: str) -> None:
    for table in TABLES:
        await conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, table)))


def _in(template: str, schema: str) -> sql.Composed:
    return sql.SQL(template).format(schema=sql.Identifier(schema))

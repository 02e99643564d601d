"""The statements a tracker's flush runs, the one call that runs them, and its failures.

Plain writes of what the fold decided (:mod:`exporter.workflows.fold`), except where only
the stored row can decide: the status, weighed by the fold's own rule (``STATUS_SQL``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection, sql
from psycopg_pool import PoolTimeout

from exporter.workflows.fold import STATUS_SQL, Update
from exporter.workflows.schema import TABLE

# One statement per flush, writing what the fold decided. Existing rows are updated under
# their row lock; the rest are inserted, and a thread another process inserted meanwhile is
# updated just the same (looking its batch row up in `d`: a race, so rare). Either way the
# status is fold.STATUS_SQL, the fold's own rule weighed against the stored row
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
_COLUMNS: Final = (
    "thread_id", "status", "status_id", "strict", "fallback", "last_id", "checkpoints",
    "first_at", "last_at", "error_class",
)  # fmt: skip


def columns(updates: Mapping[str, Update]) -> dict[str, list[Any]]:
    """The ``UPSERT`` parameters for every thread with something to write.

    Sorted by thread, so that two processes updating the same rows lock them
    in the same order and cannot deadlock.
    """
    out: dict[str, list[Any]] = {key: [] for key in _COLUMNS}
    for thread_id, update in sorted(updates.items()):
        if update.touched:
            out["thread_id"].append(thread_id)
            for key in _COLUMNS[1:]:
                out[key].append(getattr(update, key))
    return out


@dataclass(frozen=True, slots=True)
class Statements:
    """The write's statements, bound to one schema."""

    upsert: sql.Composed
    delete: sql.Composed
    recount: sql.Composed

    @classmethod
    def of(cls, schema: str) -> Statements:
        table = sql.Identifier(schema, TABLE)
        checkpoints = sql.Identifier(schema, "checkpoints")
        return cls(
            sql.SQL(UPSERT).format(table=table, status=sql.SQL(STATUS_SQL)),
            sql.SQL(DELETE_THREADS).format(table=table),
            sql.SQL(RECOUNT).format(table=table, checkpoints=checkpoints),
        )


async def write(
    conn: AsyncConnection[Any], statements: Statements, updates: Mapping[str, Update]
) -> int:
    """Write ``updates`` in one statement, in a transaction with the deletions and recounts
    that threads deleted or pruned need; return the rows upserted."""
    params = columns(updates)
    deleted = [thread_id for thread_id, update in updates.items() if update.deleted]
    recount = [thread_id for thread_id, update in updates.items() if update.recount]
    if not (deleted or recount):
        await conn.execute(statements.upsert, params)
        return len(params["thread_id"])
    async with conn.transaction():
        if deleted:
            await conn.execute(statements.delete, {"thread_id": deleted})
        if params["thread_id"]:
            await conn.execute(statements.upsert, params)
        if recount:
            await conn.execute(statements.recount, {"thread_id": recount})
    return len(params["thread_id"])


def error_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed write."""
    if isinstance(exc, TimeoutError | psycopg.errors.QueryCanceled):
        return "timeout"
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return "missing_table"
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return "rejected"
    if isinstance(exc, psycopg.InterfaceError | PoolTimeout | OSError):
        return "connection"
    # No SQLSTATE: the client lost or never had the server; 08: connection; 57P: shutdown.
    if isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))
    ):
        return "connection"
    return "other"

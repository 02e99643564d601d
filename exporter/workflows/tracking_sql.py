"""A tracker's flush: the statements it runs, bound to a schema, the one call that runs them,
and its failures.

Plain writes of what the fold decided (:mod:`exporter.workflows.fold`), except where only
the stored row can decide: the status, weighed by the fold's own rule
(:data:`exporter.sql.workflow_metadata.STATUS_SQL`). The statements' text is in
:mod:`exporter.sql.workflow_metadata`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg_pool import PoolTimeout

from exporter.sql import workflow_metadata
from exporter.sql.workflow_metadata import UPSERT_COLUMNS
from exporter.workflows.fold import Update


def columns(updates: Mapping[str, Update]) -> dict[str, list[Any]]:
    """The ``UPSERT`` parameters for every thread with something to write.

    Sorted by thread, so that two processes updating the same rows lock them
    in the same order and cannot deadlock.
    """
    out: dict[str, list[Any]] = {key: [] for key in UPSERT_COLUMNS}
    for thread_id, update in sorted(updates.items()):
        if update.touched:
            out["thread_id"].append(thread_id)
            for key in UPSERT_COLUMNS[1:]:
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
        return cls(
            workflow_metadata.upsert(schema),
            workflow_metadata.delete_threads(schema),
            workflow_metadata.recount(schema),
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

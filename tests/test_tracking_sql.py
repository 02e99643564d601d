"""The tracker's write on a real PostgreSQL stores the row the fold's own rule gives.

Each case is a stored row (or none) and one batch of events; once the fold's update is
written, the row equals :func:`tests.test_tracker_fold.stored`, the rule in Python. A row is
met two ways: already there, and inserted by another process while the write was under way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import AsyncConnection

from exporter.workflows.events import Event, FailedWrite
from exporter.workflows.fold import Fold, Update
from exporter.workflows.schema import COMPLETED, FAILED, migrate
from exporter.workflows.tracking_sql import Statements, write
from tests.test_tracker_fold import (
    STORED,
    Row,
    T,
    interrupt,
    mark,
    put,
    raised,
    resume,
    stored,
)
from tests.waiting import eventually

SCHEMA = "public"

# (what is stored, what one batch says), each on a thread of its own.
CASES: dict[str, tuple[Row | None, list[Event]]] = {
    "late save of the stored checkpoint": (STORED, [put("5")]),
    "newer save": (STORED, [put("6")]),
    "older save": (STORED, [put("4")]),
    "write about the stored checkpoint": (STORED, [raised("5", "ValueError")]),
    "write about an older checkpoint": (STORED, [interrupt("4")]),
    "resume": (STORED, [resume("5")]),
    "mark": (STORED, [mark(FAILED, "Abandoned")]),
    "mark, then a reading the row refuses": (STORED, [mark(COMPLETED), put("4")]),
    "mark, then a newer checkpoint": (STORED, [mark(COMPLETED), put("6")]),
    "failed save": (STORED, [FailedWrite(T, 0.0, "DiskFull")]),
    "reading over a marked row": (Row(COMPLETED, None, 0, None), [put("1")]),
    "save of a new thread": (None, [put("1")]),
    "failure of a new thread": (None, [FailedWrite(T, 0.0, "DiskFull")]),
    "mark of a new thread": (None, [mark(COMPLETED)]),
}


def updates() -> dict[str, Update]:
    """Each case's update, under the case's name as its thread."""
    out = {}
    for thread_id, (_, events) in CASES.items():
        fold = Fold()
        fold.apply(events)
        out[thread_id] = fold.pending[T]
    return out


def expected() -> dict[str, Row | None]:
    """Each case's row as the rule in Python leaves it."""
    made = updates()
    return {thread_id: stored(before, made[thread_id]) for thread_id, (before, _) in CASES.items()}


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[AsyncConnection[Any]]:
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrate(conn, SCHEMA)
        yield conn


async def store_before(conn: AsyncConnection[Any]) -> None:
    """Store each case's row as an earlier flush would have left it."""
    for thread_id, (before, _) in CASES.items():
        if before is not None:
            await conn.execute(
                "INSERT INTO workflow_metadata (thread_id, status, first_activity, last_activity,"
                " last_checkpoint_id, checkpoint_count, last_error_class)"
                " VALUES (%s, %s, now(), now(), %s, %s, %s)",
                (thread_id, before.status, before.last_id, before.checkpoints, before.error_class),
            )


async def rows(conn: AsyncConnection[Any]) -> dict[str, Row | None]:
    cursor = await conn.execute(
        "SELECT thread_id, status, last_checkpoint_id, checkpoint_count, last_error_class"
        " FROM workflow_metadata"
    )
    found: dict[str, Row | None] = dict.fromkeys(CASES)
    for thread_id, *columns in await cursor.fetchall():
        found[thread_id] = Row(*columns)
    return found


async def assert_counts_exact(conn: AsyncConnection[Any]) -> None:
    """The per-status counts the triggers keep equal the rows."""
    cursor = await conn.execute(
        "SELECT s.status, s.threads, (SELECT count(*) FROM workflow_metadata AS w"
        " WHERE w.status = s.status) FROM workflow_status_counts AS s"
    )
    for status, kept, counted in await cursor.fetchall():
        assert kept == counted, status


async def test_a_stored_row_takes_the_status_the_rule_gives(conn: AsyncConnection[Any]) -> None:
    """Over rows already stored (and none), the write leaves exactly what the rule gives."""
    await store_before(conn)
    assert await write(conn, Statements.of(SCHEMA), updates()) == len(CASES)
    assert await rows(conn) == expected()
    await assert_counts_exact(conn)


async def test_a_row_another_process_inserted_meanwhile_gets_the_same(
    conn: AsyncConnection[Any], dsn: str
) -> None:
    """A row committed by another process while the write waited on it is merged by the
    same rule as one stored before, not overwritten."""
    async with await AsyncConnection.connect(dsn) as other, other.transaction():
        await store_before(other)
        writing = asyncio.create_task(write(conn, Statements.of(SCHEMA), updates()))

        async def blocked() -> bool:
            async with await AsyncConnection.connect(dsn, autocommit=True) as watcher:
                cursor = await watcher.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                    (conn.info.backend_pid,),
                )
                found = await cursor.fetchone()
                return found is not None and bool(found[0])

        await eventually(blocked, what="the write to wait on the other process's rows")
    assert await writing == len(CASES)
    assert await rows(conn) == expected()
    await assert_counts_exact(conn)

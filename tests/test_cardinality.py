"""The series set is bounded: 100 thousand threads leave it exactly where 10 threads leave it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from psycopg import sql

from exporter import InstrumentedSaver, Sidecar, build_checkpointer, instrument
from exporter.settings import Settings
from exporter.workflows.schema import STATUSES
from tests.exposition import integrity_step
from tests.samples import Samples, value

THREADS = 100_000
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@dataclass(frozen=True)
class Scrape:
    """One OpenMetrics scrape: each series (name and labels) with its value, and exemplars."""

    values: Samples
    exemplar_threads: set[str]

    @property
    def series(self) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return set(self.values)


async def scrape(http: aiohttp.ClientSession, sidecar: Sidecar) -> Scrape:
    async with http.get(sidecar.url + "/metrics", headers=OPENMETRICS) as response:
        assert response.status == 200
        text = await response.text()
    # The OpenMetrics parser is untyped; it is the one that keeps exemplars apart from labels.
    families = text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
    samples = [s for f in families for s in f.samples]
    return Scrape(
        {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples},
        {s.exemplar.labels["thread_id"] for s in samples if s.exemplar is not None},
    )


async def work(saver: InstrumentedSaver, threads: Iterable[str]) -> None:
    """Per thread, what a graph step does: save a checkpoint, save writes, load it back."""
    for thread in threads:
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"n": 1}
        checkpoint["channel_versions"] = {"n": "1"}
        stored = await saver.aput(
            {"configurable": {"thread_id": thread, "checkpoint_ns": ""}},
            checkpoint,
            {"source": "loop", "step": 0},
            {"n": "1"},
        )
        await saver.aput_writes(stored, [("n", 2)], "task")
        assert await saver.aget_tuple(stored) is not None


async def test_in_memory_threads_add_no_series(
    memory_settings: Settings, http: aiohttp.ClientSession
) -> None:
    """100k threads of real saves, writes and loads on the in-memory saver add not one series."""
    registry = CollectorRegistry()
    saver = instrument(InMemorySaver(), registry)
    async with Sidecar(memory_settings, checkpointer=saver, registry=registry) as sidecar:
        await work(saver, (f"thread-{i}" for i in range(10)))
        few = await scrape(http, sidecar)
        await work(saver, (f"thread-{i}" for i in range(10, THREADS)))
        many = await scrape(http, sidecar)
    assert many.series == few.series
    put = {"operation": "put", "saver": "InMemorySaver"}
    assert value(many.values, "langgraph_checkpointer_operations_total", **put) == THREADS
    # Thread ids do reach the exposition, as exemplars only.
    assert many.exemplar_threads
    assert all(thread.startswith("thread-") for thread in many.exemplar_threads)
    assert len(saver.storage) == THREADS


TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "workflow_metadata")


async def clone_thread(conn: psycopg.AsyncConnection[Any], schema: str, source: str) -> None:
    """Copy every row of thread ``source`` to THREADS new threads, in every table."""
    for table in TABLES:
        cursor = await conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, table),
        )
        columns = [str(row[0]) for row in await cursor.fetchall()]
        values = [
            sql.SQL("'bulk-' || g") if column == "thread_id" else sql.Identifier(column)
            for column in columns
        ]
        await conn.execute(
            sql.SQL(
                "INSERT INTO {table} ({columns}) SELECT {values}"
                " FROM {table}, generate_series(1, %s) AS g WHERE thread_id = %s"
            ).format(
                table=sql.Identifier(schema, table),
                columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
                values=sql.SQL(", ").join(values),
            ),
            (THREADS, source),
        )


async def vacuum(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    # Vacuum and analyze ages are series that appear once a table was vacuumed: a matter of
    # time, not of threads. Vacuuming by hand before each scrape, with autovacuum off, keeps
    # them the same in both.
    for table in TABLES:
        await conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(schema, table)))


async def test_postgres_threads_add_no_series(
    settings: Settings, dsn: str, http: aiohttp.ClientSession
) -> None:
    """100k threads in PostgreSQL (bulk-inserted, tracked) plus 2000 live ones: same series."""
    settings = dataclasses.replace(settings, tracking_flush_interval=0.05)
    schema = settings.postgres_schema
    registry = CollectorRegistry()
    async with (
        build_checkpointer(settings, registry=registry) as saver,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
    ):
        for table in TABLES:
            await conn.execute(
                sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(
                    sql.Identifier(schema, table)
                )
            )
        assert saver.tracker is not None
        async with Sidecar(settings, checkpointer=saver, registry=registry) as sidecar:
            # A first recovery check and canary probe add their series once and for all.
            assert sidecar.canary is not None
            assert await sidecar.canary.probe() == "success"
            assert await sidecar.check_recovery() is not None
            await work(saver, (f"thread-{i}" for i in range(10)))
            assert await saver.tracker.flush()
            await vacuum(conn, schema)
            await scrape(http, sidecar)  # starts the first integrity step, a whole pass here
            await integrity_step(sidecar)
            few = await scrape(http, sidecar)

            await clone_thread(conn, schema, "thread-0")
            await asyncio.gather(
                *(work(saver, [f"live-{i}-{j}" for j in range(100)]) for i in range(20))
            )
            assert await saver.tracker.flush()
            await vacuum(conn, schema)
            many = await scrape(http, sidecar)
            cursor = await conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(schema, "workflow_metadata")
                )
            )
            tracked = await cursor.fetchone()
    assert tracked is not None
    assert tracked[0] == 10 + THREADS + 2000
    assert many.series == few.series
    by_status = "langgraph_checkpointer_workflows_threads"
    assert sum(value(many.values, by_status, status=status) for status in STATUSES) == tracked[0]
    assert value(many.values, "langgraph_checkpointer_tables_estimated_threads") > THREADS / 2
    put = {"operation": "put", "saver": "AsyncPostgresSaver"}
    assert value(many.values, "langgraph_checkpointer_operations_total", **put) == 2010

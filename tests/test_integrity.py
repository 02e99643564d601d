"""Integrity checks: real graphs' checkpoints, damaged with SQL, found by bounded passes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

import aiohttp
import psycopg
import pytest
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from prometheus_client import CollectorRegistry
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from structlog.testing import capture_logs

from exporter import Sidecar, build_checkpointer
from exporter.checkpointer.serde import STRUCTURAL_SERDE
from exporter.collectors.base import ScrapeContext
from exporter.collectors.integrity import PREFIX, IntegrityCollector
from exporter.database import exporter_pool
from exporter.settings import Settings
from exporter.workflows.integrity import (
    CHECKS,
    MISSING_BLOBS,
    ORPHAN_WRITES,
    UNDECODABLE_BLOBS,
    UNREFERENCED_BLOBS,
    MissingTablesError,
    PassReport,
    Scanner,
    Step,
    confirmed,
    full_pass,
    structure_findings,
)
from tests.graphs import config, review_graph
from tests.samples import Samples, parse_metrics, samples_of, scrape_context, value

# Thread ids sort in this order; "again" ran twice, so its first run's last
# `log` blob is referenced by that run's last checkpoint and the next input's.
THREADS = ("again", "broken", "done", "waiting")
CLEAN = dict.fromkeys(CHECKS, 0)

# Blob versions of one thread and how many of its checkpoints reference each.
REFERENCES = """
SELECT b.channel, b.version, count(c.checkpoint_id) AS refs
FROM {schema}.checkpoint_blobs AS b
LEFT JOIN {schema}.checkpoints AS c
    ON c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns
   AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version
WHERE b.thread_id = %s
GROUP BY b.channel, b.version
ORDER BY refs DESC, b.channel, b.version
"""


async def run_graphs(saver: Any) -> None:
    graph = review_graph(saver)
    await graph.ainvoke({"n": 1}, config("done"))
    await graph.ainvoke({"n": 1}, config("again"))
    await graph.ainvoke({"n": 2}, config("again"))
    await graph.ainvoke({"n": 1, "ask": True}, config("waiting"))
    with pytest.raises(ValueError, match="negative input"):
        await graph.ainvoke({"n": -1}, config("broken"))


@pytest.fixture
async def store(settings: Settings) -> Settings:
    """The schema holding what four real runs saved: completed twice, once, interrupted, failed."""
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        await run_graphs(saver)
    return settings


@asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[AsyncConnection[DictRow]]:
    conn = await AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)
    async with conn:
        yield conn


def execute(dsn: str, settings: Settings, statement: str, *params: Any) -> list[dict[str, Any]]:
    """Run ``statement`` with ``{schema}`` filled in; its rows, if it returns any."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement.format(schema=settings.postgres_schema), params)
        return cursor.fetchall() if cursor.description else []


async def check(dsn: str, settings: Settings, batch: int = 200) -> PassReport:
    """A whole pass that counts orphan writes at once: the store is still, nothing in flight."""
    async with connect(dsn) as conn:
        return await full_pass(conn, settings.postgres_schema, batch=batch, orphan_grace=0)


def threads_of(report: PassReport, check_name: str) -> list[str]:
    return sorted(f.thread_id for f in report.findings if f.check == check_name)


async def test_a_clean_store_has_no_problem(store: Settings, dsn: str) -> None:
    """What LangGraph saved for completed, re-run, interrupted and failed runs is intact."""
    report = await check(dsn, store)
    assert report.counts == CLEAN
    assert report.findings == ()
    assert report.threads == len(THREADS)


async def test_a_deleted_blob_counts_once_however_many_checkpoints_reference_it(
    store: Settings, dsn: str
) -> None:
    """missing_blobs moves by exactly 1 for a deleted blob that several checkpoints reference."""
    refs = execute(dsn, store, REFERENCES, "again")[0]
    assert refs["refs"] >= 2
    execute(
        dsn,
        store,
        "DELETE FROM {schema}.checkpoint_blobs "
        "WHERE thread_id = %s AND channel = %s AND version = %s",
        "again",
        refs["channel"],
        refs["version"],
    )
    report = await check(dsn, store)
    assert report.counts == {**CLEAN, MISSING_BLOBS: 1}
    (finding,) = report.findings
    assert (finding.thread_id, finding.checkpoint_ns) == ("again", "")
    assert refs["version"] in finding.detail
    assert f"{refs['refs']} checkpoint(s)" in finding.detail


def insert_write(dsn: str, store: Settings, checkpoint_id: str) -> None:
    """One pending write of thread ``done`` for ``checkpoint_id``, stored as LangGraph would."""
    kind, blob = JsonPlusSerializer().dumps_typed({"late": True})
    execute(
        dsn,
        store,
        "INSERT INTO {schema}.checkpoint_writes "
        "(thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob) "
        "VALUES ('done', '', %s, 'task', 0, 'n', %s, %s)",
        checkpoint_id,
        kind,
        blob,
    )


async def test_an_orphan_write_is_found(store: Settings, dsn: str) -> None:
    """One write for a checkpoint that does not exist moves orphan_writes by exactly 1."""
    missing = str(uuid.uuid4())
    insert_write(dsn, store, missing)
    report = await check(dsn, store)
    assert report.counts == {**CLEAN, ORPHAN_WRITES: 1}
    (finding,) = report.findings
    assert finding.thread_id == "done"
    assert missing in finding.detail


async def test_writes_of_a_young_checkpoint_wait_out_the_grace(store: Settings, dsn: str) -> None:
    """Writes whose checkpoint id is newer than the grace may precede their checkpoint: they
    do not count yet; the same writes for an id older than the grace do."""
    young = str(uuid6())
    old = "1ef4e5a0-1c2b-6d3e-8f00-0123456789ab"  # a UUIDv6 id of July 2024
    for checkpoint_id in (young, old):
        insert_write(dsn, store, checkpoint_id)
    async with connect(dsn) as conn:
        report = await full_pass(conn, store.postgres_schema, orphan_grace=60)
    assert report.counts == {**CLEAN, ORPHAN_WRITES: 1}
    (finding,) = report.findings
    assert old in finding.detail
    assert (await check(dsn, store)).counts == {**CLEAN, ORPHAN_WRITES: 2}


async def test_a_thread_pruned_of_its_checkpoints_leaves_its_blobs_and_writes(
    store: Settings, dsn: str
) -> None:
    """Deleting a thread's checkpoints only: every blob unreferenced, every write orphaned."""
    blobs = execute(
        dsn, store, "SELECT count(*) FROM {schema}.checkpoint_blobs WHERE thread_id = 'again'"
    )[0]["count"]
    writes = execute(
        dsn, store, "SELECT count(*) FROM {schema}.checkpoint_writes WHERE thread_id = 'again'"
    )[0]["count"]
    assert blobs > 0
    assert writes > 0
    execute(dsn, store, "DELETE FROM {schema}.checkpoints WHERE thread_id = 'again'")
    report = await check(dsn, store)
    assert report.counts == {**CLEAN, UNREFERENCED_BLOBS: blobs, ORPHAN_WRITES: writes}
    assert report.threads == len(THREADS)  # still examined: it has blobs and writes
    assert {f.thread_id for f in report.findings} == {"again"}
    assert sum(f.count for f in report.findings if f.check == ORPHAN_WRITES) == writes


async def test_corrupted_bytes_are_undecodable(store: Settings, dsn: str) -> None:
    """One corrupted blob and one corrupted write each count once, naming their thread."""
    blob = execute(
        dsn,
        store,
        "UPDATE {schema}.checkpoint_blobs SET blob = '\\xc1'::bytea WHERE ctid = "
        "(SELECT ctid FROM {schema}.checkpoint_blobs WHERE thread_id = 'waiting' "
        "AND type = 'msgpack' LIMIT 1) RETURNING channel",
    )
    assert len(blob) == 1
    report = await check(dsn, store)
    assert report.counts == {**CLEAN, UNDECODABLE_BLOBS: 1}
    (finding,) = report.findings
    assert finding.thread_id == "waiting"
    assert repr(blob[0]["channel"]) in finding.detail
    execute(
        dsn,
        store,
        "UPDATE {schema}.checkpoint_writes SET blob = '\\x91'::bytea WHERE ctid = "
        "(SELECT ctid FROM {schema}.checkpoint_writes WHERE thread_id = 'done' "
        "AND type = 'msgpack' LIMIT 1)",
    )
    report = await check(dsn, store)
    assert report.counts == {**CLEAN, UNDECODABLE_BLOBS: 2}
    assert threads_of(report, UNDECODABLE_BLOBS) == ["done", "waiting"]


async def test_a_pass_with_batch_one_takes_a_step_per_thread(store: Settings, dsn: str) -> None:
    """Batch 1: one thread per step, the pass ends with the last, then starts over."""
    execute(
        dsn,
        store,
        "INSERT INTO {schema}.checkpoint_writes "
        "(thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob) "
        "VALUES ('writes-only', '', 'gone', 'task', 0, 'n', 'null', '')",
    )
    expected = sorted([*THREADS, "writes-only"])
    scanner = Scanner(store.postgres_schema, batch=1)
    steps: list[Step] = []
    async with connect(dsn) as conn:
        while not steps or steps[-1].completed is None:
            steps.append(await scanner.step(conn))
        assert len(steps) == len(expected)
        assert [step.threads for step in steps] == [1] * len(expected)
        assert [step.completed is not None for step in steps] == [False] * (len(expected) - 1) + [
            True
        ]
        assert [f.thread_id for step in steps for f in step.findings] == ["writes-only"]
        report = steps[-1].completed
        assert report is not None
        assert report.threads == len(expected)
        assert report.counts == {**CLEAN, ORPHAN_WRITES: 1}
        assert scanner.passes == 1
        assert scanner.threads == 0
        again = await scanner.step(conn)
        assert again.threads == 1
        assert again.completed is None
        assert scanner.threads == 1


async def test_full_pass_lists_findings_of_several_threads_through_a_pool(
    store: Settings, dsn: str
) -> None:
    """full_pass over a pool, in small batches, returns each thread's finding and the counts."""
    execute(
        dsn,
        store,
        "DELETE FROM {schema}.checkpoint_blobs WHERE thread_id = 'done' AND channel = 'log'",
    )
    execute(dsn, store, "DELETE FROM {schema}.checkpoints WHERE thread_id = 'broken'")
    pool = exporter_pool(dsn, store)
    await pool.open(wait=True)
    try:
        started = perf_counter()
        report = await full_pass(pool, store.postgres_schema, batch=2)
        elapsed = perf_counter() - started
    finally:
        await pool.close()
    assert report.threads == len(THREADS)
    assert set(threads_of(report, MISSING_BLOBS)) == {"done"}
    assert set(threads_of(report, UNREFERENCED_BLOBS)) == {"broken"}
    assert report.counts[MISSING_BLOBS] == len(threads_of(report, MISSING_BLOBS)) > 0
    assert 0 < report.seconds <= elapsed


async def test_a_schema_without_tables_raises(settings: Settings, dsn: str) -> None:
    """Before LangGraph's setup there is nothing to check: full_pass says so."""
    with pytest.raises(MissingTablesError, match=settings.postgres_schema):
        await check(dsn, settings)


async def test_a_step_that_missed_its_deadline_halves_the_next(store: Settings, dsn: str) -> None:
    """A step cancelled while a lock blocks it changes nothing; the next takes half the batch."""
    scanner = Scanner(store.postgres_schema, batch=4, budget=60.0)
    with psycopg.connect(dsn) as locker:
        locker.execute(f"LOCK TABLE {store.postgres_schema}.checkpoints IN ACCESS EXCLUSIVE MODE")
        async with connect(dsn) as conn:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await scanner.step(conn)
        locker.rollback()
    assert scanner.threads == 0
    async with connect(dsn) as conn:
        step = await scanner.step(conn)
    assert step.threads == 2
    assert scanner.threads == 2


def test_only_findings_seen_twice_are_confirmed() -> None:
    """Pure: a row the second read no longer returns (a save that landed) is dropped."""
    first = [
        {**row, "rows": 1}
        for row in (
            {"kind": UNREFERENCED_BLOBS, "thread_id": "t", "channel": "a", "version": "1"},
            {"kind": UNREFERENCED_BLOBS, "thread_id": "t", "channel": "b", "version": "1"},
        )
    ]
    for row in first:
        row.update(checkpoint_ns="", checkpoint_id=None)
    second = [first[1]]
    kept = confirmed(first, second)
    assert kept == [first[1]]
    (finding,) = structure_findings(kept)
    assert (finding.check, finding.count) == (UNREFERENCED_BLOBS, 1)


def test_the_default_serializer_catches_corruption_inside_an_extension_type() -> None:
    """Pure: a broken extension payload, which JsonPlusSerializer quietly reads as None, fails."""
    kind, data = JsonPlusSerializer().dumps_typed({"id": uuid.uuid4()})
    payload = data.index(b"\x93")  # the extension's (module, name, value) array
    broken = data[:payload] + b"\xc1" + data[payload + 1 :]
    assert JsonPlusSerializer().loads_typed((kind, broken)) == {"id": None}
    assert STRUCTURAL_SERDE.loads_typed((kind, data))["id"][:2] == ["uuid", "UUID"]
    with pytest.raises(ValueError, match="ext_hook"):
        STRUCTURAL_SERDE.loads_typed((kind, broken))


def problems(samples: Samples, name: str = "problems") -> dict[str, float]:
    return {check: value(samples, PREFIX + name, check=check) for check in CHECKS}


async def after_step(collector: IntegrityCollector, ctx: ScrapeContext) -> Samples:
    """A scrape once the step the previous scrape started has ended (it starts the next)."""
    await collector.wait()
    return samples_of(await collector.collect(ctx))


async def test_a_scrape_never_waits_for_a_step(store: Settings, dsn: str) -> None:
    """The step runs in the background: a scrape while one runs starts no other, and a step
    that failed (here: blocked past its deadline) fails the next scrape's collector, once."""
    settings = store.replace(collector_timeout=0.5, integrity_interval=0)
    collector = IntegrityCollector()
    async with scrape_context(dsn, settings) as ctx:
        try:
            blobs = f"{store.postgres_schema}.checkpoint_blobs"
            locker = await psycopg.AsyncConnection.connect(dsn)
            async with locker, locker.transaction():
                await locker.execute(f"LOCK TABLE {blobs} IN ACCESS EXCLUSIVE MODE")
                await collector.collect(ctx)
                running = collector.running
                assert running is not None
                assert not running.done()
                await collector.collect(ctx)
                assert collector.running is running
                await collector.wait()
            # lock_timeout sits inside the step's deadline: the lock wait fails first, always.
            with pytest.raises(psycopg.errors.LockNotAvailable):
                await collector.collect(ctx)
            await collector.collect(ctx)
            samples = await after_step(collector, ctx)
        finally:
            await collector.close()
    assert value(samples, PREFIX + "passes_completed_total") == 1


async def test_steps_start_at_most_once_per_interval(store: Settings, dsn: str) -> None:
    """However often it is scraped, the collector starts no step before the interval is over."""
    settings = store.replace(integrity_batch=1, integrity_interval=3600)
    collector = IntegrityCollector()
    async with scrape_context(dsn, settings) as ctx:
        try:
            await collector.collect(ctx)
            for _ in range(3):
                samples = await after_step(collector, ctx)
                assert collector.running is None
        finally:
            await collector.close()
    assert value(samples, PREFIX + "pass_threads") == 1  # one step in all


async def test_the_collector_publishes_a_pass_once_every_thread_was_examined(
    store: Settings, dsn: str
) -> None:
    """Batch 1: counts grow step by step, and appear as `problems` only when the pass ends."""
    execute(dsn, store, "DELETE FROM {schema}.checkpoints WHERE thread_id = 'again'")
    settings = store.replace(integrity_batch=1, integrity_interval=0)
    collector = IntegrityCollector()
    with capture_logs() as logs:
        async with scrape_context(dsn, settings) as ctx:
            try:
                await collector.collect(ctx)  # starts the first step
                first = await after_step(collector, ctx)
                for _ in THREADS[1:-1]:
                    await after_step(collector, ctx)
                last = await after_step(collector, ctx)
            finally:
                await collector.close()
    assert (PREFIX + "problems", (("check", MISSING_BLOBS),)) not in first
    assert value(first, PREFIX + "pass_threads") == 1
    assert problems(first, "pass_problems")[UNREFERENCED_BLOBS] > 0  # "again" sorts first
    assert value(first, PREFIX + "passes_completed_total") == 0
    found = problems(first, "pass_problems")
    assert problems(last) == found
    assert value(last, PREFIX + "last_pass_threads") == len(THREADS)
    assert value(last, PREFIX + "passes_completed_total") == 1
    assert value(last, PREFIX + "pass_threads") == 0
    assert value(last, PREFIX + "last_pass_timestamp_seconds") > 0
    assert value(last, PREFIX + "batch_threads") == 1
    logged = [e for e in logs if e["event"] == "integrity_problem"]
    assert {e["thread_id"] for e in logged} == {"again"}
    assert sum(e["count"] for e in logged) == sum(found.values())
    assert [e["event"] for e in logs].count("integrity_pass_completed") == 1


async def test_the_collector_waits_for_the_tables_without_failing(
    settings: Settings, dsn: str
) -> None:
    """Without LangGraph's tables the collector reports an empty pass state and logs it once."""
    collector = IntegrityCollector()
    with capture_logs() as logs:
        async with scrape_context(dsn, settings) as ctx:
            try:
                samples = samples_of(await collector.collect(ctx))
                await after_step(collector, ctx)
                await collector.wait()
            finally:
                await collector.close()
    assert value(samples, PREFIX + "passes_completed_total") == 0
    assert problems(samples, "pass_problems") == CLEAN
    assert [e["event"] for e in logs] == ["integrity_tables_missing"]


async def test_no_context_database_yields_nothing(settings: Settings) -> None:
    """Without a configured database the collector produces no families."""
    assert await IntegrityCollector().collect(ScrapeContext(settings)) == []


async def test_an_in_process_sidecar_serves_integrity_over_http(settings: Settings) -> None:
    """With the application's saver, scrapes run a whole pass and serve its problems."""
    settings = settings.replace(integrity_orphan_grace=0)
    registry = CollectorRegistry()
    async with build_checkpointer(settings, registry=registry) as saver:
        await run_graphs(saver)
        execute(
            settings.postgres_connection_string or "",
            settings,
            "DELETE FROM {schema}.checkpoints WHERE thread_id = 'broken'",
        )
        collector = IntegrityCollector()
        async with (
            Sidecar(
                settings, checkpointer=saver, registry=registry, collectors=(collector,)
            ) as car,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            for _ in range(2):  # the first scrape starts the step, the second serves it
                await collector.wait()
                async with http.get(car.url + settings.telemetry_path) as response:
                    assert response.status == 200
                    samples = parse_metrics(await response.text())
    assert value(samples, "langgraph_checkpointer_scrape_collector_success", collector="integrity")
    assert value(samples, PREFIX + "passes_completed_total") == 1
    found = problems(samples)
    assert found[UNREFERENCED_BLOBS] > 0
    assert found[ORPHAN_WRITES] > 0
    assert found[MISSING_BLOBS] == found[UNDECODABLE_BLOBS] == 0

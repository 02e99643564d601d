"""The workflows collector: statuses, stuck and prune-worthy workflows, from workflow_metadata."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from langgraph.types import Command
from psycopg import sql
from psycopg.rows import dict_row
from structlog.testing import capture_logs

from exporter import build_checkpointer
from exporter.collectors.base import ScrapeContext
from exporter.collectors.workflows import (
    NO_WORKFLOW_METADATA,
    PREFIX,
    WorkflowsCollector,
    summary_query,
    workflows_families,
)
from exporter.factory import prepare_schema
from exporter.settings import Settings
from exporter.workflows.schema import (
    CANARY_THREAD_ID,
    CANCELLED,
    COMPLETED,
    COUNTS_TABLE,
    FAILED,
    INTERRUPTED,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    RUNNING,
    STATUSES,
    TABLE,
    migration,
)
from tests.graphs import config, review_graph
from tests.samples import Samples, samples_of, scrape_context, value
from tests.serving import scrape_once
from tests.test_collector_tables import explained

STUCK_AFTER = 60.0
PRUNE_THRESHOLD = 10

# All a schema without workflow_metadata exports.
UNAVAILABLE: Samples = {
    (PREFIX + "table_exists", ()): 0.0,
    (PREFIX + "available", ()): 0.0,
    (PREFIX + "unavailable", (("reason", NO_WORKFLOW_METADATA),)): 1.0,
}

INSERT = """
INSERT INTO {schema}.workflow_metadata
    (thread_id, status, first_activity, last_activity, checkpoint_count)
VALUES (%s, %s, now() - make_interval(secs => %s), now() - make_interval(secs => %s), %s)
"""


@pytest.fixture
async def tracked(settings: Settings, dsn: str) -> Settings:
    """Settings with short thresholds, on a schema prepared as the application prepares it."""
    settings = settings.replace(stuck_after=STUCK_AFTER, prune_threshold=PRUNE_THRESHOLD)
    await prepare_schema(dsn, settings)
    return settings


def insert(
    dsn: str,
    settings: Settings,
    rows: Sequence[tuple[str, str, float, float, int]],
) -> None:
    """Rows (thread_id, status, seconds since first activity, since last, checkpoints)."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(INSERT.format(schema=settings.postgres_schema), rows)


async def collect(dsn: str, settings: Settings, collector: WorkflowsCollector) -> Samples:
    async with scrape_context(dsn, settings) as ctx:
        return samples_of(await collector.collect(ctx))


def statuses(samples: Samples) -> dict[str, float]:
    return {status: value(samples, PREFIX + "threads", status=status) for status in STATUSES}


async def test_no_context_database_yields_nothing(settings: Settings) -> None:
    """Without a configured database the collector produces no families."""
    assert await WorkflowsCollector().collect(ScrapeContext(settings)) == []


async def test_every_status_is_counted_and_absent_ones_are_zero(
    tracked: Settings, dsn: str
) -> None:
    """Each status counts exactly the rows inserted with it; a status without rows shows 0."""
    rows = [
        *[(f"run-{i}", RUNNING, 5, 1, 3) for i in range(3)],
        *[(f"int-{i}", INTERRUPTED, 5, 1, 3) for i in range(2)],
        *[(f"done-{i}", COMPLETED, 5, 1, 3) for i in range(4)],
        ("failed-0", FAILED, 5, 1, 3),
    ]
    insert(dsn, tracked, rows)
    samples = await collect(dsn, tracked, WorkflowsCollector())
    assert value(samples, PREFIX + "table_exists") == 1
    assert statuses(samples) == {
        RUNNING: 3,
        INTERRUPTED: 2,
        COMPLETED: 4,
        FAILED: 1,
        CANCELLED: 0,
    }


async def test_only_running_workflows_idle_past_the_threshold_are_stuck(
    tracked: Settings, dsn: str
) -> None:
    """Stuck = running with a last activity older than stuck_after; other statuses never are."""
    insert(
        dsn,
        tracked,
        [
            ("stuck-1", RUNNING, 3 * STUCK_AFTER, 2 * STUCK_AFTER, 5),
            ("stuck-2", RUNNING, 10 * STUCK_AFTER, 5 * STUCK_AFTER, 5),
            ("busy", RUNNING, 3 * STUCK_AFTER, STUCK_AFTER / 2, 5),
            ("waiting", INTERRUPTED, 9 * STUCK_AFTER, 9 * STUCK_AFTER, 5),
            ("old-done", COMPLETED, 9 * STUCK_AFTER, 9 * STUCK_AFTER, 5),
        ],
    )
    samples = await collect(dsn, tracked, WorkflowsCollector())
    assert value(samples, PREFIX + "stuck_threads") == 2
    assert value(samples, PREFIX + "stuck_threshold_seconds") == STUCK_AFTER


async def test_ages_come_from_the_oldest_start_and_the_longest_idle_running_workflow(
    tracked: Settings, dsn: str
) -> None:
    """Oldest running age follows first_activity, longest idle follows last_activity."""
    insert(
        dsn,
        tracked,
        [
            ("a", RUNNING, 3600, 60, 5),  # started first
            ("b", RUNNING, 1800, 900, 5),  # idle longest
            ("c", COMPLETED, 90_000, 90_000, 5),  # older, but not running
        ],
    )
    samples = await collect(dsn, tracked, WorkflowsCollector())
    oldest = value(samples, PREFIX + "oldest_running_age_seconds")
    idle = value(samples, PREFIX + "longest_running_idle_seconds")
    # The rows were stamped relative to the server's now(), moments before the scrape.
    assert 3600 <= oldest < 3600 + 30
    assert 900 <= idle < 900 + 30


async def test_ages_are_zero_without_running_workflows(tracked: Settings, dsn: str) -> None:
    """No running workflow: both ages are 0, not absent."""
    insert(dsn, tracked, [("done", COMPLETED, 500, 400, 2)])
    samples = await collect(dsn, tracked, WorkflowsCollector())
    assert value(samples, PREFIX + "oldest_running_age_seconds") == 0
    assert value(samples, PREFIX + "longest_running_idle_seconds") == 0
    assert value(samples, PREFIX + "stuck_threads") == 0


async def test_prune_candidates_have_more_checkpoints_than_the_threshold(
    tracked: Settings, dsn: str
) -> None:
    """A thread at the threshold is not a candidate; one above it is, whatever its status."""
    insert(
        dsn,
        tracked,
        [
            ("at", COMPLETED, 5, 1, PRUNE_THRESHOLD),
            ("above", COMPLETED, 5, 1, PRUNE_THRESHOLD + 1),
            ("far-above", RUNNING, 5, 1, 100 * PRUNE_THRESHOLD),
            ("small", FAILED, 5, 1, 1),
        ],
    )
    samples = await collect(dsn, tracked, WorkflowsCollector())
    assert value(samples, PREFIX + "prune_candidate_threads") == 2
    assert value(samples, PREFIX + "prune_threshold_checkpoints") == PRUNE_THRESHOLD


async def test_the_canary_thread_is_never_counted(tracked: Settings, dsn: str) -> None:
    """A running, stuck, huge canary row moves no figure."""
    insert(dsn, tracked, [("real", COMPLETED, 5, 1, 1)])
    collector = WorkflowsCollector()
    before = await collect(dsn, tracked, collector)
    insert(
        dsn,
        tracked,
        [(CANARY_THREAD_ID, RUNNING, 99 * STUCK_AFTER, 9 * STUCK_AFTER, 100 * PRUNE_THRESHOLD)],
    )
    after = await collect(dsn, tracked, collector)
    assert after == before
    assert statuses(after)[RUNNING] == 0


async def test_a_missing_table_reports_only_its_absence_and_logs_once(
    settings: Settings, dsn: str
) -> None:
    """Without workflow_metadata the figures are unavailable with their reason, never zero
    workflows: no ``threads`` series, and one log event over two scrapes."""
    collector = WorkflowsCollector()
    with capture_logs() as logs:
        first = await collect(dsn, settings, collector)
        second = await collect(dsn, settings, collector)
    assert first == second == UNAVAILABLE
    events = [e for e in logs if e["event"] == "workflow_table_missing"]
    assert len(events) == 1
    assert events[0]["schema"] == settings.postgres_schema


async def test_a_table_dropped_after_being_seen_is_reported_missing(
    tracked: Settings, dsn: str
) -> None:
    """Dropping the table between scrapes does not fail the scrape; recreating it is seen again."""
    collector = WorkflowsCollector()
    insert(dsn, tracked, [("x", RUNNING, 5, 1, 1)])
    assert value(await collect(dsn, tracked, collector), PREFIX + "table_exists") == 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {tracked.postgres_schema}.{TABLE}")
        conn.execute(f"DROP TABLE {tracked.postgres_schema}.workflow_metadata_migrations")
    with capture_logs() as logs:
        gone = await collect(dsn, tracked, collector)
    assert gone == UNAVAILABLE
    assert [e["event"] for e in logs] == ["workflow_table_missing"]
    await prepare_schema(dsn, tracked)
    back = await collect(dsn, tracked, collector)
    assert value(back, PREFIX + "table_exists") == 1
    assert statuses(back)[RUNNING] == 0


def test_an_unknown_stored_status_is_kept_and_the_canary_taken_off_its_own() -> None:
    """Pure: a status newer code wrote stays a label value; the canary leaves its status' count."""
    row: dict[str, Any] = {
        "statuses": {RUNNING: 2, "paused": 1},
        "canary_status": RUNNING,
        "stuck": 0,
        "oldest_running": None,
        "longest_idle": None,
        "prune_candidates": 0,
    }
    samples = samples_of(workflows_families(row, stuck_after=5.0, prune_threshold=7))
    assert value(samples, PREFIX + "available") == 1
    assert value(samples, PREFIX + "unavailable", reason=NO_WORKFLOW_METADATA) == 0
    assert value(samples, PREFIX + "threads", status=RUNNING) == 1
    assert value(samples, PREFIX + "threads", status="paused") == 1
    assert value(samples, PREFIX + "threads", status=CANCELLED) == 0
    assert value(samples, PREFIX + "oldest_running_age_seconds") == 0


async def test_the_sidecar_serves_workflow_figures_over_http(tracked: Settings, dsn: str) -> None:
    """A real sidecar with only this collector serves the inserted statuses, and it succeeds."""
    insert(dsn, tracked, [("a", RUNNING, 5, 2 * STUCK_AFTER, 1), ("b", FAILED, 5, 1, 1)])
    samples = await scrape_once(tracked, WorkflowsCollector())
    assert value(samples, "langgraph_checkpointer_scrape_collector_success", collector="workflows")
    assert statuses(samples) == {RUNNING: 1, INTERRUPTED: 0, COMPLETED: 0, FAILED: 1, CANCELLED: 0}
    assert value(samples, PREFIX + "stuck_threads") == 1


# -- the maintained counts ------------------------------------------------------------------

BULK = """
INSERT INTO {schema}.workflow_metadata
    (thread_id, status, first_activity, last_activity, checkpoint_count)
SELECT %(prefix)s || i, %(status)s, now() - interval '1 day' - make_interval(secs => i),
       now() - interval '1 hour' - make_interval(secs => i), 3
FROM generate_series(%(start)s, %(start)s + %(n)s - 1) AS i
"""


def bulk(
    conn: psycopg.Connection[Any],
    settings: Settings,
    status: str,
    n: int,
    prefix: str,
    start: int = 1,
) -> None:
    """``n`` rows of ``status`` (``prefix`` + ``start``, and on) in one statement."""
    conn.execute(
        BULK.format(schema=settings.postgres_schema),
        {"prefix": prefix, "status": status, "n": n, "start": start},
    )


def maintained(conn: psycopg.Connection[Any], settings: Settings) -> dict[str, int]:
    """The counts the triggers keep, statuses with no thread left out."""
    rows = conn.execute(
        f"SELECT status, threads FROM {settings.postgres_schema}.{COUNTS_TABLE} WHERE threads <> 0"
    ).fetchall()
    return {status: int(threads) for status, threads in rows}


def scanned(conn: psycopg.Connection[Any], settings: Settings) -> dict[str, int]:
    """The counts by a scan of workflow_metadata: the truth the triggers must keep."""
    rows = conn.execute(
        f"SELECT status, count(*) FROM {settings.postgres_schema}.{TABLE} GROUP BY status"
    ).fetchall()
    return {status: int(threads) for status, threads in rows}


def assert_exact(conn: psycopg.Connection[Any], settings: Settings) -> dict[str, int]:
    counts = maintained(conn, settings)
    assert counts == scanned(conn, settings)
    return counts


async def test_counts_stay_exact_through_every_kind_of_write(tracked: Settings, dsn: str) -> None:
    """Single and bulk inserts, status changes, upserts, deletes, a rollback and TRUNCATE each
    leave the maintained counts equal to a scan, and the collector reports them."""
    schema = tracked.postgres_schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert assert_exact(conn, tracked) == {}
        insert(dsn, tracked, [("one", RUNNING, 5, 1, 1), ("two", FAILED, 5, 1, 1)])
        bulk(conn, tracked, COMPLETED, 500, "done-")
        bulk(conn, tracked, RUNNING, 40, "run-")
        assert assert_exact(conn, tracked) == {RUNNING: 41, COMPLETED: 500, FAILED: 1}
        conn.execute(
            f"UPDATE {schema}.{TABLE} SET status = CASE WHEN thread_id LIKE 'run-1%%' "
            "THEN 'interrupted' ELSE 'cancelled' END WHERE thread_id LIKE 'run-%%'"
        )
        conn.execute(f"UPDATE {schema}.{TABLE} SET checkpoint_count = checkpoint_count + 1")
        assert assert_exact(conn, tracked) == {
            RUNNING: 1, INTERRUPTED: 11, CANCELLED: 29, COMPLETED: 500, FAILED: 1,
        }  # fmt: skip
        conn.execute(
            f"INSERT INTO {schema}.{TABLE} AS w (thread_id, status, first_activity, last_activity)"
            " VALUES ('one', 'completed', now(), now()), ('new', 'failed', now(), now())"
            " ON CONFLICT (thread_id) DO UPDATE SET status = excluded.status"
        )
        conn.execute(f"DELETE FROM {schema}.{TABLE} WHERE thread_id LIKE 'done-1%%'")
        assert assert_exact(conn, tracked) == {
            INTERRUPTED: 11, CANCELLED: 29, COMPLETED: 390, FAILED: 2,
        }  # fmt: skip
        with psycopg.connect(dsn) as rolled_back:
            rolled_back.execute(f"DELETE FROM {schema}.{TABLE}")
            assert maintained(rolled_back, tracked) == {}
            rolled_back.rollback()
        counts = assert_exact(conn, tracked)
        samples = await collect(dsn, tracked, WorkflowsCollector())
        assert statuses(samples) == {status: counts.get(status, 0) for status in STATUSES}
        conn.execute(f"TRUNCATE {schema}.{TABLE}")
        assert assert_exact(conn, tracked) == {}
        bulk(conn, tracked, RUNNING, 3, "again-")
        assert assert_exact(conn, tracked) == {RUNNING: 3}


async def test_the_trackers_batched_flushes_keep_the_counts_exact(
    settings: Settings, dsn: str
) -> None:
    """Real graphs through build_checkpointer: inserts, status changes, resumes and deletes,
    each batch one flush, leave the counts equal to a scan and to what the collector reports."""
    async with build_checkpointer(settings.replace(tracking_flush_interval=60)) as saver:
        tracker = saver.tracker
        assert tracker is not None
        graph = review_graph(saver)
        for i in range(4):
            async with tracker.run(f"done-{i}"):
                await graph.ainvoke({"n": 1}, config(f"done-{i}"))
        async with tracker.run("asked"):
            await graph.ainvoke({"n": 1, "ask": True}, config("asked"))
        with pytest.raises(ValueError, match="negative"):
            async with tracker.run("broken"):
                await graph.ainvoke({"n": -1}, config("broken"))
        await graph.ainvoke({"n": 1}, config("unmarked"))
        assert await tracker.flush()
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert assert_exact(conn, settings) == {COMPLETED: 5, INTERRUPTED: 1, FAILED: 1}
        async with tracker.run("asked"):
            await graph.ainvoke(Command(resume="yes"), config("asked"))
        tracker.mark_completed("unmarked")
        tracker.mark_failed("done-0", ValueError("late"))
        await saver.adelete_thread("done-1")
        await graph.ainvoke({"n": 1}, config("fresh"))
        assert await tracker.flush()
    with psycopg.connect(dsn, autocommit=True) as conn:
        counts = assert_exact(conn, settings)
    assert counts == {COMPLETED: 5, FAILED: 2}
    samples = await collect(dsn, settings, WorkflowsCollector())
    assert statuses(samples) == {status: counts.get(status, 0) for status in STATUSES}


async def waits_on_a_lock(conn: psycopg.AsyncConnection[Any], pid: int) -> None:
    """Return once backend ``pid`` waits on a lock; the server offers no event for that."""
    deadline = asyncio.get_running_loop().time() + 10
    query = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"
    while not (row := await (await conn.execute(query, (pid,))).fetchone()) or not row[0]:
        assert asyncio.get_running_loop().time() < deadline, f"backend {pid} never waited"
        await asyncio.sleep(0.01)


async def test_two_writers_crossing_statuses_neither_deadlock_nor_lose_a_count(
    tracked: Settings, dsn: str
) -> None:
    """Two transactions that each delete, then change statuses the other touched (a tracker
    flush on two replicas): the second waits for the first instead of deadlocking with it, and
    the counts come out exact."""
    schema = tracked.postgres_schema
    table = f"{schema}.{TABLE}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        bulk(conn, tracked, RUNNING, 10, "run-")
        bulk(conn, tracked, COMPLETED, 10, "done-")
    async with (
        await psycopg.AsyncConnection.connect(dsn) as first,
        await psycopg.AsyncConnection.connect(dsn) as second,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher,
    ):
        await first.execute(f"DELETE FROM {table} WHERE thread_id = 'run-1'")

        async def second_flush() -> None:
            await second.execute(f"DELETE FROM {table} WHERE thread_id = 'done-1'")
            await second.execute(
                f"UPDATE {table} SET status = 'completed' WHERE thread_id = 'run-2'"
            )
            await second.commit()

        task = asyncio.create_task(second_flush())
        await waits_on_a_lock(watcher, second.info.backend_pid)
        await first.execute(f"UPDATE {table} SET status = 'running' WHERE thread_id = 'done-2'")
        await first.commit()
        await task
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert assert_exact(conn, tracked) == {RUNNING: 9, COMPLETED: 9}


async def test_the_migration_counts_the_rows_already_there(settings: Settings, dsn: str) -> None:
    """A schema at the level before the counts, with rows, gets them counted exactly when it
    migrates; until then the collector counts by a scan, logs that once and errs nowhere."""
    schema = settings.postgres_schema
    before = next(i for i, text in enumerate(MIGRATIONS) if COUNTS_TABLE in text)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for index in range(before):
            conn.execute(migration(index, schema))
            conn.execute(f"INSERT INTO {schema}.{MIGRATIONS_TABLE} (v) VALUES ({index})")
        bulk(conn, settings, COMPLETED, 300, "done-")
        bulk(conn, settings, RUNNING, 7, "run-")
        bulk(conn, settings, FAILED, 2, "failed-")
    now = [0.0]
    collector = WorkflowsCollector(recheck=60.0, clock=lambda: now[0])
    with capture_logs() as logs:
        first = await collect(dsn, settings, collector)
        second = await collect(dsn, settings, collector)
    expected = {RUNNING: 7, INTERRUPTED: 0, COMPLETED: 300, FAILED: 2, CANCELLED: 0}
    assert statuses(first) == statuses(second) == expected
    assert value(first, PREFIX + "available") == 1
    assert [e["event"] for e in logs] == ["workflow_status_counts_missing"]
    await prepare_schema(dsn, settings)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert assert_exact(conn, settings) == {RUNNING: 7, COMPLETED: 300, FAILED: 2}
        # Off by one on purpose, to tell which of the two the collector reads.
        conn.execute(f"UPDATE {schema}.{COUNTS_TABLE} SET threads = 8 WHERE status = 'running'")
    assert statuses(await collect(dsn, settings, collector))[RUNNING] == 7  # still the scan
    now[0] = 61.0
    with capture_logs() as logs:
        assert statuses(await collect(dsn, settings, collector))[RUNNING] == 8
    assert logs == []


async def summary_buffers(dsn: str, query: bytes) -> int:
    """Shared buffers ``query``'s execution touches, warm (the second of two runs)."""
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, row_factory=dict_row
    ) as conn:
        await explained(conn, query)
        plan = (await explained(conn, query))["Plan"]
    return int(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])


async def test_the_summary_reads_as_much_at_50k_threads_as_at_1k(
    tracked: Settings, dsn: str
) -> None:
    """Fifty times the completed threads (the same running, stuck and prune-worthy ones) leave
    the summary's buffers within a few index levels; the scan it replaced grows with them."""
    schema = tracked.postgres_schema
    insert(
        dsn,
        tracked,
        [
            *[(f"run-{i}", RUNNING, 600, 5, 3) for i in range(20)],
            *[(f"stuck-{i}", RUNNING, 900, 2 * STUCK_AFTER, 3) for i in range(5)],
            *[(f"big-{i}", COMPLETED, 900, 100, 10 * PRUNE_THRESHOLD) for i in range(5)],
        ],
    )
    summary = summary_query(schema, STUCK_AFTER, PRUNE_THRESHOLD)
    scan = summary_query(schema, STUCK_AFTER, PRUNE_THRESHOLD, counted=False)
    measured: dict[int, tuple[int, int]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for threads, start in ((1_000, 0), (50_000, 1_000)):
            bulk(conn, tracked, COMPLETED, threads - start, "done-", start)
            conn.execute(f"VACUUM (ANALYZE) {schema}.{TABLE}")
            measured[threads] = (
                await summary_buffers(dsn, summary),
                await summary_buffers(dsn, scan),
            )
    (small, small_scan), (large, large_scan) = measured[1_000], measured[50_000]
    # Five index probes, each at most a level or two deeper in the larger table.
    assert large <= small + 10, measured
    assert large_scan > small_scan + 100, measured

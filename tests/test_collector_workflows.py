"""The workflows collector: statuses, stuck and prune-worthy workflows, from workflow_metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from exporter import Sidecar
from exporter.checkpointer.factory import prepare_schema
from exporter.collectors.base import ScrapeContext
from exporter.collectors.workflows import PREFIX, WorkflowsCollector, workflows_families
from exporter.settings import Settings
from exporter.workflows.schema import (
    CANARY_THREAD_ID,
    CANCELLED,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    STATUSES,
    TABLE,
)
from tests.samples import Samples, parse_metrics, samples_of, scrape_context, value

STUCK_AFTER = 60.0
PRUNE_THRESHOLD = 10

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
    """Without workflow_metadata: table_exists 0, nothing else, one log event over two scrapes."""
    collector = WorkflowsCollector()
    with capture_logs() as logs:
        first = await collect(dsn, settings, collector)
        second = await collect(dsn, settings, collector)
    assert first == second == {(PREFIX + "table_exists", ()): 0.0}
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
    assert gone == {(PREFIX + "table_exists", ()): 0.0}
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
    assert value(samples, PREFIX + "threads", status=RUNNING) == 1
    assert value(samples, PREFIX + "threads", status="paused") == 1
    assert value(samples, PREFIX + "threads", status=CANCELLED) == 0
    assert value(samples, PREFIX + "oldest_running_age_seconds") == 0


async def test_the_sidecar_serves_workflow_figures_over_http(tracked: Settings, dsn: str) -> None:
    """A real sidecar with only this collector serves the inserted statuses, and it succeeds."""
    insert(dsn, tracked, [("a", RUNNING, 5, 2 * STUCK_AFTER, 1), ("b", FAILED, 5, 1, 1)])
    collectors = (WorkflowsCollector(),)
    async with (
        Sidecar(tracked, registry=CollectorRegistry(), collectors=collectors) as sidecar,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.get(sidecar.url + tracked.telemetry_path) as response,
    ):
        assert response.status == 200
        samples = parse_metrics(await response.text())
    assert value(samples, "langgraph_checkpointer_scrape_collector_success", collector="workflows")
    assert statuses(samples) == {RUNNING: 1, INTERRUPTED: 0, COMPLETED: 0, FAILED: 1, CANCELLED: 0}
    assert value(samples, PREFIX + "stuck_threads") == 1

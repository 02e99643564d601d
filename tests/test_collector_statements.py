"""The statements collector: classifying LangGraph's SQL, and pg_stat_statements present or not.

The embedded PostgreSQL has no pg_stat_statements, so the tests that need it
start the distribution's PostgreSQL (see tests/debian_postgres.py).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.postgres import base
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from exporter import build_checkpointer
from exporter.collectors.base import ScrapeContext
from exporter.collectors.statements import (
    KINDS,
    RETRY_SECONDS,
    StatementsCollector,
    classify,
    statements_families,
)
from exporter.database import exporter_pool
from exporter.factory import prepare_schema
from exporter.settings import Settings
from tests import debian_postgres as debian_postgres_module
from tests.debian_postgres import require_bindir
from tests.graphs import config, review_graph
from tests.samples import Clock, Samples, samples_of, value
from tests.serving import scrape_once, serving

AVAILABLE = "langgraph_checkpointer_statements_available"
CALLS = "langgraph_checkpointer_statements_calls_total"
SECONDS = "langgraph_checkpointer_statements_seconds_total"
ROWS = "langgraph_checkpointer_statements_rows_total"
MEAN = "langgraph_checkpointer_statements_mean_seconds"
SUCCESS = "langgraph_checkpointer_scrape_collector_success"
UNAVAILABLE_EVENT = "pg_stat_statements_unavailable"


def normalized(statement: str) -> str:
    """``statement`` as pg_stat_statements shows it: psycopg's ``%s`` become ``$1``, ``$2``..."""
    numbers = iter(range(1, 1000))
    return re.sub(r"%s", lambda _: f"${next(numbers)}", statement)


@pytest.fixture
def statements_settings(statements_dsn: str, settings: Settings) -> Settings:
    """The usual test settings, on a database that has pg_stat_statements."""
    return settings.replace(postgres_connection_string=statements_dsn)


async def collect(settings: Settings, collector: StatementsCollector | None = None) -> Samples:
    """One run of the collector through the exporter's own pool."""
    assert settings.postgres_connection_string is not None
    pool = exporter_pool(settings.postgres_connection_string, settings)
    await pool.open(wait=True)
    try:
        collector = collector or StatementsCollector()
        return samples_of(await collector.collect(ScrapeContext(settings, pool)))
    finally:
        await pool.close()


def test_langgraph_statements_are_classified() -> None:
    """Each of the installed LangGraph's statements lands in its kind; others in none."""
    by_id = "WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s"
    latest = "WHERE thread_id = %s AND checkpoint_ns = %s ORDER BY checkpoint_id DESC LIMIT 1"
    expected = {
        base.SELECT_SQL + by_id: "load_checkpoint",
        base.SELECT_SQL + latest.replace("LIMIT 1", "LIMIT %s"): "load_checkpoint",
        base.SELECT_SQL + "WHERE thread_id = %s  ORDER BY checkpoint_id DESC": "list",
        base.SELECT_SQL + "WHERE thread_id = %s  AND checkpoint_ns = %s "
        "ORDER BY checkpoint_id DESC LIMIT %s": "list",
        base.SELECT_SQL + " ORDER BY checkpoint_id DESC": "list",
        base.UPSERT_CHECKPOINTS_SQL: "save_checkpoint",
        base.UPSERT_CHECKPOINT_BLOBS_SQL: "save_blobs",
        base.UPSERT_CHECKPOINT_WRITES_SQL: "save_writes",
        base.INSERT_CHECKPOINT_WRITES_SQL: "save_writes",
        "DELETE FROM checkpoint_writes WHERE thread_id = %s": "delete",
        base.PRUNE_CHECKPOINTS_SQL: "delete",
        base.SELECT_PENDING_SENDS_SQL: "other",
        "INSERT INTO checkpoint_migrations (v) VALUES (%s)": "migrate",
        "SELECT v FROM checkpoint_migrations ORDER BY v DESC LIMIT %s": "migrate",
        'SELECT max(v) AS v FROM "workflow_checkpoints"."checkpoint_migrations"': None,
        'CREATE SCHEMA IF NOT EXISTS "workflow_checkpoints"': None,
        "SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS acquired": None,
    }
    expected.update(dict.fromkeys(base.MIGRATIONS[1:5] + base.MIGRATIONS[6:], "migrate"))
    for statement, kind in expected.items():
        assert classify(normalized(statement)) == kind, statement


def test_families_sum_each_kind_in_base_units() -> None:
    """Rows of one kind are summed, milliseconds become seconds, and every kind is exported."""
    rows: list[dict[str, Any]] = [
        {"query": normalized(base.UPSERT_CHECKPOINTS_SQL), "calls": 3, "rows": 3, "total_ms": 6.0},
        {"query": normalized(base.UPSERT_CHECKPOINTS_SQL), "calls": 1, "rows": 1, "total_ms": 2.0},
        {"query": "SELECT $1", "calls": 50, "rows": 50, "total_ms": 100.0},
    ]
    samples = samples_of(statements_families(rows))
    assert value(samples, AVAILABLE) == 1
    assert value(samples, CALLS, kind="save_checkpoint") == 4
    assert value(samples, ROWS, kind="save_checkpoint") == 4
    assert value(samples, SECONDS, kind="save_checkpoint") == pytest.approx(0.008)
    assert value(samples, MEAN, kind="save_checkpoint") == pytest.approx(0.002)
    for kind in set(KINDS) - {"save_checkpoint"}:
        assert value(samples, CALLS, kind=kind) == 0
        assert value(samples, MEAN, kind=kind) == 0


async def test_no_context_database_yields_nothing(statements_settings: Settings) -> None:
    """Without a configured database the collector produces no families."""
    assert await StatementsCollector().collect(ScrapeContext(statements_settings)) == []


async def test_a_real_workload_is_counted_by_kind(statements_settings: Settings) -> None:
    """Puts, loads, lists and deletes made through the saver show up as their kinds."""
    registry = CollectorRegistry()
    async with build_checkpointer(statements_settings, registry=registry) as saver:
        graph = review_graph(saver)
        await graph.ainvoke({"n": 1}, config("a"))
        await graph.ainvoke({"n": 2}, config("b"))
        await saver.aget_tuple(config("a"))
        assert [c async for c in saver.alist(config("a"))]
        await saver.adelete_thread("b")
    samples = await collect(statements_settings)

    def operations(operation: str) -> float:
        labels = {"operation": operation, "saver": "AsyncPostgresSaver"}
        found = registry.get_sample_value("langgraph_checkpointer_operations_total", labels)
        assert found is not None, operation
        return found

    puts = operations("put")
    assert puts > 0
    assert value(samples, AVAILABLE) == 1
    assert value(samples, CALLS, kind="save_checkpoint") == puts
    assert value(samples, ROWS, kind="save_checkpoint") == puts
    assert value(samples, SECONDS, kind="save_checkpoint") > 0
    assert value(samples, MEAN, kind="save_checkpoint") > 0
    assert value(samples, CALLS, kind="load_checkpoint") >= operations("get_tuple") > 0
    assert value(samples, SECONDS, kind="load_checkpoint") > 0
    assert value(samples, CALLS, kind="list") >= operations("list") > 0
    assert value(samples, CALLS, kind="save_blobs") > 0
    assert value(samples, CALLS, kind="save_writes") > 0
    assert value(samples, CALLS, kind="delete") == 3 * operations("delete_thread")
    assert value(samples, CALLS, kind="migrate") >= len(base.MIGRATIONS)
    assert {kind for (name, labels) in samples if name == CALLS for _, kind in labels} == set(KINDS)


async def test_a_narrowed_list_is_not_taken_for_a_load(statements_settings: Settings) -> None:
    """alist() on one thread and namespace with a limit counts as list, not load_checkpoint."""
    narrowed: RunnableConfig = {"configurable": {"thread_id": "a", "checkpoint_ns": ""}}
    async with build_checkpointer(statements_settings, registry=CollectorRegistry()) as saver:
        await review_graph(saver).ainvoke({"n": 1}, config("a"))
        before = await collect(statements_settings)
        for _ in range(3):
            assert len([c async for c in saver.alist(narrowed, limit=1)]) == 1
    after = await collect(statements_settings)
    assert value(after, CALLS, kind="list") - value(before, CALLS, kind="list") == 3
    assert value(after, CALLS, kind="load_checkpoint") == value(
        before, CALLS, kind="load_checkpoint"
    )


async def test_an_unreadable_view_is_unavailable(
    statements_settings: Settings, statements_dsn: str
) -> None:
    """A role that may not read pg_stat_statements gets available 0 and one log event."""
    role = "no_statements"
    with psycopg.connect(statements_dsn, autocommit=True) as conn:
        conn.execute("REVOKE ALL ON pg_stat_statements FROM PUBLIC")
        conn.execute(f"CREATE ROLE {role} LOGIN")
    settings = statements_settings.replace(
        postgres_connection_string=statements_dsn.replace("user=postgres", f"user={role}")
    )
    collector = StatementsCollector()
    with capture_logs() as logs:
        first = await collect(settings, collector)
        second = await collect(settings, collector)
    for samples in (first, second):
        assert samples == {(AVAILABLE, ()): 0.0}
    events = [e for e in logs if e["event"] == UNAVAILABLE_EVENT]
    assert len(events) == 1
    assert events[0]["reason"].startswith("InsufficientPrivilege")


async def test_without_the_extension_the_scrape_still_succeeds(settings: Settings) -> None:
    """On a server without pg_stat_statements: available 0, success 1, logged once in 2 scrapes."""
    with capture_logs() as logs:
        async with serving(settings, StatementsCollector()) as served:
            scrapes = [await served.scrape() for _ in range(2)]
    for samples in scrapes:
        assert value(samples, AVAILABLE) == 0
        assert value(samples, SUCCESS, collector="statements") == 1
        assert not any(name == CALLS for name, _ in samples)
    events = [e for e in logs if e["event"] == UNAVAILABLE_EVENT]
    assert len(events) == 1
    assert events[0]["reason"] == "not_installed"


async def test_an_absent_extension_is_not_looked_for_again_within_the_retry_interval(
    settings: Settings,
) -> None:
    """Once found missing, scrapes within the interval touch no connection; then it looks."""
    assert settings.postgres_connection_string is not None
    clock = Clock()
    collector = StatementsCollector(clock=clock)
    pool = exporter_pool(settings.postgres_connection_string, settings)
    await pool.open(wait=True)
    try:
        ctx = ScrapeContext(settings, pool)
        assert samples_of(await collector.collect(ctx)) == {(AVAILABLE, ()): 0.0}
        requests = pool.get_stats()["requests_num"]
        clock.now += RETRY_SECONDS - 1
        assert samples_of(await collector.collect(ctx)) == {(AVAILABLE, ()): 0.0}
        assert pool.get_stats()["requests_num"] == requests
        clock.now += 1
        assert samples_of(await collector.collect(ctx)) == {(AVAILABLE, ()): 0.0}
        assert pool.get_stats()["requests_num"] == requests + 1
    finally:
        await pool.close()


async def test_the_sidecar_serves_the_statement_figures(statements_settings: Settings) -> None:
    """Over HTTP, /metrics carries every kind's counters and the collector's success."""
    assert statements_settings.postgres_connection_string is not None
    await prepare_schema(statements_settings.postgres_connection_string, statements_settings)
    # No canary: its own saves and loads are checkpointer statements too.
    quiet = statements_settings.replace(canary_interval=0)
    samples = await scrape_once(quiet, StatementsCollector())
    assert value(samples, AVAILABLE) == 1
    for kind in set(KINDS) - {"migrate"}:
        assert value(samples, CALLS, kind=kind) == 0
    assert value(samples, CALLS, kind="migrate") >= len(base.MIGRATIONS)
    assert value(samples, SUCCESS, collector="statements") == 1


def test_missing_binaries_skip_locally_and_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a distribution PostgreSQL the tests skip, except under CI=true, where they fail."""
    monkeypatch.setattr(debian_postgres_module, "find_bindir", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_bindir()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_bindir()


async def test_the_extension_is_followed_when_dropped_and_created_elsewhere(
    statements_settings: Settings, statements_dsn: str
) -> None:
    """The view found once is read directly; dropped, it is reported gone; moved, found again
    once the retry interval has passed."""
    clock = Clock()
    collector = StatementsCollector(clock=clock)
    assert value(await collect(statements_settings, collector), AVAILABLE) == 1
    with psycopg.connect(statements_dsn, autocommit=True) as conn:
        conn.execute("DROP EXTENSION pg_stat_statements")
    with capture_logs() as logs:
        dropped = await collect(statements_settings, collector)
        still = await collect(statements_settings, collector)
    assert dropped == still == {(AVAILABLE, ()): 0.0}
    assert len([e for e in logs if e["event"] == UNAVAILABLE_EVENT]) == 1
    with psycopg.connect(statements_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA stats")
        conn.execute("CREATE EXTENSION pg_stat_statements SCHEMA stats")
    clock.now += RETRY_SECONDS - 1
    assert await collect(statements_settings, collector) == {(AVAILABLE, ()): 0.0}
    clock.now += 1
    back = await collect(statements_settings, collector)
    assert value(back, AVAILABLE) == 1
    assert {kind for (name, labels) in back if name == CALLS for _, kind in labels} == set(KINDS)

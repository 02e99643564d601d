"""The recovery check loads the running workflows' latest checkpoints and names those that fail."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from time import time

import psycopg
import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from exporter import Sidecar, build_checkpointer
from exporter.collectors.recovery import RecoveryCollector
from exporter.factory import prepare_schema
from exporter.jobs import Statuses
from exporter.settings import Settings
from exporter.workflows.recovery import NO_CHECKPOINT, RECOVERY, RecoveryFailure
from exporter.workflows.schema import CANARY_THREAD_ID
from tests.graphs import config, review_graph
from tests.ports import refused_port
from tests.samples import samples_of, scrape_context, value
from tests.targets import recovery_check
from tests.waiting import eventually

GARBAGE = b"\xc1 not a serialized value"
PREFIX = "langgraph_checkpointer_recovery_"


def garbage_error() -> str:
    """The error class LangGraph's serializer raises on GARBAGE."""
    try:
        JsonPlusSerializer().loads_typed(("msgpack", GARBAGE))
    except Exception as exc:
        return type(exc).__name__
    raise AssertionError("GARBAGE decoded")


async def run_graphs(settings: Settings, threads: Iterable[str]) -> None:
    """Run the review graph on each thread, through the real checkpointer; ask=True interrupts."""
    async with build_checkpointer(settings, registry=CollectorRegistry()) as saver:
        graph = review_graph(saver)
        for index, thread in enumerate(threads):
            await graph.ainvoke({"n": index, "ask": index % 2 == 0}, config(thread))


def track(dsn: str, schema: str, rows: dict[str, tuple[str, float]]) -> None:
    """Record each thread's status and last activity (seconds ago) in workflow_metadata."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for thread, (status, ago) in rows.items():
            conn.execute(
                f"""
                INSERT INTO {schema}.workflow_metadata
                    (thread_id, status, first_activity, last_activity, checkpoint_count)
                VALUES (%s, %s, now() - make_interval(secs => %s),
                        now() - make_interval(secs => %s), 1)
                ON CONFLICT (thread_id) DO UPDATE
                SET status = excluded.status, last_activity = excluded.last_activity
                """,
                (thread, status, ago, ago),
            )


def corrupt(dsn: str, schema: str, thread: str) -> int:
    """Overwrite every stored blob of ``thread`` with GARBAGE; return how many."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(
            f"UPDATE {schema}.checkpoint_blobs SET blob = %s WHERE thread_id = %s",
            (GARBAGE, thread),
        )
        return cursor.rowcount


@pytest.fixture
def untracked(settings: Settings) -> Settings:
    """The test writes workflow_metadata itself, so the saver's own tracking stays off."""
    return settings.replace(tracking=False)


async def test_a_corrupted_thread_fails_while_the_others_recover(
    untracked: Settings, dsn: str
) -> None:
    """Four running workflows, one with garbage blobs: three recover, that one fails by name."""
    schema = untracked.postgres_schema
    threads = ["alpha", "bravo", "charlie", "delta"]
    await run_graphs(untracked, threads)
    track(dsn, schema, {thread: ("running", 10.0 * i) for i, thread in enumerate(threads)})
    assert corrupt(dsn, schema, "charlie") > 0

    with capture_logs() as logs:
        report = await recovery_check(dsn, untracked).run()

    assert (report.checked, report.recovered, report.failed) == (4, 3, 1)
    assert report.failures == (RecoveryFailure("charlie", garbage_error()),)
    assert report.table_exists
    assert report.error is None
    assert report.completed_at <= time()
    assert report.duration_seconds > 0
    failed = [e for e in logs if e["event"] == "recovery_check_failed"]
    assert [(e["thread_id"], e["error"]) for e in failed] == [("charlie", garbage_error())]


async def test_newest_running_workflows_first_up_to_the_limit(
    untracked: Settings, dsn: str
) -> None:
    """Only running workflows count, newest activity first, at most recovery_limit of them."""
    schema = untracked.postgres_schema
    await run_graphs(untracked, ["new", "middle", "old", "done"])
    track(
        dsn,
        schema,
        {
            "new": ("running", 1.0),
            "middle": ("running", 60.0),
            "old": ("running", 3600.0),
            "done": ("completed", 0.0),
            CANARY_THREAD_ID: ("running", 0.0),
        },
    )
    for thread in ("new", "old", "done"):
        assert corrupt(dsn, schema, thread) > 0

    newest = await recovery_check(dsn, untracked.replace(recovery_limit=1)).run()
    assert (newest.checked, newest.failures) == (1, (RecoveryFailure("new", garbage_error()),))

    two = await recovery_check(dsn, untracked.replace(recovery_limit=2)).run()
    assert (two.checked, two.recovered) == (2, 1)
    assert [f.thread_id for f in two.failures] == ["new"]

    every = await recovery_check(dsn, untracked).run()
    assert (every.checked, every.recovered) == (3, 1)
    assert [f.thread_id for f in every.failures] == ["new", "old"]


async def test_a_running_workflow_without_checkpoints_fails(untracked: Settings, dsn: str) -> None:
    """A running workflow whose checkpoints are gone cannot resume: it fails as missing."""
    await prepare_schema(dsn, untracked)
    track(dsn, untracked.postgres_schema, {"vanished": ("running", 5.0)})
    report = await recovery_check(dsn, untracked).run()
    assert report.failures == (RecoveryFailure("vanished", NO_CHECKPOINT),)


async def test_the_application_serializer_is_used(untracked: Settings, dsn: str) -> None:
    """In-process, the check decodes with the saver's own serde, not a default one."""

    class CountingSerde(JsonPlusSerializer):
        loads = 0

        def loads_typed(self, data: tuple[str, bytes]) -> object:
            CountingSerde.loads += 1
            return super().loads_typed(data)

    await run_graphs(untracked, ["one"])
    track(dsn, untracked.postgres_schema, {"one": ("running", 1.0)})
    report = await recovery_check(dsn, untracked, CountingSerde()).run()
    assert (report.checked, report.recovered) == (1, 1)
    assert CountingSerde.loads > 0


async def test_without_the_workflow_table_nothing_is_checked(settings: Settings, dsn: str) -> None:
    """No workflow_metadata: the report says so, checks nothing, and the run still succeeds."""
    with capture_logs() as logs:
        report = await recovery_check(dsn, settings).run()
    assert report.table_exists is False
    assert (report.checked, report.failed, report.error) == (0, 0, None)
    assert [e["event"] for e in logs] == ["recovery_check_skipped"]
    async with scrape_context(dsn, settings) as ctx:
        families = await RecoveryCollector().collect(
            replace(ctx, jobs=Statuses({RECOVERY: report}))
        )
    samples = samples_of(families)
    assert value(samples, PREFIX + "last_run_success") == 0
    assert value(samples, PREFIX + "workflows_checked") == 0
    assert value(samples, PREFIX + "last_run_timestamp_seconds") == report.completed_at


async def test_an_unreachable_database_is_reported_not_raised(settings: Settings) -> None:
    """The database is down: run() returns a report with the error; check() raises."""
    url = f"postgresql://exporter:pw_secret_1@127.0.0.1:{refused_port()}/app"
    down = settings.replace(postgres_connection_string=url)
    check = recovery_check(url, down)
    with capture_logs() as logs:
        report = await check.run()
    assert report.error is not None
    assert "pw_secret_1" not in report.error
    assert check.last is report
    assert [e["event"] for e in logs] == ["recovery_check_unavailable"]
    with pytest.raises(psycopg.OperationalError):
        await check.check()


async def test_a_sidecar_checks_at_start_and_exports_the_figures(
    untracked: Settings, dsn: str
) -> None:
    """start() runs the check in the background; the collector then exports its figures."""
    await run_graphs(untracked, ["ok", "broken"])
    track(dsn, untracked.postgres_schema, {"ok": ("running", 2.0), "broken": ("running", 1.0)})
    corrupt(dsn, untracked.postgres_schema, "broken")
    settings = untracked.replace(leader_election=False, canary_interval=0)
    async with Sidecar(
        settings, registry=CollectorRegistry(), collectors=[RecoveryCollector()]
    ) as sidecar:
        check = sidecar.recovery
        assert check is not None
        assert sidecar.canary is None
        await eventually(lambda: check.last is not None)
        report = check.last
        samples = samples_of(await RecoveryCollector().collect(sidecar.context()))
        document, status = await sidecar.health()
        again = await sidecar.check_recovery()
    assert report is not None
    assert again is not None
    assert value(samples, PREFIX + "workflows_checked") == 2
    assert value(samples, PREFIX + "workflows_recovered") == 1
    assert value(samples, PREFIX + "workflows_failed") == 1
    assert value(samples, PREFIX + "last_run_success") == 1
    assert value(samples, PREFIX + "last_run_timestamp_seconds") == report.completed_at
    assert value(samples, PREFIX + "last_run_duration_seconds") == report.duration_seconds
    assert (status, document["status"]) == (200, "degraded")
    assert document["recovery"]["failed"] == 1
    assert "broken" not in str(document)
    assert [f.thread_id for f in again.failures] == ["broken"]

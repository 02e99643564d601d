"""Workflow tracking: real graphs on a real PostgreSQL keep ``workflow_metadata`` exact."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph._internal import _constants as langgraph_constants
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt
from prometheus_client import CollectorRegistry
from psycopg.rows import dict_row
from structlog.testing import capture_logs

from exporter import InstrumentedSaver, WorkflowTracker, build_checkpointer
from exporter.factory import prepare_schema
from exporter.settings import Settings
from exporter.workflows import schema
from exporter.workflows.progress import ERROR, INTERRUPT
from exporter.workflows.tracking_metrics import TRACKING_DROPS, TRACKING_ERRORS, TRACKING_EVENTS
from tests.graphs import config, review_graph
from tests.ports import refused_port
from tests.samples import samples_of, value
from tests.targets import tracker_on
from tests.waiting import eventually

Graph = CompiledStateGraph[Any, Any, Any, Any]
FAST: dict[str, Any] = {"tracking_flush_interval": 0.05}


class SubState(TypedDict, total=False):
    n: int
    log: Annotated[list[str], operator.add]
    ask: bool


def _inner(state: SubState) -> dict[str, Any]:
    if state.get("ask"):
        interrupt("inner question")
    return {"n": state.get("n", 0) + 1, "log": ["inner"]}


def nested_graph(saver: InstrumentedSaver) -> Graph:
    """outer -> sub (a compiled subgraph with its own checkpoints) -> outer_end."""
    sub: StateGraph[Any] = StateGraph(SubState)
    sub.add_node("inner", _inner)
    sub.add_edge(START, "inner")
    graph: StateGraph[Any] = StateGraph(SubState)
    graph.add_node("outer", lambda state: {"log": ["outer"]})
    graph.add_node("sub", sub.compile())
    graph.add_node("outer_end", lambda state: {"log": ["end"]})
    graph.add_edge(START, "outer")
    graph.add_edge("outer", "sub")
    graph.add_edge("sub", "outer_end")
    return graph.compile(checkpointer=saver)


def hanging_graph(saver: InstrumentedSaver, reached: asyncio.Event) -> Graph:
    """start -> wait, where wait never returns: a workflow to cancel half-way."""

    async def wait(state: SubState) -> dict[str, Any]:
        reached.set()
        await asyncio.Event().wait()
        return {}

    graph: StateGraph[Any] = StateGraph(SubState)
    graph.add_node("start", lambda state: {"n": 1})
    graph.add_node("wait", wait)
    graph.add_edge(START, "start")
    graph.add_edge("start", "wait")
    return graph.compile(checkpointer=saver)


@pytest.fixture
async def saver(settings: Settings, registry: CollectorRegistry) -> AsyncIterator[Any]:
    async with build_checkpointer(settings.replace(**FAST), registry=registry) as built:
        yield built


def tracker_of(saver: InstrumentedSaver[WorkflowTracker]) -> WorkflowTracker:
    assert saver.tracker is not None
    return saver.tracker


async def fetch(dsn: str, query: str, *params: Any) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
        cursor = await conn.execute(query, params)
        return await cursor.fetchall()


async def tracked(dsn: str, settings: Settings) -> dict[str, dict[str, Any]]:
    rows = await fetch(dsn, f"SELECT * FROM {settings.postgres_schema}.workflow_metadata")
    return {row["thread_id"]: row for row in rows}


async def written(dsn: str, settings: Settings) -> dict[str, tuple[int, str]]:
    """Per thread, what LangGraph wrote: its checkpoints (every namespace) and newest root one."""
    rows = await fetch(
        dsn,
        "SELECT thread_id, count(*) AS n, "
        "max(checkpoint_id COLLATE \"C\") FILTER (WHERE checkpoint_ns = '') AS newest "
        f"FROM {settings.postgres_schema}.checkpoints GROUP BY thread_id",
    )
    return {row["thread_id"]: (row["n"], row["newest"]) for row in rows}


def assert_matches_checkpoints(
    rows: dict[str, dict[str, Any]], checkpoints: dict[str, tuple[int, str]]
) -> None:
    for thread_id, (count, newest) in checkpoints.items():
        assert rows[thread_id]["checkpoint_count"] == count, thread_id
        assert rows[thread_id]["last_checkpoint_id"] == newest, thread_id


def statuses(rows: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    return {key: (row["status"], row["last_error_class"]) for key, row in rows.items()}


async def test_statuses_counts_and_ids_follow_what_each_graph_did(
    saver: InstrumentedSaver, dsn: str, settings: Settings
) -> None:
    """Completed, interrupted, failed and cancelled runs are stored as such, marked or not
    (the checkpoints say), with exactly the checkpoints LangGraph wrote and the newest root
    checkpoint's id."""
    tracker = tracker_of(saver)
    graph = review_graph(saver)
    async with tracker.run("done"):
        await graph.ainvoke({"n": 1}, config("done"))
    async with tracker.run("asked"):
        await graph.ainvoke({"n": 1, "ask": True}, config("asked"))
    with pytest.raises(ValueError, match="negative"):
        async with tracker.run("broken"):
            await graph.ainvoke({"n": -1}, config("broken"))
    with pytest.raises(ValueError, match="negative"):
        await graph.ainvoke({"n": -1}, config("broken-unmarked"))
    await graph.ainvoke({"n": 1}, config("unmarked"))
    await nested_graph(saver).ainvoke({"n": 0}, config("nested"))
    await nested_graph(saver).ainvoke({"n": 0, "ask": True}, config("nested-asked"))
    reached = asyncio.Event()

    async def cancelled_run() -> None:
        async with tracker.run("cancelled"):
            await hanging_graph(saver, reached).ainvoke({}, config("cancelled"))

    task = asyncio.create_task(cancelled_run())
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await tracker.flush()
    rows = await tracked(dsn, settings)
    assert statuses(rows) == {
        "done": ("completed", None),
        "asked": ("interrupted", None),
        "broken": ("failed", "ValueError"),
        "broken-unmarked": ("failed", "ValueError"),
        "unmarked": ("completed", None),
        "nested": ("completed", None),
        "nested-asked": ("interrupted", None),
        "cancelled": ("cancelled", "CancelledError"),
    }
    checkpoints = await written(dsn, settings)
    assert set(checkpoints) == set(rows)
    assert_matches_checkpoints(rows, checkpoints)
    for row in rows.values():
        assert row["first_activity"] <= row["last_activity"]


async def test_resume_after_an_interrupt_runs_again_then_completes(
    saver: InstrumentedSaver, dsn: str, settings: Settings
) -> None:
    """A resumed workflow runs again and, reaching END, reads completed with no mark; a mark
    still overrides; resuming inside the same ``run()`` block ends completed."""
    tracker = tracker_of(saver)
    graph = review_graph(saver)
    await graph.ainvoke({"n": 1, "ask": True}, config("t"))
    assert await tracker.flush()
    assert (await tracked(dsn, settings))["t"]["status"] == "interrupted"

    await graph.ainvoke(Command(resume="yes"), config("t"))
    assert await tracker.flush()
    assert (await tracked(dsn, settings))["t"]["status"] == "completed"
    tracker.mark_cancelled("t")
    assert await tracker.flush()
    assert (await tracked(dsn, settings))["t"]["status"] == "cancelled"

    async with tracker.run("again"):
        await graph.ainvoke({"n": 1, "ask": True}, config("again"))
        await graph.ainvoke(Command(resume="yes"), config("again"))
    nested = nested_graph(saver)
    await nested.ainvoke({"n": 0, "ask": True}, config("nested"))
    await nested.ainvoke(Command(resume="go"), config("nested"))
    assert await tracker.flush()
    rows = await tracked(dsn, settings)
    assert statuses(rows) == {
        "t": ("cancelled", None),
        "again": ("completed", None),
        "nested": ("completed", None),
    }
    assert_matches_checkpoints(rows, await written(dsn, settings))


async def test_a_late_save_never_undoes_a_status_but_a_newer_one_resumes(
    saver: InstrumentedSaver, dsn: str, settings: Settings
) -> None:
    """LangGraph may finish saving a checkpoint after the interrupt written against it, in a
    later flush: that save counts, yet only a newer checkpoint changes the status."""
    tracker = tracker_of(saver)
    graph = review_graph(saver)
    await graph.ainvoke({"n": 1, "ask": True}, config("t"))
    snapshot = await saver.aget_tuple(config("t"))
    assert snapshot is not None
    interrupted_at = snapshot.config
    tracker.observe("put_writes", (interrupted_at, [(INTERRUPT, ())], "task"), {}, None)
    assert await tracker.flush()
    late = {"configurable": {**interrupted_at["configurable"]}}
    tracker.observe("put", (late, snapshot.checkpoint, {}, {}), {}, None)
    assert await tracker.flush()
    row = (await tracked(dsn, settings))["t"]
    assert row["status"] == "interrupted"
    assert row["checkpoint_count"] == (await written(dsn, settings))["t"][0] + 1

    tracker.mark_failed("t", "Abandoned")
    tracker.observe("put", (late, snapshot.checkpoint, {}, {}), {}, None)
    assert await tracker.flush()
    assert (await tracked(dsn, settings))["t"]["status"] == "failed"

    await graph.ainvoke(Command(resume="yes"), config("t"))
    assert await tracker.flush()
    assert (await tracked(dsn, settings))["t"]["status"] == "completed"


async def test_the_canary_thread_is_never_tracked(
    saver: InstrumentedSaver, dsn: str, settings: Settings
) -> None:
    """Checkpoints and marks on the canary's reserved thread leave no row."""
    tracker = tracker_of(saver)
    async with tracker.run(schema.CANARY_THREAD_ID):
        await review_graph(saver).ainvoke({"n": 1}, config(schema.CANARY_THREAD_ID))
    tracker.mark_failed(schema.CANARY_THREAD_ID, RuntimeError("probe"))
    await review_graph(saver).ainvoke({"n": 1}, config("real"))
    assert await tracker.flush()
    assert set(await tracked(dsn, settings)) == {"real"}
    assert schema.CANARY_THREAD_ID in await written(dsn, settings)


async def test_a_missing_table_never_fails_checkpoints_and_tracking_recovers(
    saver: InstrumentedSaver, dsn: str, settings: Settings, registry: CollectorRegistry
) -> None:
    """With ``workflow_metadata`` gone, graphs still run; the failure is counted and logged
    once, the updates wait, and they are all written once the table is back."""
    tracker = tracker_of(saver)
    target = settings.postgres_schema
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"DROP TABLE {target}.workflow_metadata")
        await conn.execute(f"DROP TABLE {target}.workflow_metadata_migrations")
    graph = review_graph(saver)
    with capture_logs() as logs:
        async with tracker.run("a"):
            await graph.ainvoke({"n": 1}, config("a"))
        assert not await tracker.flush()
        await graph.ainvoke({"n": 1, "ask": True}, config("b"))
        assert not await tracker.flush()
    failures = [entry for entry in logs if entry["event"] == "tracking_write_failed"]
    assert len(failures) == 1
    assert failures[0]["reason"] == "missing_table"
    assert tracker.pending_threads == 2
    samples = samples_of(registry.collect())
    assert (
        value(samples, "langgraph_checkpointer_tracking_errors_total", reason="missing_table") >= 2
    )
    assert value(samples, "langgraph_checkpointer_tracking_pending_threads") == 2

    # The background flusher may write the batch before the explicit flush does: the logs are
    # captured from before the table is back, so the one recovery is seen whichever flush it was.
    with capture_logs() as logs:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            assert await schema.migrate(conn, target) == len(schema.MIGRATIONS)
        assert await tracker.flush()
    assert [entry["event"] for entry in logs] == ["tracking_write_recovered"]
    rows = await tracked(dsn, settings)
    assert statuses(rows) == {"a": ("completed", None), "b": ("interrupted", None)}
    assert_matches_checkpoints(rows, await written(dsn, settings))
    assert tracker.pending_threads == 0


async def test_an_unreachable_database_keeps_a_bounded_batch(
    settings: Settings, registry: CollectorRegistry
) -> None:
    """Against a closed port, flushes fail fast as `connection` errors; pending threads stay
    bounded, the oldest dropped and counted, and observing never raises."""
    conninfo = f"host=127.0.0.1 port={refused_port()} dbname=none user=none connect_timeout=1"
    tracker = tracker_on(conninfo, settings, registry, max_pending_threads=3)
    async with tracker:
        for index in range(5):
            checkpoint = {"id": f"1f0-{index}"}
            tracker.observe("put", (config(f"t{index}"), checkpoint, {}, {}), {}, None)
        tracker.observe("put", ({"no": "configurable"}, {}, {}, {}), {}, None)
        assert not await tracker.flush()
        assert tracker.pending_threads == 3
    samples = samples_of(registry.collect())
    assert value(samples, "langgraph_checkpointer_tracking_errors_total", reason="connection") >= 1
    assert (
        value(samples, "langgraph_checkpointer_tracking_dropped_updates_total", reason="overflow")
        == 2
    )
    assert value(samples, "langgraph_checkpointer_tracking_events_total", event="checkpoint") == 5
    assert value(samples, "langgraph_checkpointer_tracking_events_total", event="unreadable") == 1


async def test_a_row_the_database_refuses_is_dropped_and_the_rest_written(
    saver: InstrumentedSaver, dsn: str, settings: Settings, registry: CollectorRegistry
) -> None:
    """A thread id PostgreSQL cannot store fails the application's save, and then only its own
    tracking row: the others in the batch are written."""
    tracker = tracker_of(saver)
    bad: RunnableConfig = {"configurable": {"thread_id": "bad\x00id", "checkpoint_ns": ""}}
    with pytest.raises(psycopg.DataError):
        await saver.aput(bad, empty_checkpoint(), {}, {})
    await review_graph(saver).ainvoke({"n": 1}, config("good"))
    assert await tracker.flush()
    assert set(await tracked(dsn, settings)) == {"good"}
    samples = samples_of(registry.collect())
    dropped = "langgraph_checkpointer_tracking_dropped_updates_total"
    assert value(samples, dropped, reason="rejected") == 1
    assert value(samples, "langgraph_checkpointer_tracking_errors_total", reason="rejected") == 1
    assert value(samples, "langgraph_checkpointer_tracking_events_total", event="failed_write") == 1


async def test_sync_invoke_on_a_worker_thread_is_tracked(
    saver: InstrumentedSaver, dsn: str, settings: Settings
) -> None:
    """LangGraph's sync ``invoke`` and the sync ``run()`` on a thread without an event loop
    feed the same tracker."""
    tracker = tracker_of(saver)
    graph = review_graph(saver)

    def work() -> None:
        with tracker.run("sync"):
            graph.invoke({"n": 1}, config("sync"))
        graph.invoke({"n": 2, "ask": True}, config("sync-asked"))

    await asyncio.to_thread(work)
    assert await tracker.flush()
    rows = await tracked(dsn, settings)
    assert statuses(rows) == {"sync": ("completed", None), "sync-asked": ("interrupted", None)}
    assert_matches_checkpoints(rows, await written(dsn, settings))


async def test_deleting_or_pruning_a_thread_updates_its_row(
    saver: InstrumentedSaver, dsn: str, settings: Settings
) -> None:
    """Deleting a thread (``adelete_thread``, ``aprune`` with ``delete``) removes its row, a
    thread run again afterwards starts afresh, and ``keep_latest`` recounts what is left."""
    tracker = tracker_of(saver)
    graph = review_graph(saver)
    for thread_id in ("gone", "back", "dropped", "pruned"):
        await graph.ainvoke({"n": 1}, config(thread_id))
    assert await tracker.flush()
    await saver.adelete_thread("gone")
    await saver.adelete_thread("back")
    await graph.ainvoke({"n": 1}, config("back"))
    await saver.aprune(["dropped"], strategy="delete")
    await saver.aprune(["pruned"])
    assert await tracker.flush()
    rows = await tracked(dsn, settings)
    assert set(rows) == {"back", "pruned"}
    checkpoints = await written(dsn, settings)
    assert checkpoints["pruned"][0] == 1
    assert_matches_checkpoints(rows, checkpoints)


async def test_metrics_count_every_event_and_flush(
    dsn: str, settings: Settings, registry: CollectorRegistry
) -> None:
    """The registry the saver metrics use counts events, flushes and rows, every label value
    present from the start."""
    # Rows are counted per flush: a background flush half-way through a run would write its
    # thread twice. With the longest interval, the explicit flush below is the only one.
    async with build_checkpointer(
        settings.replace(tracking_flush_interval=60.0), registry=registry
    ) as saver:
        await _count_every_event_and_flush(saver, dsn, settings, registry)


async def _count_every_event_and_flush(
    saver: InstrumentedSaver, dsn: str, settings: Settings, registry: CollectorRegistry
) -> None:
    samples = samples_of(registry.collect())
    for event in TRACKING_EVENTS:
        assert value(samples, "langgraph_checkpointer_tracking_events_total", event=event) == 0
    for reason in TRACKING_ERRORS:
        assert value(samples, "langgraph_checkpointer_tracking_errors_total", reason=reason) == 0
    for reason in TRACKING_DROPS:
        dropped = "langgraph_checkpointer_tracking_dropped_updates_total"
        assert value(samples, dropped, reason=reason) == 0
    tracker = tracker_of(saver)
    graph = review_graph(saver)
    async with tracker.run("a"):
        await graph.ainvoke({"n": 1, "ask": True}, config("a"))
    with pytest.raises(ValueError, match="negative"):
        await graph.ainvoke({"n": -1}, config("b"))
    assert await tracker.flush()
    checkpoints = await written(dsn, settings)
    samples = samples_of(registry.collect())

    def events(event: str) -> float:
        return value(samples, "langgraph_checkpointer_tracking_events_total", event=event)

    assert events("checkpoint") == sum(count for count, _ in checkpoints.values())
    assert (events("interrupt"), events("error"), events("mark")) == (1, 1, 0)
    assert events("run_end") == 3  # the two graph runs, and the run() block around one
    assert value(samples, "langgraph_checkpointer_tracking_rows_written_total") == 2
    flushes = value(samples, "langgraph_checkpointer_tracking_flushes_total")
    assert flushes >= 1
    assert value(samples, "langgraph_checkpointer_tracking_flush_duration_seconds_count") == flushes
    assert value(samples, "langgraph_checkpointer_tracking_pending_threads") == 0


async def test_the_background_flush_writes_without_being_asked(
    saver: InstrumentedSaver, dsn: str, settings: Settings, registry: CollectorRegistry
) -> None:
    """Within a few flush intervals the row is complete with no explicit ``flush()``."""
    await review_graph(saver).ainvoke({"n": 1}, config("t"))
    expected = (await written(dsn, settings))["t"][0]

    def written_out() -> bool:
        # Every checkpoint drained by a flush, and that flush's write done (it empties pending).
        samples = samples_of(registry.collect())
        drained = value(samples, "langgraph_checkpointer_tracking_events_total", event="checkpoint")
        pending = value(samples, "langgraph_checkpointer_tracking_pending_threads")
        return drained == expected and pending == 0

    await eventually(written_out)
    assert_matches_checkpoints(await tracked(dsn, settings), await written(dsn, settings))


async def test_closing_the_checkpointer_writes_what_is_pending(
    settings: Settings, dsn: str
) -> None:
    """Leaving ``build_checkpointer`` flushes one last time, however long the interval."""
    slow = settings.replace(tracking_flush_interval=60.0)
    async with build_checkpointer(slow, registry=CollectorRegistry()) as saver:
        await review_graph(saver).ainvoke({"n": 1}, config("t"))
        tracker_of(saver).mark_completed("t")
    assert statuses(await tracked(dsn, settings)) == {"t": ("completed", None)}


async def test_no_tracker_when_tracking_is_off_or_in_memory(
    settings: Settings, memory_settings: Settings, dsn: str
) -> None:
    """``tracking=false`` and the in-memory saver have no tracker and write no rows."""
    async with build_checkpointer(
        settings.replace(tracking=False), registry=CollectorRegistry()
    ) as saver:
        assert saver.tracker is None
        await review_graph(saver).ainvoke({"n": 1}, config("t"))
    async with build_checkpointer(memory_settings, registry=CollectorRegistry()) as saver:
        assert saver.tracker is None
    assert await tracked(dsn, settings) == {}


async def test_schema_preparation_is_idempotent(settings: Settings, dsn: str) -> None:
    """Preparing the schema twice records each of our migrations exactly once."""
    await prepare_schema(dsn, settings)
    await prepare_schema(dsn, settings)
    rows = await fetch(
        dsn, f"SELECT v FROM {settings.postgres_schema}.workflow_metadata_migrations ORDER BY v"
    )
    assert [row["v"] for row in rows] == list(range(len(schema.MIGRATIONS)))


def test_channel_names_are_langgraphs() -> None:
    """The channels the tracker watches are the ones LangGraph writes."""
    assert ERROR == langgraph_constants.ERROR
    assert INTERRUPT == langgraph_constants.INTERRUPT
